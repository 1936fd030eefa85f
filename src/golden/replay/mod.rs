//! Replay: turn a case into computed outputs, one module per `kind`.
//!
//! Each kind's module exposes `run(&Case, Device) -> Result<Computed>`; kinds whose
//! math is not built yet answer [`Error::NotImplemented`], which the harness
//! reports as its own status, never as a pass.

use std::collections::BTreeMap;

use tch::Device;

use super::array::Array;
use super::case::{Case, CaseKind};
use super::tolerance::Tolerance;
use crate::error::{Error, Result};
use crate::jvp::JvpBackend;

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

/// Replays `case`.
pub fn run(case: &Case, opts: &ReplayOptions) -> Result<Computed> {
    let device = opts.device;
    match case.kind {
        CaseKind::Rng => rng::run(case),
        CaseKind::Coefficients => coefficients::run(case, device),
        CaseKind::Loss | CaseKind::Grad => loss::run(case, opts),
        CaseKind::Pred => pred::run(case, device),
        CaseKind::Sampler => sampler::run(case, device),
        CaseKind::Network => network::run(case, device),
        CaseKind::Encoder => encoder::run(case, device),
    }
    .map_err(|e| match e {
        Error::Case { .. } | Error::NotImplemented(_) => e,
        other => case.error(None, other.to_string()),
    })
}

/// Whether a computed output must have an expected file in the case. Every output is
/// required except the loss intermediates that cases with a DiT backbone leave out
/// (golden-format.md: "Cases with a `dit` network carry only `out.loss` and `grad.*`").
pub fn required(stem: &str) -> bool {
    !matches!(stem, "out.t" | "out.r" | "out.n" | "out.x_t" | "out.target" | "out.net_out")
}

/// The interface type named in a case (`sit`, `edm`, `mean_flow`), if any.
pub fn interface_type(meta: &serde_json::Map<String, serde_json::Value>) -> Option<&str> {
    meta.get("interface")?.get("type")?.as_str()
}

/// Whether `stem` is a gradient that is zero in exact arithmetic: the attention key bias
/// (`grad.blocks.<i>.attn.key.bias`), since `softmax(q (k + b)^T) = softmax(q k^T + q b^T)`
/// and `q b^T` is constant along the softmax axis.
fn is_zero_gradient(stem: &str) -> bool {
    stem.starts_with("grad.") && stem.ends_with(".attn.key.bias")
}

/// The tolerance for quantity `stem` of a case, shared by `check` and `verify`.
///
/// | kind | quantity | tolerance | why |
/// |---|---|---|---|
/// | rng | all | exact | the streams are reproduced bit for bit |
/// | coefficients | all | 4 ulp (element-wise) | one to three roundings per element |
/// | loss, grad | `out.t`, `out.r`, `out.n`, `out.x_t` | 4 ulp of element or scale | element-wise; XLA may fuse an FMA |
/// | loss, grad | others (`loss`, `target`, `net_out`, `grad.*`, REPA parts) | rtol 1e-5, atol 1e-6 x scale | sums over the network |
/// | loss, grad (MeanFlow, sCT, sCD) | `target`, `net_out`, `loss`, `grad.*` | rtol 1e-4, atol 1e-5 x scale | JVP-based |
/// | loss, grad | `grad.*attn.key.bias` | as the other gradients, atol x the *case's* gradient scale | zero in exact arithmetic (softmax ignores a shift common to all keys): only rounding noise, judged against the largest gradient of the case, not its own |
/// | pred | `pred`, `score` | rtol 1e-5, atol 1e-6 x scale | one network forward |
/// | pred (sCT, sCD) | `pred` | rtol 1e-5, atol 1e-6 x scale | one forward, as above (no score: refused) |
/// | sampler | `timegrid` | 4 ulp | element-wise |
/// | sampler | `x_final` | rtol 1e-5, atol 1e-6 x scale | integrates many forwards |
/// | network | all | rtol 1e-5, atol 1e-6 x scale | sums over the network |
/// | encoder | `pixels` | 16 ulp of element or scale | a 4-tap resize per axis, reproduced bit for bit at 256 and within 2 ulp at 512 / 768 (measured); XLA's codegen (FMA or not, blocked sums) spans 14 ulp of scale, any other resize is 1e-4 (float64 positions) or 1e-3 to 1e-1 of scale (torch's) away |
/// | encoder | `features` | rtol 1e-5, atol 4e-6 x scale | a ViT of 1-4 layers: measured up to 7.6e-7 x scale (7-11 % of elements bit-equal), 4e-6 leaves room for other BLAS blockings; torch's pipeline is 5e-2 x scale away |
pub fn tolerance_for(kind: CaseKind, meta: &serde_json::Map<String, serde_json::Value>, stem: &str) -> Tolerance {
    let meanflow = interface_type(meta) == Some("mean_flow");
    let jvp_based = matches!(interface_type(meta), Some("mean_flow" | "sct" | "scd"));
    match kind {
        CaseKind::Rng => Tolerance::EXACT,
        CaseKind::Coefficients => Tolerance::elementwise(4),
        CaseKind::Loss | CaseKind::Grad => match stem {
            "out.t" | "out.r" | "out.n" | "out.x_t" => Tolerance::elementwise(4),
            _ if is_zero_gradient(stem) && jvp_based => Tolerance::close(1e-4, 1e-5).against_case_gradients(),
            _ if is_zero_gradient(stem) => Tolerance::close(1e-5, 1e-6).against_case_gradients(),
            _ if jvp_based => Tolerance::close(1e-4, 1e-5),
            _ => Tolerance::close(1e-5, 1e-6),
        },
        CaseKind::Pred if meanflow => Tolerance::close(1e-4, 1e-5),
        CaseKind::Pred => Tolerance::close(1e-5, 1e-6),
        CaseKind::Sampler => match stem {
            "out.timegrid" => Tolerance::elementwise(4),
            _ if meanflow => Tolerance::close(1e-4, 1e-5),
            _ => Tolerance::close(1e-5, 1e-6),
        },
        CaseKind::Network => Tolerance::close(1e-5, 1e-6),
        CaseKind::Encoder => match stem {
            "out.pixels" => Tolerance::elementwise(16),
            _ => Tolerance::close(1e-5, 4e-6),
        },
    }
}
