//! EDM: preconditioned denoising (Karras et al., "Elucidating the Design Space of
//! Diffusion-Based Generative Models", NeurIPS 2022, Table 1 and eq. 7-8).
//!
//! Here `t` *is* the noise level sigma, `x_t = x + t n`, and with `xs = x_sigma`:
//! - `c_in = 1 / sqrt(xs^2 + t^2)`, `c_out = t xs / sqrt(t^2 + xs^2)`,
//!   `c_skip = xs^2 / (t^2 + xs^2)`, `c_noise = log(t) / 4`;
//! - denoiser `D = c_skip x_t + c_out F(c_in x_t, c_noise)`;
//! - loss(x): `s = sample_t([B])` (no shift), `n = sample_n(x.shape)`,
//!   `w = (s^2 + xs^2) / (s xs)^2` (`= 1 / c_out^2`), `loss = mean_flat(w (D - x)^2)`;
//! - `pred = (x_t - D) / t` (the noise estimate); `score`: see [`EdmScore`].
//!
//! Quirk Q2: the reference's score is `-(x_t - pred) / t^2`; the score implied by the
//! denoiser, `(D - x_t) / t^2 = -pred / t`, is [`EdmScore::Denoiser`].
//! Quirk Q12: `c_noise = log(t)/4` is infinite at `t = 0`, so `pred` and `score` are NaN
//! there, exactly as in the reference (a documented result, checked by the fixture
//! `pred_edm_t0_q12`); negative sigmas are refused, and the loss refuses a drawn `t = 0`
//! with an error rather than return a NaN loss.

use serde::Deserialize;
use tch::{Device, Tensor};

use super::sit::check_common;
use super::{bcast_right, check_data, check_time, mean_flat, Interface, LossOutput, TimeDist, sample_noise};
use crate::error::{Error, Result};
use crate::networks::{Backbone, Cond};
use crate::rng::Rngs;

/// Which score [`Edm::score`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdmScore {
    /// The reference's formula, `-(x_t - pred) / t^2` (quirk Q2). The default.
    #[default]
    Reference,
    /// The score implied by the denoiser, `(D - x_t) / t^2 = -pred / t`.
    Denoiser,
}

/// Settings of [`Edm`], with the reference's names and defaults (plus `score`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdmConfig {
    /// `uniform`, `lognormal` (EDM's own choice, with `t_mu = -1.2, t_sigma = 1.2`) or `logitnormal`.
    pub train_time_dist_type: TimeDist,
    /// Mean of the normal behind log-/logit-normal times.
    pub t_mu: f64,
    /// Standard deviation of the normal behind log-/logit-normal times.
    pub t_sigma: f64,
    /// Noise mean.
    pub n_mu: f64,
    /// Noise standard deviation.
    pub n_sigma: f64,
    /// Data standard deviation `sigma_data`.
    pub x_sigma: f64,
    /// Accepted for parity with the reference's base settings; EDM applies no time shift.
    pub t_shift_base: f64,
    /// Which score to return (not a reference setting; the reference behaves as `reference`).
    pub score: EdmScore,
}

impl Default for EdmConfig {
    fn default() -> Self {
        EdmConfig {
            train_time_dist_type: TimeDist::Uniform,
            t_mu: 0.0,
            t_sigma: 1.0,
            n_mu: 0.0,
            n_sigma: 1.0,
            x_sigma: 0.5,
            t_shift_base: 4096.0,
            score: EdmScore::Reference,
        }
    }
}

/// The EDM interface.
#[derive(Debug, Clone)]
pub struct Edm {
    cfg: EdmConfig,
}

impl Edm {
    /// Validates the settings (sigmas positive and finite, means finite).
    pub fn new(cfg: EdmConfig) -> Result<Edm> {
        check_common(cfg.t_sigma, cfg.n_sigma, cfg.x_sigma, &[("t_mu", cfg.t_mu), ("n_mu", cfg.n_mu), ("t_shift_base", cfg.t_shift_base)])?;
        Ok(Edm { cfg })
    }

    /// The settings.
    pub fn config(&self) -> &EdmConfig {
        &self.cfg
    }

    fn xs(&self) -> f64 {
        self.cfg.x_sigma
    }

    /// The denoiser `D(x_t, t) = c_skip x_t + c_out F(c_in x_t, c_noise(t))` and the features.
    pub fn denoise(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, y: Option<&Tensor>, rngs: Option<&mut Rngs>) -> Result<(Tensor, Vec<Tensor>)> {
        let nd = x_t.dim();
        let c_in = bcast_right(&self.c_in(t)?, nd)?;
        let o = net.forward(&c_in.f_mul(x_t)?, &self.c_noise(t)?, Cond::labels(y), rngs)?;
        let d = bcast_right(&self.c_skip(t)?, nd)?.f_mul(x_t)?.f_add(&bcast_right(&self.c_out(t)?, nd)?.f_mul(&o.out)?)?;
        Ok((d, o.features))
    }

    /// The loss weight `w(t) = (t^2 + xs^2) / (t xs)^2` (EDM eq. 8's lambda, `= 1 / c_out^2`).
    pub fn weight(&self, t: &Tensor) -> Result<Tensor> {
        let xs = self.xs();
        Ok(t.f_square()?.f_add_scalar(xs * xs)?.f_div(&t.f_mul_scalar(xs)?.f_square()?)?)
    }
}

impl Interface for Edm {
    fn name(&self) -> &'static str {
        "edm"
    }
    fn c_in(&self, t: &Tensor) -> Result<Tensor> {
        let xs = self.xs();
        Ok(t.f_square()?.f_add_scalar(xs * xs)?.f_sqrt()?.f_reciprocal()?)
    }
    fn c_out(&self, t: &Tensor) -> Result<Tensor> {
        let xs = self.xs();
        Ok(t.f_mul_scalar(xs)?.f_div(&t.f_square()?.f_add_scalar(xs * xs)?.f_sqrt()?)?)
    }
    fn c_skip(&self, t: &Tensor) -> Result<Tensor> {
        let xs = self.xs();
        Ok(t.f_square()?.f_add_scalar(xs * xs)?.f_reciprocal()?.f_mul_scalar(xs * xs)?)
    }
    fn c_noise(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.f_log()?.f_div_scalar(4.0)?)
    }
    fn sample_t(&self, batch: i64, rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.cfg.train_time_dist_type.sample(batch, self.cfg.t_mu, self.cfg.t_sigma, rngs, device)
    }
    fn sample_n(&self, shape: &[i64], rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        sample_noise(shape, self.cfg.n_mu, self.cfg.n_sigma, rngs, device)
    }
    fn sample_x_t(&self, x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor> {
        Ok(x.f_add(&bcast_right(t, x.dim())?.f_mul(n)?)?)
    }
    fn target(&self, x: &Tensor, _n: &Tensor, _t: &Tensor) -> Result<Tensor> {
        Ok(x.shallow_clone())
    }
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, r: Option<&Tensor>, y: Option<&Tensor>) -> Result<Tensor> {
        if r.is_some() {
            return Err(Error::invalid("r", "none (EDM has no interval start)", "a tensor"));
        }
        let b = check_data(x_t, y)?;
        check_time(t, b, 0.0, f64::INFINITY, true, "EDM's t is the noise level sigma")?;
        let (d, _) = self.denoise(net, x_t, t, y, None)?;
        Ok(x_t.f_sub(&d)?.f_div(&bcast_right(t, x_t.dim())?)?)
    }
    fn score(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, r: Option<&Tensor>, y: Option<&Tensor>) -> Result<Tensor> {
        let pred = self.pred(net, x_t, t, r, y)?;
        let tb = bcast_right(t, x_t.dim())?;
        Ok(match self.cfg.score {
            EdmScore::Reference => x_t.f_sub(&pred)?.f_div(&tb.f_square()?)?.f_neg()?,
            EdmScore::Denoiser => pred.f_div(&tb)?.f_neg()?,
        })
    }
    fn loss(&self, net: &dyn Backbone, x: &Tensor, y: Option<&Tensor>, rngs: &mut Rngs) -> Result<LossOutput> {
        let b = check_data(x, y)?;
        let t = self.sample_t(b, rngs, x.device())?;
        check_time(&t, b, 0.0, f64::INFINITY, false, "a drawn sigma of 0 makes c_noise infinite (quirk Q12)")?;
        let n = self.sample_n(&x.size(), rngs, x.device())?;
        let x_t = self.sample_x_t(x, &n, &t)?;
        let (d, features) = self.denoise(net, &x_t, &t, y, Some(rngs))?;
        let w = bcast_right(&self.weight(&t)?, x.dim())?;
        let loss = mean_flat(&w.f_mul(&d.f_sub(x)?.f_square()?)?)?;
        // Quirk Q12 beyond t = 0: a sigma so small that (t xs)^2 underflows gives an infinite
        // weight; the reference returns that inf / NaN, this crate an error.
        if loss.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Err(Error::Unsupported {
                what: "an EDM loss that is NaN or infinite".into(),
                why: "a drawn sigma so small that the weight (t^2 + xs^2) / (t xs)^2 overflows (quirk Q12), or non-finite parameters".into(),
            });
        }
        Ok(LossOutput { loss, t, r: None, n, x_t, target: x.shallow_clone(), net_out: d, features })
    }
}
