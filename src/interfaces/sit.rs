//! SiT: linear flow matching (Ma et al., "SiT: Exploring Flow and Diffusion-based
//! Generative Models with Scalable Interpolant Transformers", 2024; Lipman et al. 2023).
//!
//! Noise at `t = 1`, data at `t = 0`:
//! - `x_t = (1 - t) x + t n`, target velocity `v = n - x`;
//! - `c_in = 1, c_out = 1, c_skip = 0, c_noise = t`;
//! - loss(x): `t = sample_t([B])`, then the resolution shift
//!   `t = t_shift(t, sqrt(prod(x.shape[1:]) / t_shift_base))`, `n = sample_n(x.shape)`,
//!   `out = net(x_t, t, y)[0]`, `loss = mean_flat((out - (n - x))^2)`;
//! - `pred(x_t, t) = net(x_t, t)[0]`, `score = -(x_t + (1 - t) pred) / t`.
//!
//! Draw order: `time` stream, then `noise`, then the network's own draws.
//! `lognormal` times are refused, as by the reference. Times outside `[0, 1]` are refused.
//! Quirk Q12: the score divides by `t`; at `t = 0` it returns the reference's infinities
//! (a documented result, checked by the fixture `pred_sit_t0_q12`).

use serde::Deserialize;
use tch::{Device, Tensor};

use super::{bcast_right, check_data, check_time, mean_flat, t_shift, Interface, LossOutput, TimeDist, sample_noise, linear_path};
use crate::error::{Error, Result};
use crate::networks::{Backbone, Cond};
use crate::rng::Rngs;

/// Settings of [`SiT`], with the reference's names and defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiTConfig {
    /// `uniform` or `logitnormal` (`lognormal` is refused).
    pub train_time_dist_type: TimeDist,
    /// Mean of the normal behind logit-normal times.
    pub t_mu: f64,
    /// Standard deviation of the normal behind logit-normal times.
    pub t_sigma: f64,
    /// Noise mean.
    pub n_mu: f64,
    /// Noise standard deviation.
    pub n_sigma: f64,
    /// Data standard deviation (unused by SiT's math; kept as the reference's base setting).
    pub x_sigma: f64,
    /// The resolution (number of values per example) at which the time shift is 1.
    pub t_shift_base: f64,
}

impl Default for SiTConfig {
    fn default() -> Self {
        SiTConfig {
            train_time_dist_type: TimeDist::Uniform,
            t_mu: 0.0,
            t_sigma: 1.0,
            n_mu: 0.0,
            n_sigma: 1.0,
            x_sigma: 0.5,
            t_shift_base: 4096.0,
        }
    }
}

/// The SiT interface.
#[derive(Debug, Clone)]
pub struct SiT {
    cfg: SiTConfig,
}

pub(super) fn check_common(t_sigma: f64, n_sigma: f64, x_sigma: f64, others: &[(&str, f64)]) -> Result<()> {
    for (name, v) in [("t_sigma", t_sigma), ("n_sigma", n_sigma), ("x_sigma", x_sigma)] {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::invalid(name, "a finite value > 0", v));
        }
    }
    for &(name, v) in others {
        if !v.is_finite() {
            return Err(Error::invalid(name, "a finite value", v));
        }
    }
    Ok(())
}

impl SiT {
    /// Validates the settings: `lognormal` is refused (as by the reference), sigmas must be
    /// positive and finite, `t_shift_base` positive.
    pub fn new(cfg: SiTConfig) -> Result<SiT> {
        if cfg.train_time_dist_type == TimeDist::LogNormal {
            return Err(Error::Unsupported {
                what: "SiT with train_time_dist_type = lognormal".into(),
                why: "lognormal times are not confined to [0, 1]; the reference refuses them too".into(),
            });
        }
        check_common(cfg.t_sigma, cfg.n_sigma, cfg.x_sigma, &[("t_mu", cfg.t_mu), ("n_mu", cfg.n_mu)])?;
        if !(cfg.t_shift_base.is_finite() && cfg.t_shift_base > 0.0) {
            return Err(Error::invalid("t_shift_base", "a finite value > 0", cfg.t_shift_base));
        }
        Ok(SiT { cfg })
    }

    /// The settings.
    pub fn config(&self) -> &SiTConfig {
        &self.cfg
    }

    /// The resolution shift for data of `shape` (`[B, ...]`): `sqrt(prod(shape[1:]) / t_shift_base)`.
    pub fn shift_for(&self, shape: &[i64]) -> f64 {
        // In f64, so that no shape can overflow (exact below 2^53, as every real shape is).
        let d: f64 = shape.iter().skip(1).map(|&d| d as f64).product();
        (d / self.cfg.t_shift_base).sqrt()
    }
}

impl Interface for SiT {
    fn name(&self) -> &'static str {
        "sit"
    }
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
    fn sample_t(&self, batch: i64, rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.cfg.train_time_dist_type.sample(batch, self.cfg.t_mu, self.cfg.t_sigma, rngs, device)
    }
    fn sample_n(&self, shape: &[i64], rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        sample_noise(shape, self.cfg.n_mu, self.cfg.n_sigma, rngs, device)
    }
    fn sample_x_t(&self, x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor> {
        linear_path(x, n, t)
    }
    fn target(&self, x: &Tensor, n: &Tensor, _t: &Tensor) -> Result<Tensor> {
        Ok(n.f_sub(x)?)
    }
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, r: Option<&Tensor>, y: Option<&Tensor>) -> Result<Tensor> {
        if r.is_some() {
            return Err(Error::invalid("r", "none (SiT has no interval start)", "a tensor"));
        }
        let b = check_data(x_t, y)?;
        check_time(t, b, 0.0, 1.0, true, "SiT's path runs from data at t = 0 to noise at t = 1")?;
        Ok(net.forward(x_t, t, Cond::labels(y), None)?.out)
    }
    fn score(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, r: Option<&Tensor>, y: Option<&Tensor>) -> Result<Tensor> {
        let v = self.pred(net, x_t, t, r, y)?;
        let tb = bcast_right(t, x_t.dim())?;
        Ok(x_t.f_add(&tb.f_neg()?.f_add_scalar(1.0)?.f_mul(&v)?)?.f_div(&tb)?.f_neg()?)
    }
    fn loss(&self, net: &dyn Backbone, x: &Tensor, y: Option<&Tensor>, rngs: &mut Rngs) -> Result<LossOutput> {
        let b = check_data(x, y)?;
        let t = self.sample_t(b, rngs, x.device())?;
        let t = t_shift(&t, self.shift_for(&x.size()))?;
        let n = self.sample_n(&x.size(), rngs, x.device())?;
        let x_t = self.sample_x_t(x, &n, &t)?;
        let target = self.target(x, &n, &t)?;
        let o = net.forward(&x_t, &t, Cond::labels(y), Some(rngs))?;
        let loss = mean_flat(&o.out.f_sub(&target)?.f_square()?)?;
        Ok(LossOutput { loss, t, r: None, n, x_t, target, net_out: o.out, features: o.features })
    }
}
