//! Replay: turn a case into computed outputs, one module per `kind`.
//!
//! Each kind's module exposes `run(&Case, Device) -> Result<Computed>`; kinds whose
//! math is not built yet answer [`Error::NotImplemented`], which the harness
//! reports as its own status, never as a pass.

use std::collections::BTreeMap;

use tch::Device;

use super::array::Array;
use super::case::{Case, CaseKind};
use crate::error::{Error, Result};
use crate::jvp::JvpBackend;
use crate::rng::Draw;

pub mod build;
pub mod coefficients;
mod consistency;
mod encoder;
mod loss;
mod network;
mod pred;
mod rng;
mod sampler;

/// Computed outputs by file stem (`out.loss`, `grad.W1`, ...).
pub type Computed = BTreeMap<String, Array>;

/// How to replay: the device, and overrides of implementation choices that must not
/// change the result (so that every choice can be checked against the same cases).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOptions {
    /// Where tensors live.
    pub device: Device,
    /// Overrides MeanFlow's JVP backend (`None`: the case's setting or the default).
    pub jvp: Option<JvpBackend>,
}

impl ReplayOptions {
    /// Defaults on `device`.
    pub fn on(device: Device) -> Self {
        ReplayOptions { device, jvp: None }
    }
}

/// What a replay produced: the outputs by stem, and the raw draws it consumed, in order.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Computed outputs by file stem.
    pub outputs: Computed,
    /// Every tensor draw the computation made from its streams (see `Rngs::start_recording`).
    pub draws: Vec<Draw>,
}

impl From<Computed> for Replayed {
    fn from(outputs: Computed) -> Replayed {
        Replayed { outputs, draws: Vec::new() }
    }
}

/// Replays `case`.
pub fn run(case: &Case, opts: &ReplayOptions) -> Result<Replayed> {
    let device = opts.device;
    match case.kind {
        CaseKind::Rng => rng::run(case).map(Replayed::from),
        CaseKind::Coefficients => coefficients::run(case, device).map(Replayed::from),
        CaseKind::Loss | CaseKind::Grad => loss::run(case, opts),
        CaseKind::Pred => pred::run(case, device).map(Replayed::from),
        CaseKind::Sampler => sampler::run(case, device),
        CaseKind::Network => network::run(case, device).map(Replayed::from),
        CaseKind::Encoder => encoder::run(case, device).map(Replayed::from),
    }
    .map_err(|e| match e {
        Error::Case { .. } | Error::NotImplemented(_) => e,
        other => case.error(None, other.to_string()),
    })
}
