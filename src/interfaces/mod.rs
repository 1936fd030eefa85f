//! Interfaces: the math between a backbone and a stochastic process.
//!
//! Each interface owns time and noise sampling from named random streams, the noisy state
//! `x_t`, the regression target, the per-example loss and the prediction the samplers
//! integrate. One file per interface; the shared traits, enums and helpers live here.
//!
//! The traits are narrow, and each capability is a trait of its own, so that asking an
//! interface for what it does not have is a compile error:
//!
//! - [`Interface`]: what every interface has: `name`, the per-example `loss`, the
//!   instantaneous prediction `pred` (what Euler and Heun integrate), its own trainable
//!   `parameters`, and `on_step`, a per-training-step hook (no-op by default; sCT's tangent
//!   warm-up uses it).
//! - [`Preconditioning`]: `c_in / c_out / c_skip / c_noise` (every interface of the crate).
//! - [`Score`]: the score the reference computes (SiT, EDM, MeanFlow; not sCT / sCD, which
//!   have none): what Euler-Maruyama needs.
//! - [`AverageVelocity`]: MeanFlow's `u(x_t, t, r)`: what Euler-jump needs.
//!
//! The reference's other methods (`sample_t`, `sample_n`, `sample_x_t`, `target`, and
//! MeanFlow's `sample_t_r`, `insta_velocity`, `cond_drop`) are inherent methods of each
//! interface with the reference's names and arguments. [`AnyInterface`] holds any of the
//! crate's interfaces where the kind is only known at run time (a config file, a table of
//! experiments) and answers which capabilities it has.
//!
//! Settings: every config embeds [`BaseConfig`] (the reference's base settings and the
//! validation level) and is read from one flat object with the reference's names; an unknown
//! key is an error naming it.
//!
//! Conventions (as in the reference; `docs/reference.md` has every formula):
//! - SiT and MeanFlow: the linear path `x_t = (1 - t) x + t n`, noise at `t = 1`, data at `t = 0`.
//! - EDM: `t` *is* the noise level sigma, `x_t = x + t n`.
//! - sCT / sCD: TrigFlow, `x_t = cos(t) x + sin(t) sigma_d n`, `t` in `[0, pi/2]` (see
//!   [`trigflow`] for the maps to the EDM and SiT conventions).
//! - `U[0, 1)` is half-open; losses are per example (the trainer takes their mean).
//! - The loss runs the network in train mode (the interface chooses the mode of each of its
//!   forwards, as the reference switches it); `pred`, `score` and `u` run it in eval mode.
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
pub use meanflow::{CondDrop, MeanFlow, MeanFlowConfig, MeanFlowScore, MeanFlowTarget, NULL_LABEL};
pub use repa::{Projector, Repa, RepaConfig, RepaLossOutput, PROJECTOR_PREFIX};
pub use scd::{Scd, ScdConfig, Teacher, TeacherConvention};
pub use sct::{default_t_max, sample_multistep, sample_one_step, LogVarHead, Sct, SctConfig, T_MAX, TWO_STEP_T_MID};
pub use sit::{SiT, SiTConfig};
pub use crate::validate::{check_data, check_finite, check_time, check_times};

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;
use serde_json::{Map, Value};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::networks::{Backbone, Cond};
use crate::rng::Rngs;
use crate::validate::{self, Validation};

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
        validate::batch(batch)?;
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

/// A time argument: one value for every example (the reference's float `t`) or one per
/// example (`[B]`). A scalar is checked on the host, without reading from the device.
#[derive(Debug, Clone, Copy)]
pub enum Time<'a> {
    /// The same time for every example.
    Scalar(f64),
    /// A time per example, `[B]`, float, on the device of the data.
    Batch(&'a Tensor),
}

impl From<f64> for Time<'_> {
    fn from(t: f64) -> Self {
        Time::Scalar(t)
    }
}

impl From<f32> for Time<'_> {
    fn from(t: f32) -> Self {
        Time::Scalar(t as f64)
    }
}

impl<'a> From<&'a Tensor> for Time<'a> {
    fn from(t: &'a Tensor) -> Self {
        Time::Batch(t)
    }
}

/// What every interface provides.
///
/// `cond` carries the labels (`cond.y`; `None` is the null class) and whatever else the
/// caller passes the network (the reference's `*args, **kwargs`: a guidance weight, named
/// extra inputs), which the interface passes through to every forward. A `dt` is MeanFlow's
/// own (it refuses one from the caller).
pub trait Interface {
    /// The reference's name of the interface (`sit`, `edm`, `mean_flow`, ...).
    fn name(&self) -> &'static str;
    /// The per-example loss on data `x` (`[B, ...]`); the network runs in train mode and draws
    /// from `rngs` after the interface's own draws.
    fn loss(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs) -> Result<LossOutput>;
    /// The instantaneous prediction the samplers integrate at time `t` (a velocity for SiT and
    /// MeanFlow, `(x_t - D) / t` for EDM, the consistency function for sCT / sCD); the network
    /// runs in eval mode.
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor>;
    /// Trainable parameters the interface itself owns, by path (sCT / sCD: the log-variance
    /// head, `logvar.W`, `logvar.b`); none by default. An optimizer updates them with the
    /// backbone's, and a `grad` case carries `grad.<path>` for them.
    fn parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    /// Called by the training loop with the step about to be taken (0, 1, ...), for
    /// interfaces whose loss follows a schedule (sCT / sCD's tangent warm-up); a no-op by
    /// default.
    fn on_step(&mut self, step: u64) {
        let _ = step;
    }
}

/// The preconditioning of an interface: the network sees `c_in(t) x_t` at time `c_noise(t)`,
/// and the model is `c_skip(t) x_t + c_out(t) F` (Karras et al. 2022, Table 1).
pub trait Preconditioning {
    /// Input scaling `c_in(t)`.
    fn c_in(&self, t: &Tensor) -> Result<Tensor>;
    /// Output scaling `c_out(t)`.
    fn c_out(&self, t: &Tensor) -> Result<Tensor>;
    /// Skip scaling `c_skip(t)`.
    fn c_skip(&self, t: &Tensor) -> Result<Tensor>;
    /// The time fed to the network, `c_noise(t)`.
    fn c_noise(&self, t: &Tensor) -> Result<Tensor>;
}

/// An interface with a score (what Euler-Maruyama's drift `pred - w/2 score` needs).
pub trait Score: Interface {
    /// The score the reference computes from `pred` (see each interface for its quirks); the
    /// network runs in eval mode.
    fn score(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor>;
}

/// An average-velocity model (MeanFlow): `u(x_t, t, r)` estimates the average velocity over
/// `[r, t]`, so that `x_r = x_t + (r - t) u` (what Euler-jump takes). `u(x_t, t, t)` is the
/// instantaneous velocity, the interface's `pred`.
pub trait AverageVelocity: Interface {
    /// `u(x_t, t, r)`, `0 <= r <= t <= 1`; the network runs in eval mode.
    fn average_velocity(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, r: Time<'_>, cond: Cond<'_>) -> Result<Tensor>;
}

// ------------------------------------------------------------------------------------------
// Settings
// ------------------------------------------------------------------------------------------

/// The settings every interface has (the reference's base `Interface` arguments), embedded
/// by every interface's config, plus the validation level of its inputs.
///
/// Configs are read from one flat object (`{"t_mu": 0.1, "guidance_scale": 2.0, ...}`):
/// the base keys are accepted by every config, and a key no part of a config reads is an
/// error naming it.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseConfig {
    /// The training time distribution (`uniform`, `lognormal`, `logitnormal`).
    pub train_time_dist_type: TimeDist,
    /// Mean of the normal behind log-/logit-normal times.
    pub t_mu: f64,
    /// Standard deviation of the normal behind log-/logit-normal times.
    pub t_sigma: f64,
    /// Noise mean.
    pub n_mu: f64,
    /// Noise standard deviation.
    pub n_sigma: f64,
    /// Data standard deviation (EDM's `sigma_data`, TrigFlow's `sigma_d`; unused by SiT's math).
    pub x_sigma: f64,
    /// How much the interface checks its inputs (not a reference setting; see
    /// [`crate::validate`]): `full` (the default) or `cheap` (no device-to-host reads).
    pub validation: Validation,
}

impl Default for BaseConfig {
    /// The reference's defaults: `uniform`, `t_mu 0, t_sigma 1, n_mu 0, n_sigma 1, x_sigma 0.5`.
    fn default() -> Self {
        BaseConfig { train_time_dist_type: TimeDist::Uniform, t_mu: 0.0, t_sigma: 1.0, n_mu: 0.0, n_sigma: 1.0, x_sigma: 0.5, validation: Validation::Full }
    }
}

impl BaseConfig {
    /// The keys of the base settings.
    pub const KEYS: [&'static str; 7] = ["train_time_dist_type", "t_mu", "t_sigma", "n_mu", "n_sigma", "x_sigma", "validation"];

    /// sCT / sCD's defaults (Lu & Song 2024, CIFAR-10 sCT): `lognormal` with `P_mean = -1.0`,
    /// `P_std = 1.4`, `sigma_d = 0.5`, unit noise.
    pub fn sct() -> BaseConfig {
        BaseConfig { train_time_dist_type: TimeDist::LogNormal, t_mu: -1.0, t_sigma: 1.4, ..BaseConfig::default() }
    }

    /// Draws `[batch]` training times from the `time` stream (reference `sample_t`, no shift).
    pub fn sample_t(&self, batch: i64, rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.train_time_dist_type.sample(batch, self.t_mu, self.t_sigma, rngs, device)
    }

    /// Draws noise of `shape` from the `noise` stream: `N * n_sigma + n_mu` (reference `sample_n`).
    pub fn sample_n(&self, shape: &[i64], rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        sample_noise(shape, self.n_mu, self.n_sigma, rngs, device)
    }

    /// Sigmas positive and finite, means finite, and each of `others` finite.
    pub(crate) fn validate(&self, others: &[(&str, f64)]) -> Result<()> {
        for (name, v) in [("t_sigma", self.t_sigma), ("n_sigma", self.n_sigma), ("x_sigma", self.x_sigma)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(name, "a finite value > 0", v));
            }
        }
        for &(name, v) in [("t_mu", self.t_mu), ("n_mu", self.n_mu)].iter().chain(others) {
            if !v.is_finite() {
                return Err(Error::invalid(name, "a finite value", v));
            }
        }
        Ok(())
    }

    pub(crate) fn read(&mut self, f: &mut Fields) -> std::result::Result<(), String> {
        f.take("train_time_dist_type", &mut self.train_time_dist_type)?;
        f.take("t_mu", &mut self.t_mu)?;
        f.take("t_sigma", &mut self.t_sigma)?;
        f.take("n_mu", &mut self.n_mu)?;
        f.take("n_sigma", &mut self.n_sigma)?;
        f.take("x_sigma", &mut self.x_sigma)?;
        f.take("validation", &mut self.validation)
    }
}

impl<'de> Deserialize<'de> for BaseConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        flat_settings(d, BaseConfig::default(), |c, f| c.read(f))
    }
}

/// A flat settings object read field by field: each part of a config takes its own keys
/// ([`Fields::take`]); what no part took is an unknown key.
///
/// (serde's `flatten` cannot be combined with `deny_unknown_fields`, and would give every
/// embedded part the defaults of its own type rather than those of the config; hence this.)
#[derive(Debug)]
pub(crate) struct Fields {
    map: Map<String, Value>,
    known: Vec<&'static str>,
}

impl Fields {
    /// Sets `slot` from `key` when the object has it (the default stays otherwise).
    pub(crate) fn take<T: DeserializeOwned>(&mut self, key: &'static str, slot: &mut T) -> std::result::Result<(), String> {
        self.known.push(key);
        if let Some(v) = self.map.remove(key) {
            *slot = serde_json::from_value(v).map_err(|e| format!("field `{key}`: {e}"))?;
        }
        Ok(())
    }
}

/// Reads a config from a flat object: starts from `defaults`, lets `read` take its keys, and
/// refuses a key nothing took with `unknown field `<key>`, expected one of ...`.
pub(crate) fn flat_settings<'de, D, T>(d: D, defaults: T, read: impl FnOnce(&mut T, &mut Fields) -> std::result::Result<(), String>) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let map = Map::<String, Value>::deserialize(d)?;
    let mut f = Fields { map, known: Vec::new() };
    let mut cfg = defaults;
    read(&mut cfg, &mut f).map_err(D::Error::custom)?;
    if let Some(k) = f.map.keys().next() {
        let known: Vec<String> = f.known.iter().map(|k| format!("`{k}`")).collect();
        return Err(D::Error::custom(format!("unknown field `{k}`, expected one of {}", known.join(", "))));
    }
    Ok(cfg)
}

// ------------------------------------------------------------------------------------------
// Any interface
// ------------------------------------------------------------------------------------------

/// Any interface of the crate, for code that learns the kind at run time (a config file, a
/// table of experiments): it is an [`Interface`] itself and says which capabilities it has.
#[derive(Debug)]
pub enum AnyInterface {
    /// See [`SiT`].
    SiT(SiT),
    /// See [`Edm`].
    Edm(Edm),
    /// See [`MeanFlow`].
    MeanFlow(MeanFlow),
    /// See [`Sct`].
    Sct(Sct),
    /// See [`Scd`].
    Scd(Scd),
}

impl AnyInterface {
    /// The interface behind the enum.
    pub fn interface(&self) -> &(dyn Interface + 'static) {
        match self {
            AnyInterface::SiT(i) => i,
            AnyInterface::Edm(i) => i,
            AnyInterface::MeanFlow(i) => i,
            AnyInterface::Sct(i) => i,
            AnyInterface::Scd(i) => i,
        }
    }

    /// The interface behind the enum, mutably (for [`Interface::on_step`]).
    pub fn interface_mut(&mut self) -> &mut (dyn Interface + 'static) {
        match self {
            AnyInterface::SiT(i) => i,
            AnyInterface::Edm(i) => i,
            AnyInterface::MeanFlow(i) => i,
            AnyInterface::Sct(i) => i,
            AnyInterface::Scd(i) => i,
        }
    }

    /// Its preconditioning (every interface of the crate has one).
    pub fn as_preconditioning(&self) -> &(dyn Preconditioning + 'static) {
        match self {
            AnyInterface::SiT(i) => i,
            AnyInterface::Edm(i) => i,
            AnyInterface::MeanFlow(i) => i,
            AnyInterface::Sct(i) => i,
            AnyInterface::Scd(i) => i,
        }
    }

    /// Its score, if it has one (SiT, EDM, MeanFlow; not sCT / sCD).
    pub fn as_score(&self) -> Option<&(dyn Score + 'static)> {
        match self {
            AnyInterface::SiT(i) => Some(i),
            AnyInterface::Edm(i) => Some(i),
            AnyInterface::MeanFlow(i) => Some(i),
            AnyInterface::Sct(_) | AnyInterface::Scd(_) => None,
        }
    }

    /// Its average velocity, if it is an average-velocity model (MeanFlow).
    pub fn as_average_velocity(&self) -> Option<&(dyn AverageVelocity + 'static)> {
        match self {
            AnyInterface::MeanFlow(i) => Some(i),
            _ => None,
        }
    }
}

impl Interface for AnyInterface {
    fn name(&self) -> &'static str {
        self.interface().name()
    }
    fn loss(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs) -> Result<LossOutput> {
        self.interface().loss(net, x, cond, rngs)
    }
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        self.interface().pred(net, x_t, t, cond)
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.interface().parameters()
    }
    fn on_step(&mut self, step: u64) {
        self.interface_mut().on_step(step)
    }
}

macro_rules! any_from {
    ($($t:ident),*) => {$(
        impl From<$t> for AnyInterface {
            fn from(i: $t) -> AnyInterface {
                AnyInterface::$t(i)
            }
        }
    )*};
}
any_from!(SiT, Edm, MeanFlow, Sct, Scd);

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

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
    validate::batch(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_settings_take_base_keys_and_refuse_unknown_ones() {
        let b: BaseConfig = serde_json::from_str(r#"{"t_mu": 0.5, "validation": "cheap"}"#).unwrap();
        assert_eq!((b.t_mu, b.validation), (0.5, Validation::Cheap));
        let e = serde_json::from_str::<BaseConfig>(r#"{"t_muu": 0.5}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `t_muu`") && e.contains("`x_sigma`"), "{e}");
        let e = serde_json::from_str::<BaseConfig>(r#"{"t_mu": "x"}"#).unwrap_err().to_string();
        assert!(e.contains("field `t_mu`") && e.contains("invalid type"), "{e}");
    }
}
