//! SiT: linear flow matching (Ma et al., "SiT: Exploring Flow and Diffusion-based
//! Generative Models with Scalable Interpolant Transformers", 2024; Lipman et al. 2023).
//!
//! Noise at `t = 1`, data at `t = 0`:
//! - `x_t = (1 - t) x + t n`, target velocity `v = n - x`;
//! - `c_in = 1, c_out = 1, c_skip = 0, c_noise = t`;
//! - loss(x): `t = sample_t([B])`, then the resolution shift
//!   `t = t_shift(t, sqrt(prod(x.shape[1:]) / t_shift_base))`, `n = sample_n(x.shape)`,
//!   `out = net(x_t, t, y)[0]` (train mode), `loss = mean_flat((out - (n - x))^2)`;
//! - `pred(x_t, t) = net(x_t, t)[0]` (eval mode), `score = -(x_t + (1 - t) pred) / t`.
//!
//! Draw order: `time` stream, then `noise`, then the network's own draws.
//! `lognormal` times are refused, as by the reference. Times outside `[0, 1]` are refused.
//! Quirk Q12: the score divides by `t`; at `t = 0` it returns the reference's infinities
//! (a documented result, checked by the fixture `pred_sit_t0_q12`).

use serde::{Deserialize, Deserializer};
use tch::{Device, Tensor};

use super::{bcast_right, flat_settings, linear_path, mean_flat, t_shift, BaseConfig, Interface, LossOutput, Preconditioning, Score, Time, TimeDist};
use crate::error::{Error, Result};
use crate::networks::{Backbone, Cond, Pass};
use crate::rng::Rngs;
use crate::validate::{self, Checks, Validation};

/// Settings of [`SiT`], with the reference's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SiTConfig {
    /// The base settings (`train_time_dist_type`: `uniform` or `logitnormal`, `lognormal` is
    /// refused; `t_mu`, `t_sigma`, `n_mu`, `n_sigma`; `x_sigma`, unused by SiT's math).
    pub base: BaseConfig,
    /// The resolution (number of values per example) at which the time shift is 1.
    pub t_shift_base: f64,
}

impl Default for SiTConfig {
    fn default() -> Self {
        SiTConfig { base: BaseConfig::default(), t_shift_base: 4096.0 }
    }
}

impl<'de> Deserialize<'de> for SiTConfig {
    /// From one flat object: the base keys and `t_shift_base`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        flat_settings(d, SiTConfig::default(), |c, f| {
            c.base.read(f)?;
            f.take("t_shift_base", &mut c.t_shift_base)
        })
    }
}

/// The SiT interface.
#[derive(Debug, Clone)]
pub struct SiT {
    cfg: SiTConfig,
}

/// SiT's time domain.
const WHY: &str = "SiT's path runs from data at t = 0 to noise at t = 1";

impl SiT {
    /// Validates the settings: `lognormal` is refused (as by the reference), sigmas must be
    /// positive and finite, `t_shift_base` positive.
    pub fn new(cfg: SiTConfig) -> Result<SiT> {
        if cfg.base.train_time_dist_type == TimeDist::LogNormal {
            return Err(Error::Unsupported {
                what: "SiT with train_time_dist_type = lognormal".into(),
                why: "lognormal times are not confined to [0, 1]; the reference refuses them too".into(),
            });
        }
        cfg.base.validate(&[])?;
        if !(cfg.t_shift_base.is_finite() && cfg.t_shift_base > 0.0) {
            return Err(Error::invalid("t_shift_base", "a finite value > 0", cfg.t_shift_base));
        }
        Ok(SiT { cfg })
    }

    /// The settings.
    pub fn config(&self) -> &SiTConfig {
        &self.cfg
    }

    fn level(&self) -> Validation {
        self.cfg.base.validation
    }

    /// The resolution shift for data of `shape` (`[B, ...]`): `sqrt(prod(shape[1:]) / t_shift_base)`.
    pub fn shift_for(&self, shape: &[i64]) -> f64 {
        // In f64, so that no shape can overflow (exact below 2^53, as every real shape is).
        let d: f64 = shape.iter().skip(1).map(|&d| d as f64).product();
        (d / self.cfg.t_shift_base).sqrt()
    }

    /// Draws `[batch]` training times from the `time` stream (reference `sample_t`; no shift).
    pub fn sample_t(&self, batch: i64, rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.cfg.base.sample_t(batch, rngs, device)
    }

    /// Draws noise of `shape` from the `noise` stream: `N * n_sigma + n_mu` (reference `sample_n`).
    pub fn sample_n(&self, shape: &[i64], rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.cfg.base.sample_n(shape, rngs, device)
    }

    /// The noisy state `x_t = (1 - t) x + t n` (`t` `[B]`, broadcast to the right).
    pub fn sample_x_t(&self, x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor> {
        linear_path(x, n, t)
    }

    /// The regression target, the velocity `n - x` (reference `target(x, n, t)`).
    pub fn target(&self, x: &Tensor, n: &Tensor, _t: &Tensor) -> Result<Tensor> {
        Ok(n.f_sub(x)?)
    }

    /// The score of a velocity `v` on the linear path: `-(x_t + (1 - t) v) / t` (quirk Q12:
    /// infinite at `t = 0`).
    pub fn score_from_velocity(x_t: &Tensor, t: &Tensor, v: &Tensor) -> Result<Tensor> {
        let tb = bcast_right(t, x_t.dim())?;
        Ok(x_t.f_add(&tb.f_neg()?.f_add_scalar(1.0)?.f_mul(v)?)?.f_div(&tb)?.f_neg()?)
    }

    /// The checked inputs of `pred`: the times as a `[B]` tensor.
    fn checked(&self, x_t: &Tensor, t: Time<'_>, cond: &Cond<'_>) -> Result<Tensor> {
        let mut c = Checks::new(self.level());
        let b = validate::data(&mut c, x_t, cond.y)?;
        let t = validate::time(&mut c, "t", t, b, x_t, 0.0, 1.0, true, WHY)?;
        c.finish()?;
        Ok(t)
    }
}

impl Preconditioning for SiT {
    fn c_in(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.f_ones_like()?)
    }
    fn c_out(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.f_ones_like()?)
    }
    fn c_skip(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.f_zeros_like()?)
    }
    fn c_noise(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.shallow_clone())
    }
}

impl Interface for SiT {
    fn name(&self) -> &'static str {
        "sit"
    }
    /// The velocity `net(x_t, t)`.
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        let t = self.checked(x_t, t, &cond)?;
        Ok(net.call(x_t, &t, cond, Pass::eval().with_validation(self.level()))?.out)
    }
    fn loss(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs) -> Result<LossOutput> {
        let mut c = Checks::new(self.level());
        let b = validate::data(&mut c, x, cond.y)?;
        c.finish()?;
        let t = self.sample_t(b, rngs, x.device())?;
        let t = t_shift(&t, self.shift_for(&x.size()))?;
        let n = self.sample_n(&x.size(), rngs, x.device())?;
        let x_t = self.sample_x_t(x, &n, &t)?;
        let target = self.target(x, &n, &t)?;
        let o = net.call(&x_t, &t, cond, Pass::train(rngs).with_validation(self.level()))?;
        let loss = mean_flat(&o.out.f_sub(&target)?.f_square()?)?;
        Ok(LossOutput { loss, t, r: None, n, x_t, target, net_out: o.out, features: o.features })
    }
}

impl Score for SiT {
    /// `-(x_t + (1 - t) pred) / t` (quirk Q12: infinite at `t = 0`).
    fn score(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        let t = self.checked(x_t, t, &cond)?;
        let v = net.call(x_t, &t, cond, Pass::eval().with_validation(self.level()))?.out;
        SiT::score_from_velocity(x_t, &t, &v)
    }
}
