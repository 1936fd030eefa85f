//! Replay: turn a case into computed outputs, one module per `kind`.
//!
//! A case is parsed once into its typed spec ([`spec::CaseSpec`]); each kind's module then
//! exposes the same `run(&Case, &<its spec>, &ReplayOptions) -> Result<Replayed>`, reading
//! only the case's arrays. Kinds or networks whose math is not built yet answer
//! [`Error::NotImplemented`], which the harness reports as its own status, never as a pass.

use std::collections::BTreeMap;

use tch::Device;

use super::array::Array;
use super::case::Case;
use spec::Spec;
use crate::error::{Error, Result};
use crate::jvp::JvpBackend;
use crate::rng::Draw;

pub mod coefficients;
mod encoder;
mod loss;
mod network;
mod pred;
mod rng;
mod sampler;
pub mod spec;

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

/// Replays `case`: parses its spec, then runs its kind.
pub fn run(case: &Case, opts: &ReplayOptions) -> Result<Replayed> {
    let spec = spec::CaseSpec::parse(case, opts);
    spec.and_then(|spec| match &spec.body {
        Spec::Rng(s) => rng::run(case, s, opts),
        Spec::Coefficients(s) => coefficients::run(case, s, opts),
        Spec::Loss(s) => loss::run(case, s, opts),
        Spec::Pred(s) => pred::run(case, s, opts),
        Spec::Sampler(s) => sampler::run(case, s, opts),
        Spec::Network(s) => network::run(case, s, opts),
        Spec::Encoder(s) => encoder::run(case, s, opts),
    })
    .map_err(|e| match e {
        Error::Case { .. } | Error::NotImplemented(_) => e,
        other => case.error(None, other.to_string()),
    })
}
