//! Interfaces: the math between a backbone and a stochastic process.
//!
//! Each interface owns time and noise sampling from named random streams, the
//! preconditioning `c_in / c_out / c_skip / c_noise`, the noisy state `x_t`, the
//! regression target, `pred`, `score` and the per-example loss. One file per
//! interface; the shared trait, enums and helpers live here.
//!
//! Conventions (as in the reference; `docs/reference.md` has every formula):
//! - SiT and MeanFlow: the linear path `x_t = (1 - t) x + t n`, noise at `t = 1`, data at `t = 0`.
//! - EDM: `t` *is* the noise level sigma, `x_t = x + t n`.
//! - sCT / sCD: TrigFlow, `x_t = cos(t) x + sin(t) sigma_d n`, `t` in `[0, pi/2]` (see
//!   [`trigflow`] for the maps to the EDM and SiT conventions).
//! - `U[0, 1)` is half-open; losses are per example (the trainer takes their mean).
//!
//! Wrappers: [`Repa`] adds REPA's representation-alignment loss to any interface.

mod edm;
mod meanflow;
mod repa;
mod scd;
mod sct;
mod sit;
pub mod trigflow;

pub use edm::{Edm, EdmConfig, EdmScore};
pub use meanflow::{CondDrop, MeanFlow, MeanFlowConfig, MeanFlowScore, NULL_LABEL};
pub use repa::{Projector, Repa, RepaConfig, RepaLossOutput, PROJECTOR_PREFIX};
pub use scd::{Scd, ScdConfig, Teacher, TeacherConvention};
pub use sct::{default_t_max, sample_multistep, sample_one_step, LogVarHead, Sct, SctConfig, T_MAX, TWO_STEP_T_MID};
pub use sit::{SiT, SiTConfig};

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::networks::Backbone;
use crate::rng::Rngs;

/// The training time distribution (`train_time_dist_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeDist {
    /// `t ~ U[0, 1)` from the `time` stream.
    Uniform,
    /// `t = exp(N * t_sigma + t_mu)`, `N ~ N(0, 1)` from the `time` stream.
    #[serde(rename = "lognormal")]
    LogNormal,
    /// `t = sigmoid(N * t_sigma + t_mu)`, `N ~ N(0, 1)` from the `time` stream.
    #[serde(rename = "logitnormal")]
    LogitNormal,
}

impl TimeDist {
    /// Parses `uniform`, `lognormal` or `logitnormal`.
    pub fn parse(s: &str) -> Result<TimeDist> {
        match s {
            "uniform" => Ok(TimeDist::Uniform),
            "lognormal" => Ok(TimeDist::LogNormal),
            "logitnormal" => Ok(TimeDist::LogitNormal),
            _ => Err(Error::Unknown { what: "time distribution".into(), name: s.into(), known: "uniform, lognormal, logitnormal".into() }),
        }
    }

    /// Draws `[batch]` times from the `time` stream (reference `sample_t`).
    pub fn sample(self, batch: i64, t_mu: f64, t_sigma: f64, rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        check_batch(batch)?;
        Ok(match self {
            TimeDist::Uniform => rngs.uniform("time", &[batch], 0.0, 1.0, device)?,
            TimeDist::LogNormal => rngs.normal("time", &[batch], device)?.f_mul_scalar(t_sigma)?.f_add_scalar(t_mu)?.f_exp()?,
            TimeDist::LogitNormal => rngs.normal("time", &[batch], device)?.f_mul_scalar(t_sigma)?.f_add_scalar(t_mu)?.f_sigmoid()?,
        })
    }
}

/// Everything one loss call computed: the per-example loss and the intermediates
/// that golden cases record and wrappers such as REPA need.
#[derive(Debug)]
pub struct LossOutput {
    /// Per-example loss `[B]`.
    pub loss: Tensor,
    /// The times used (after any shift) `[B]`.
    pub t: Tensor,
    /// MeanFlow's `r` `[B]`; `None` for other interfaces.
    pub r: Option<Tensor>,
    /// The noise `n`, shaped like `x`.
    pub n: Tensor,
    /// The noisy state `x_t`.
    pub x_t: Tensor,
    /// The regression target (SiT: `n - x`; EDM: `x`; MeanFlow: the stop-gradient JVP target).
    pub target: Tensor,
    /// The network-side prediction compared with the target (SiT/MeanFlow: `u`; EDM: the denoised `D`).
    pub net_out: Tensor,
    /// The backbone's per-block features from the loss forward.
    pub features: Vec<Tensor>,
}

/// What every interface provides.
///
/// `pred` and `score` take an optional `r` (MeanFlow's interval start); interfaces
/// without one refuse a `Some`.
pub trait Interface {
    /// The reference's name of the interface (`sit`, `edm`, `mean_flow`, ...).
    fn name(&self) -> &'static str;
    /// Input scaling `c_in(t)`.
    fn c_in(&self, t: &Tensor) -> Result<Tensor>;
    /// Output scaling `c_out(t)`.
    fn c_out(&self, t: &Tensor) -> Result<Tensor>;
    /// Skip scaling `c_skip(t)`.
    fn c_skip(&self, t: &Tensor) -> Result<Tensor>;
    /// The time fed to the network, `c_noise(t)`.
    fn c_noise(&self, t: &Tensor) -> Result<Tensor>;
    /// Draws `[batch]` training times from the `time` stream (no shift applied).
    fn sample_t(&self, batch: i64, rngs: &mut Rngs, device: Device) -> Result<Tensor>;
    /// Draws noise of `shape` from the `noise` stream: `N * n_sigma + n_mu`.
    fn sample_n(&self, shape: &[i64], rngs: &mut Rngs, device: Device) -> Result<Tensor>;
    /// The noisy state at `t` (`[B]`, broadcast to the right).
    fn sample_x_t(&self, x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor>;
    /// The regression target.
    fn target(&self, x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor>;
    /// The prediction the samplers integrate (a velocity for SiT / MeanFlow, `(x_t - D) / t` for EDM).
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, r: Option<&Tensor>, y: Option<&Tensor>) -> Result<Tensor>;
    /// The score the reference computes from `pred` (see each interface for its quirks).
    fn score(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, r: Option<&Tensor>, y: Option<&Tensor>) -> Result<Tensor>;
    /// The per-example loss on data `x` (`[B, ...]`), with labels `y` (`[B]`) or the null class.
    fn loss(&self, net: &dyn Backbone, x: &Tensor, y: Option<&Tensor>, rngs: &mut Rngs) -> Result<LossOutput>;
    /// Trainable parameters the interface itself owns, by path (sCT / sCD: the log-variance
    /// head, `logvar.W`, `logvar.b`); none by default. An optimizer updates them with the
    /// backbone's, and a `grad` case carries `grad.<path>` for them.
    fn parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// Reshapes a `[B]` vector to `[B, 1, ..., 1]` with `ndim` axes in all (reference `bcast_right`).
pub fn bcast_right(v: &Tensor, ndim: usize) -> Result<Tensor> {
    let s = v.size();
    if s.len() != 1 {
        return Err(Error::invalid("v", "a [B] vector", format!("shape {s:?}")));
    }
    if ndim < 1 {
        return Err(Error::invalid("ndim", "at least 1", ndim));
    }
    let mut shape = vec![s[0]];
    shape.extend(std::iter::repeat_n(1, ndim - 1));
    Ok(v.f_reshape(&shape)?)
}

/// The mean over every axis but the first (reference `mean_flat`).
pub fn mean_flat(x: &Tensor) -> Result<Tensor> {
    let nd = x.dim() as i64;
    if nd <= 1 {
        return Ok(x.shallow_clone());
    }
    let dims: Vec<i64> = (1..nd).collect();
    Ok(x.f_mean_dim(&dims[..], false, Kind::Float)?)
}

/// The sum over every axis but the first, accumulated and returned in float32.
pub fn sum_flat(x: &Tensor) -> Result<Tensor> {
    sum_flat_as(x, Kind::Float)
}

/// The sum over every axis but the first, in `kind` (a `[B]` input is returned as is).
pub(crate) fn sum_flat_as(x: &Tensor, kind: Kind) -> Result<Tensor> {
    let nd = x.dim() as i64;
    if nd <= 1 {
        return Ok(x.shallow_clone());
    }
    let dims: Vec<i64> = (1..nd).collect();
    Ok(x.f_sum_dim_intlist(&dims[..], false, kind)?)
}

/// The resolution time shift `t_shift(t, s) = s t / (1 + (s - 1) t)` (SD3, Esser et al. 2024, eq. 23).
///
/// Monotone on `[0, 1]`, fixes 0 and 1, and `t_shift(t_shift(t, s), 1/s) = t`.
pub fn t_shift(t: &Tensor, s: f64) -> Result<Tensor> {
    if !(s.is_finite() && s > 0.0) {
        return Err(Error::invalid("s", "a finite shift > 0", s));
    }
    Ok(t.f_mul_scalar(s)?.f_div(&t.f_mul_scalar(s - 1.0)?.f_add_scalar(1.0)?)?)
}

/// Noise of `shape` from the `noise` stream: `N * n_sigma + n_mu` (every interface's
/// `sample_n`).
pub fn sample_noise(shape: &[i64], n_mu: f64, n_sigma: f64, rngs: &mut Rngs, device: Device) -> Result<Tensor> {
    Ok(rngs.normal("noise", shape, device)?.f_mul_scalar(n_sigma)?.f_add_scalar(n_mu)?)
}

/// The linear path `x_t = (1 - t) x + t n` (SiT and MeanFlow; noise at `t = 1`).
pub fn linear_path(x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor> {
    let tb = bcast_right(t, x.dim())?;
    Ok(tb.f_neg()?.f_add_scalar(1.0)?.f_mul(x)?.f_add(&tb.f_mul(n)?)?)
}

/// Errors unless `batch >= 1`.
pub fn check_batch(batch: i64) -> Result<()> {
    if batch < 1 {
        return Err(Error::invalid("batch", "at least 1 example", batch));
    }
    Ok(())
}

/// Validates data `x` (`[B, ...]`, float32, finite) and optional labels `y` (`[B]`, integer,
/// within `0..=1000`); returns `B`.
pub fn check_data(x: &Tensor, y: Option<&Tensor>) -> Result<i64> {
    let s = x.size();
    if s.len() < 2 {
        return Err(Error::invalid("x", "shape [B, ...] with at least 2 axes", format!("{s:?}")));
    }
    let b = s[0];
    check_batch(b)?;
    if x.kind() != Kind::Float {
        return Err(Error::invalid("x", "dtype float32", format!("{:?}", x.kind())));
    }
    check_finite("x", x)?;
    if let Some(y) = y {
        if y.size() != [b] {
            return Err(Error::invalid("y", format!("shape [{b}]"), format!("{:?}", y.size())));
        }
        if !matches!(y.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8) {
            return Err(Error::invalid("y", "integer class labels", format!("{:?}", y.kind())));
        }
        if y.device() != x.device() {
            return Err(Error::invalid("y", format!("device {:?} (that of x)", x.device()), format!("{:?}", y.device())));
        }
    }
    Ok(b)
}

/// Errors unless every element of `v` is finite.
///
/// For float32 / float64 this reads back the tensor's minimum and maximum (one reduction
/// pass, one host read; NaN propagates through both, and every element is finite exactly
/// when both are), about 20 times cheaper on CPU than materialising `isfinite(v)`.
pub fn check_finite(name: &str, v: &Tensor) -> Result<()> {
    let ok = if v.numel() > 0 && matches!(v.kind(), Kind::Float | Kind::Double) {
        let (lo, hi) = min_max(v)?;
        lo.is_finite() && hi.is_finite()
    } else {
        v.f_isfinite()?.f_all()?.f_int64_value(&[])? != 0
    };
    if !ok {
        return Err(Error::invalid(name, "finite values", "NaN or infinity"));
    }
    Ok(())
}

/// The minimum and maximum of a non-empty float tensor in one reduction (NaN if any element
/// is NaN), read back with one device-to-host copy off the CPU.
fn min_max(v: &Tensor) -> Result<(f64, f64)> {
    let (lo, hi) = v.f_aminmax(None, false)?;
    if v.device() == Device::Cpu {
        return Ok((lo.f_double_value(&[])?, hi.f_double_value(&[])?));
    }
    let mm = Vec::<f64>::try_from(&Tensor::f_stack(&[lo, hi], 0)?.f_to_kind(Kind::Double)?)?;
    Ok((mm[0], mm[1]))
}

/// Errors unless `t` is a `[B]` float vector of finite values that lie in `(lo, hi]` (or
/// `[lo, hi]` with `closed_lo`), naming `why` in the message.
pub fn check_time(t: &Tensor, b: i64, lo: f64, hi: f64, closed_lo: bool, why: &str) -> Result<()> {
    check_times("t", t, b, lo, hi, closed_lo, why)
}

/// [`check_time`] for a time-like argument of another name (MeanFlow's `r`, a sampler's grid).
pub fn check_times(name: &str, t: &Tensor, b: i64, lo: f64, hi: f64, closed_lo: bool, why: &str) -> Result<()> {
    if t.size() != [b] {
        return Err(Error::invalid(name, format!("shape [{b}]"), format!("{:?}", t.size())));
    }
    if !t.is_floating_point() {
        return Err(Error::invalid(name, "a float tensor", format!("dtype {:?}", t.kind())));
    }
    // One reduction and one read-back gives both bounds; NaN or infinity shows in them.
    let (min, max) = if t.numel() > 0 { min_max(t)? } else { (0.0, 0.0) };
    if !(min.is_finite() && max.is_finite()) {
        return Err(Error::invalid(name, "finite values", "NaN or infinity"));
    }
    // A bound is checked up to float32 rounding (4 ulp of the bound): the shifted time grid
    // of a sampler can land one ulp above 1, which the reference accepts.
    let slack = |b: f64| if b.is_finite() { 4.0 * f32::EPSILON as f64 * b.abs().max(1.0) } else { 0.0 };
    let lo_ok = if closed_lo { min >= lo - slack(lo) } else { min > lo };
    if !(lo_ok && max <= hi + slack(hi)) {
        let range = format!("{}{lo}, {hi}] ({why})", if closed_lo { "[" } else { "(" });
        return Err(Error::invalid(name, format!("values in {range}"), format!("values in [{min}, {max}]")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_finite_finds_nan_and_infinities_of_any_kind() {
        let x = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        assert!(check_finite("x", &x).is_ok());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let _ = x.get(1).get(2).fill_(bad);
            assert!(check_finite("x", &x).unwrap_err().to_string().contains("NaN or infinity"));
            assert!(check_finite("x", &x.to_kind(Kind::Double)).is_err());
        }
        let _ = x.get(1).get(2).fill_(3e38);
        assert!(check_finite("x", &x).is_ok());
        assert!(check_finite("x", &Tensor::zeros([0], (Kind::Float, Device::Cpu))).is_ok());
        assert!(check_finite("x", &Tensor::ones([2], (Kind::Int64, Device::Cpu))).is_ok());
        assert!(check_finite("x", &Tensor::from_slice(&[1.0f32, f32::NAN]).to_kind(Kind::Half)).is_err());
    }

    #[test]
    fn check_time_reads_the_range() {
        let t = Tensor::from_slice(&[0.0f32, 0.5, 1.0]);
        assert!(check_time(&t, 3, 0.0, 1.0, true, "").is_ok());
        assert!(check_time(&t, 3, 0.0, 1.0, false, "").unwrap_err().to_string().contains("values in [0, 1]"));
        assert!(check_time(&Tensor::from_slice(&[0.5f32, f32::NAN]), 2, 0.0, 1.0, true, "").is_err());
        assert!(check_time(&Tensor::from_slice(&[0.5f32, 1.5]), 2, 0.0, 1.0, true, "why").unwrap_err().to_string().contains("why"));
        assert!(check_time(&Tensor::from_slice(&[0i64, 1]), 2, 0.0, 1.0, true, "").unwrap_err().to_string().contains("a float tensor"));
        assert!(check_time(&t, 2, 0.0, 1.0, true, "").is_err());
    }
}
