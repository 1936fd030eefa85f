//! EDM: preconditioned denoising (Karras et al., "Elucidating the Design Space of
//! Diffusion-Based Generative Models", NeurIPS 2022, Table 1 and eq. 7-8).
//!
//! Here `t` *is* the noise level sigma, `x_t = x + t n`, and with `xs = x_sigma`:
//! - `c_in = 1 / sqrt(xs^2 + t^2)`, `c_out = t xs / sqrt(t^2 + xs^2)`,
//!   `c_skip = xs^2 / (t^2 + xs^2)`, `c_noise = log(t) / 4`;
//! - denoiser `D = c_skip x_t + c_out F(c_in x_t, c_noise)`;
//! - loss(x): `s = sample_t([B])` (no shift), `n = sample_n(x.shape)`,
//!   `w = (s^2 + xs^2) / (s xs)^2` (`= 1 / c_out^2`), `loss = mean_flat(w (D - x)^2)`
//!   (the network in train mode);
//! - `pred = (x_t - D) / t` (the noise estimate; eval mode); `score`: see [`EdmScore`].
//!
//! Quirk Q2: the reference's score is `-(x_t - pred) / t^2`; the score implied by the
//! denoiser, `(D - x_t) / t^2 = -pred / t`, is [`EdmScore::Denoiser`].
//! Quirk Q12: `c_noise = log(t)/4` is infinite at `t = 0`, so `pred` and `score` are NaN
//! there, exactly as in the reference (a documented result, checked by the fixture
//! `pred_edm_t0_q12`); negative sigmas are refused, and the loss refuses a drawn `t = 0`
//! with an error rather than return a NaN loss (at [`crate::validate::Validation::Full`];
//! `cheap` validation reads nothing back and returns the reference's inf / NaN).

use serde::{Deserialize, Deserializer};
use tch::{Device, Tensor};

use super::{bcast_right, flat_settings, mean_flat, BaseConfig, Interface, LossOutput, Preconditioning, Score, Time};
use crate::error::Result;
use crate::networks::{Backbone, Cond, Pass};
use crate::rng::Rngs;
use crate::validate::{self, Checks, Validation};

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
#[derive(Debug, Clone, PartialEq)]
pub struct EdmConfig {
    /// The base settings (`train_time_dist_type`: `uniform`, `lognormal` (EDM's own choice,
    /// with `t_mu = -1.2, t_sigma = 1.2`) or `logitnormal`; `x_sigma` is `sigma_data`).
    pub base: BaseConfig,
    /// Accepted for parity with the reference's base settings; EDM applies no time shift.
    pub t_shift_base: f64,
    /// Which score to return (not a reference setting; the reference behaves as `reference`).
    pub score: EdmScore,
}

impl Default for EdmConfig {
    fn default() -> Self {
        EdmConfig { base: BaseConfig::default(), t_shift_base: 4096.0, score: EdmScore::Reference }
    }
}

impl<'de> Deserialize<'de> for EdmConfig {
    /// From one flat object: the base keys, `t_shift_base` and `score`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        flat_settings(d, EdmConfig::default(), |c, f| {
            c.base.read(f)?;
            f.take("t_shift_base", &mut c.t_shift_base)?;
            f.take("score", &mut c.score)
        })
    }
}

/// The EDM interface.
#[derive(Debug, Clone)]
pub struct Edm {
    cfg: EdmConfig,
}

/// EDM's time domain.
const WHY: &str = "EDM's t is the noise level sigma";

impl Edm {
    /// Validates the settings (sigmas positive and finite, means finite).
    pub fn new(cfg: EdmConfig) -> Result<Edm> {
        cfg.base.validate(&[("t_shift_base", cfg.t_shift_base)])?;
        Ok(Edm { cfg })
    }

    /// The settings.
    pub fn config(&self) -> &EdmConfig {
        &self.cfg
    }

    fn xs(&self) -> f64 {
        self.cfg.base.x_sigma
    }

    fn level(&self) -> Validation {
        self.cfg.base.validation
    }

    /// Draws `[batch]` noise levels from the `time` stream (reference `sample_t`; no shift).
    pub fn sample_t(&self, batch: i64, rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.cfg.base.sample_t(batch, rngs, device)
    }

    /// Draws noise of `shape` from the `noise` stream: `N * n_sigma + n_mu` (reference `sample_n`).
    pub fn sample_n(&self, shape: &[i64], rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.cfg.base.sample_n(shape, rngs, device)
    }

    /// The noisy state `x_t = x + t n` (`t` is sigma, `[B]`).
    pub fn sample_x_t(&self, x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor> {
        Ok(x.f_add(&bcast_right(t, x.dim())?.f_mul(n)?)?)
    }

    /// The regression target of the denoiser, the data `x` (reference `target(x, n, t)`).
    pub fn target(&self, x: &Tensor, _n: &Tensor, _t: &Tensor) -> Result<Tensor> {
        Ok(x.shallow_clone())
    }

    /// The denoiser `D(x_t, t) = c_skip x_t + c_out F(c_in x_t, c_noise(t))` and the features,
    /// the network run with `pass`.
    pub fn denoise(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, cond: Cond<'_>, pass: Pass<'_>) -> Result<(Tensor, Vec<Tensor>)> {
        let nd = x_t.dim();
        let c_in = bcast_right(&self.c_in(t)?, nd)?;
        let o = net.call(&c_in.f_mul(x_t)?, &self.c_noise(t)?, cond, pass)?;
        let d = bcast_right(&self.c_skip(t)?, nd)?.f_mul(x_t)?.f_add(&bcast_right(&self.c_out(t)?, nd)?.f_mul(&o.out)?)?;
        Ok((d, o.features))
    }

    /// The loss weight `w(t) = (t^2 + xs^2) / (t xs)^2` (EDM eq. 8's lambda, `= 1 / c_out^2`).
    pub fn weight(&self, t: &Tensor) -> Result<Tensor> {
        let xs = self.xs();
        Ok(t.f_square()?.f_add_scalar(xs * xs)?.f_div(&t.f_mul_scalar(xs)?.f_square()?)?)
    }

    /// `(pred, t)`: the noise estimate `(x_t - D) / t` and the times as a `[B]` tensor.
    fn pred_at(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<(Tensor, Tensor)> {
        let mut c = Checks::new(self.level());
        let b = validate::data(&mut c, x_t, cond.y)?;
        let t = validate::time(&mut c, "t", t, b, x_t, 0.0, f64::INFINITY, true, WHY)?;
        c.finish()?;
        let (d, _) = self.denoise(net, x_t, &t, cond, Pass::eval().with_validation(self.level()))?;
        Ok((x_t.f_sub(&d)?.f_div(&bcast_right(&t, x_t.dim())?)?, t))
    }
}

impl Preconditioning for Edm {
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
}

impl Interface for Edm {
    fn name(&self) -> &'static str {
        "edm"
    }
    /// The noise estimate `(x_t - D) / t`.
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        Ok(self.pred_at(net, x_t, t, cond)?.0)
    }
    fn loss(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs) -> Result<LossOutput> {
        let mut c = Checks::new(self.level());
        let b = validate::data(&mut c, x, cond.y)?;
        c.finish()?;
        let t = self.sample_t(b, rngs, x.device())?;
        let n = self.sample_n(&x.size(), rngs, x.device())?;
        let x_t = self.sample_x_t(x, &n, &t)?;
        let (d, features) = self.denoise(net, &x_t, &t, cond, Pass::train(rngs).with_validation(self.level()))?;
        let w = bcast_right(&self.weight(&t)?, x.dim())?;
        let loss = mean_flat(&w.f_mul(&d.f_sub(x)?.f_square()?)?)?;
        // Quirk Q12: a drawn sigma of 0 makes c_noise infinite; beyond t = 0, a sigma so small
        // that (t xs)^2 underflows gives an infinite weight. The reference returns that inf /
        // NaN, this crate an error (one read for both checks).
        let mut c = Checks::new(self.level());
        c.range("t", &t, 0.0, f64::INFINITY, false, "a drawn sigma of 0 makes c_noise infinite (quirk Q12)")?;
        c.finite_or(
            &loss,
            "an EDM loss that is NaN or infinite",
            "a drawn sigma so small that the weight (t^2 + xs^2) / (t xs)^2 overflows (quirk Q12), or non-finite parameters",
        )?;
        c.finish()?;
        Ok(LossOutput { loss, t, r: None, n, x_t, target: x.shallow_clone(), net_out: d, features })
    }
}

impl Score for Edm {
    /// See [`EdmScore`].
    fn score(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        let (pred, t) = self.pred_at(net, x_t, t, cond)?;
        let tb = bcast_right(&t, x_t.dim())?;
        Ok(match self.cfg.score {
            EdmScore::Reference => x_t.f_sub(&pred)?.f_div(&tb.f_square()?)?.f_neg()?,
            EdmScore::Denoiser => pred.f_div(&tb)?.f_neg()?,
        })
    }
}
