//! # diffuse-spec
//!
//! The reference implementation and correctness oracle, on libtorch, for the
//! diffusion / flow-matching *interfaces* of the JAX project diffuse_nnx: SiT,
//! EDM, MeanFlow, REPA, sCT / sCD, and the samplers.
//!
//! Layout (see `../shared/architecture.md`): the library below —
//! [`rng`] (JAX-exact random streams), [`networks`] (the backbone trait and
//! networks), [`interfaces`] (one file per interface), [`samplers`] (time grids and
//! one file per sampler), [`validate`] (every input check, at a chosen level),
//! [`metrics`] (sample quality: energy distance, sliced Wasserstein) — and the golden harness
//! above, [`golden`] (case reader, replay per kind, tolerances, report), which the
//! `diffuse-spec` CLI drives. A user who trains with the crate never touches `golden`.
//!
//! Conventions: SiT and MeanFlow put noise at `t = 1` and data at `t = 0`; EDM's
//! `t` is the noise level sigma; `U[a, b)` intervals are half-open; losses are per
//! example. Faithful by default: where the reference departs from the math
//! (quirks Q1..Q14 of the reference notes), the corrected behaviour is an explicit,
//! named option.
#![deny(missing_docs)]

pub mod error;
pub mod golden;
pub mod interfaces;
pub mod jvp;
pub mod metrics;
pub mod networks;
pub mod npy;
pub mod precision;
pub mod rng;
pub mod samplers;
pub mod validate;

pub use error::{Error, Result};
