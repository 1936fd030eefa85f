//! # diffuse-spec
//!
//! The reference implementation and correctness oracle, on libtorch, for the
//! diffusion / flow-matching *interfaces* of the JAX project diffuse_nnx: SiT,
//! EDM, MeanFlow, REPA, sCT / sCD, and the samplers.
//!
//! Layout: the library below —
//! [`rng`] (JAX-exact random streams), [`networks`] (the backbone trait and
//! networks), [`encoders`] (REPA's frozen feature detectors: DINOv2 and the bicubic
//! resizes), [`interfaces`] (one file per interface), [`samplers`] (time grids and
//! one file per sampler), [`validate`] (every input check, at a chosen level),
//! [`metrics`] (sample quality: energy distance, sliced Wasserstein) — and the golden harness
//! above, [`golden`] (case reader, replay per kind, tolerances, report), which the
//! `diffuse-spec` CLI drives. A user who trains with the crate never touches `golden`.
//!
//! Conventions: SiT and MeanFlow put noise at `t = 1` and data at `t = 0`; EDM's
//! `t` is the noise level sigma; `U[a, b)` intervals are half-open; losses are per
//! example. Faithful by default: where the reference departs from the math
//! (quirks Q1..Q19, listed in `docs/reference.md`), the corrected behaviour is an explicit,
//! named option. The golden case format is `docs/format.md`.
#![deny(missing_docs)]

#[cfg(feature = "torch")]
pub mod encoders;
pub mod error;
pub mod golden;
pub mod kinds;
#[cfg(feature = "torch")]
pub mod interfaces;
#[cfg(feature = "torch")]
pub mod jvp;
#[cfg(feature = "torch")]
pub mod metrics;
#[cfg(feature = "torch")]
pub mod networks;
pub mod npy;
#[cfg(feature = "torch")]
pub mod precision;
pub mod rng;
#[cfg(feature = "torch")]
pub mod samplers;
#[cfg(feature = "torch")]
pub mod validate;

pub use error::{Error, Result};
