//! MeanFlow: average-velocity flow matching (Geng et al., "Mean Flows for One-step
//! Generative Modeling", 2025, eq. 6-10), on the SiT path (noise at `t = 1`).
//!
//! The network `u(x_t, t, dt = t - r)` models the average velocity over `[r, t]`. With
//! `w = guidance_scale`, `kappa = guidance_mixture_ratio`, `neg_y` = the null class 1000:
//!
//! 1. `t, r`: two `sample_t([B])` draws from the `time` stream (first t, then r), then
//!    `t, r = max, min`; the first `floor(B * fm_portion)` examples get `r = t`. No time
//!    shift (quirk Q9: `t_shift_base` is accepted and ignored).
//! 2. `n = sample_n(x.shape)` (`noise` stream), `x_t = (1 - t) x + t n`.
//! 3. Guided velocity, with the network switched to eval mode first: `v = n - x`. If
//!    `w == 1` and `kappa == 0`, `v` is kept. Otherwise `v_unc = net(x_t, t, neg_y,
//!    dt = 0)`; if `kappa == 0`, `v = v_unc + w (v - v_unc)`; else also `v_c = net(x_t, t,
//!    y, dt = 0)`, the network goes back to train mode, and `v = w v + (1 - w - kappa)
//!    v_unc + kappa v_c`; both only inside `t_min <= t <= t_max`. Quirk Q8: only the
//!    mixture path returns the network to train mode; otherwise it stays in eval mode
//!    for the rest of the step.
//! 4. Condition drop (`label_dropout` stream): `m = uniform([B]) < cond_drop_ratio`,
//!    `k = sum(m)`; quirk Q7: the *first k* examples get `y = neg_y` and `v = n - x`
//!    ([`CondDrop::Prefix`], faithful); [`CondDrop::Sampled`] drops the examples whose
//!    draw fell below the ratio.
//! 5. `(u, du/dt) = jvp((x_t, t, r) -> net(x_t, t, dt = t - r, y), (x_t, t, r), (v, 1, 0))`
//!    (exact; [`JvpBackend`]), `target = stop_grad(v - clip(t - r, 0, 1) du/dt)` (eq. 10).
//!    With [`JvpBackend::ForwardAd`] the tangent is computed without autograd recording and
//!    `u` by a separate plain forward on the same draws (same numbers; about half the
//!    step's peak memory, for the cost of that forward).
//! 6. `l = sum over non-batch axes (u - target)^2`,
//!    `loss = stop_grad(1 / (l + norm_eps)^norm_power) l` (the adaptive weight, eq. 14).
//!
//! `pred(x_t, t, r) = net(x_t, t, dt = t - r)`; `score` see [`MeanFlowScore`] (quirk Q3).

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::sit::check_common;
use super::{bcast_right, check_data, check_time, check_times, sum_flat, Interface, LossOutput, TimeDist, sample_noise, linear_path};
use crate::error::{Error, Result};
use crate::jvp::{jvp, JvpBackend};
use crate::networks::{Backbone, Cond};
use crate::rng::Rngs;

/// The null class label of the reference (quirk Q10): [`crate::networks::NULL_CLASS`].
pub const NULL_LABEL: i64 = crate::networks::NULL_CLASS;

/// Which examples the condition drop affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CondDrop {
    /// The reference: as many examples as fell below the ratio, taken from the front
    /// (the same prefix `fm_portion` sets to `r = t`; quirk Q7). The default.
    #[default]
    Prefix,
    /// The examples whose own draw fell below `cond_drop_ratio`.
    Sampled,
}

/// Which score [`MeanFlow::score`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeanFlowScore {
    /// The reference: `-(x_t + (1 - t) u(x_t, t, r = 0)) / t^2` — the average velocity over
    /// `[0, t]`, divided by `t^2` (quirk Q3). The default.
    #[default]
    Reference,
    /// SiT's score with the instantaneous velocity `u(x_t, t, r = t)`:
    /// `-(x_t + (1 - t) u) / t`.
    Instantaneous,
}

/// Settings of [`MeanFlow`], with the reference's names and defaults (plus the named
/// options `jvp`, `cond_drop`, `score`, whose defaults are the reference's behaviour).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeanFlowConfig {
    /// `uniform` or `logitnormal` (`lognormal` is refused, as for SiT).
    pub train_time_dist_type: TimeDist,
    /// Mean of the normal behind logit-normal times.
    pub t_mu: f64,
    /// Standard deviation of the normal behind logit-normal times.
    pub t_sigma: f64,
    /// Noise mean.
    pub n_mu: f64,
    /// Noise standard deviation.
    pub n_sigma: f64,
    /// Data standard deviation (unused by the math).
    pub x_sigma: f64,
    /// Accepted and ignored (quirk Q9).
    pub t_shift_base: f64,
    /// Guidance scale `w`.
    pub guidance_scale: f64,
    /// Guidance mixture ratio `kappa`.
    pub guidance_mixture_ratio: f64,
    /// Guidance interval start (inclusive).
    pub guidance_t_min: f64,
    /// Guidance interval end (inclusive).
    pub guidance_t_max: f64,
    /// Adaptive-weight epsilon.
    pub norm_eps: f64,
    /// Adaptive-weight power (0: plain sum of squares; the reference's default 1).
    ///
    /// The weight `1 / (l + norm_eps)^p` depends on each example's own error, so for `p > 0`
    /// the fixed point of training is no longer the conditional mean of the target (`p = 0.5`
    /// fits a geometric median, `p = 1` leans to the modes). Over the many values of an image
    /// the error norm varies little between examples and the shift is small; on
    /// low-dimensional data it dominates (the toy demo, `examples/toy.rs`, trains with 0).
    pub norm_power: f64,
    /// Fraction of the batch (a prefix) with `r = t` (plain flow matching).
    pub fm_portion: f64,
    /// Probability of a condition drop.
    pub cond_drop_ratio: f64,
    /// JVP implementation.
    pub jvp: JvpBackend,
    /// Condition-drop semantics (quirk Q7).
    pub cond_drop: CondDrop,
    /// Score formula (quirk Q3).
    pub score: MeanFlowScore,
}

impl Default for MeanFlowConfig {
    fn default() -> Self {
        MeanFlowConfig {
            train_time_dist_type: TimeDist::Uniform,
            t_mu: 0.0,
            t_sigma: 1.0,
            n_mu: 0.0,
            n_sigma: 1.0,
            x_sigma: 0.5,
            t_shift_base: 4096.0,
            guidance_scale: 1.0,
            guidance_mixture_ratio: 0.5,
            guidance_t_min: 0.0,
            guidance_t_max: 1.0,
            norm_eps: 1e-3,
            norm_power: 1.0,
            fm_portion: 0.75,
            cond_drop_ratio: 0.5,
            jvp: JvpBackend::DoubleBackward,
            cond_drop: CondDrop::Prefix,
            score: MeanFlowScore::Reference,
        }
    }
}

/// The MeanFlow interface.
#[derive(Debug, Clone)]
pub struct MeanFlow {
    cfg: MeanFlowConfig,
}

fn in_unit(name: &str, v: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        return Err(Error::invalid(name, "a value in [0, 1]", v));
    }
    Ok(())
}

/// The batch size of a `[B]` vector argument (an error, not a panic, for a scalar).
fn leading(name: &str, v: &Tensor) -> Result<i64> {
    match v.size()[..] {
        [b] => Ok(b),
        ref s => Err(Error::invalid(name, "a [B] vector", format!("shape {s:?}"))),
    }
}

impl MeanFlow {
    /// Validates the settings.
    pub fn new(cfg: MeanFlowConfig) -> Result<MeanFlow> {
        if cfg.train_time_dist_type == TimeDist::LogNormal {
            return Err(Error::Unsupported {
                what: "MeanFlow with train_time_dist_type = lognormal".into(),
                why: "lognormal times are not confined to [0, 1]; the reference refuses them too".into(),
            });
        }
        check_common(
            cfg.t_sigma,
            cfg.n_sigma,
            cfg.x_sigma,
            &[("t_mu", cfg.t_mu), ("n_mu", cfg.n_mu), ("guidance_scale", cfg.guidance_scale), ("guidance_mixture_ratio", cfg.guidance_mixture_ratio), ("norm_power", cfg.norm_power)],
        )?;
        in_unit("fm_portion", cfg.fm_portion)?;
        in_unit("cond_drop_ratio", cfg.cond_drop_ratio)?;
        if !(cfg.guidance_t_min.is_finite() && cfg.guidance_t_max.is_finite() && cfg.guidance_t_min <= cfg.guidance_t_max) {
            return Err(Error::invalid("guidance_t_min, guidance_t_max", "finite bounds with t_min <= t_max", format!("[{}, {}]", cfg.guidance_t_min, cfg.guidance_t_max)));
        }
        if !(cfg.norm_eps.is_finite() && cfg.norm_eps > 0.0) {
            return Err(Error::invalid("norm_eps", "a finite value > 0", cfg.norm_eps));
        }
        if cfg.norm_power < 0.0 {
            return Err(Error::invalid("norm_power", "a value >= 0", cfg.norm_power));
        }
        Ok(MeanFlow { cfg })
    }

    /// The settings.
    pub fn config(&self) -> &MeanFlowConfig {
        &self.cfg
    }

    /// Step 1: `(t, r)` with `t >= r`, the first `floor(B * fm_portion)` examples having `r = t`.
    pub fn sample_t_r(&self, batch: i64, rngs: &mut Rngs, device: Device) -> Result<(Tensor, Tensor)> {
        let a = self.sample_t(batch, rngs, device)?;
        let b = self.sample_t(batch, rngs, device)?;
        let (t, r) = (a.f_maximum(&b)?, a.f_minimum(&b)?);
        let k = (batch as f64 * self.cfg.fm_portion).floor() as i64;
        let mask = Tensor::f_arange(batch, (Kind::Int64, device))?.f_lt(k)?;
        let r = t.f_where_self(&mask, &r)?;
        Ok((t, r))
    }

    fn labels(y: Option<&Tensor>, b: i64, device: Device) -> Result<Tensor> {
        Ok(match y {
            Some(y) => y.f_to_kind(Kind::Int64)?,
            None => Tensor::f_full([b], NULL_LABEL, (Kind::Int64, device))?,
        })
    }

    /// Step 3: the guided instantaneous velocity (no gradient; leaves the network in the
    /// mode the reference leaves it in, quirk Q8).
    pub fn guided_velocity(&self, net: &dyn Backbone, x: &Tensor, n: &Tensor, x_t: &Tensor, t: &Tensor, y: &Tensor, rngs: &mut Rngs) -> Result<Tensor> {
        let _ng = tch::no_grad_guard();
        net.set_train(false);
        let v = n.f_sub(x)?;
        let (w, kappa) = (self.cfg.guidance_scale, self.cfg.guidance_mixture_ratio);
        if w == 1.0 && kappa == 0.0 {
            return Ok(v);
        }
        let b = leading("t", t)?;
        let zeros = t.f_zeros_like()?;
        let neg_y = Tensor::f_full([b], NULL_LABEL, (Kind::Int64, t.device()))?;
        let v_unc = net.forward(x_t, t, Cond { y: Some(&neg_y), dt: Some(&zeros), gw: None }, Some(&mut *rngs))?.out;
        let guided = if kappa == 0.0 {
            v_unc.f_add(&v.f_sub(&v_unc)?.f_mul_scalar(w)?)?
        } else {
            let v_c = net.forward(x_t, t, Cond { y: Some(y), dt: Some(&zeros), gw: None }, Some(&mut *rngs))?.out;
            net.set_train(true);
            v.f_mul_scalar(w)?.f_add(&v_unc.f_mul_scalar(1.0 - w - kappa)?)?.f_add(&v_c.f_mul_scalar(kappa)?)?
        };
        let inside = t.f_ge(self.cfg.guidance_t_min)?.f_logical_and(&t.f_le(self.cfg.guidance_t_max)?)?;
        Ok(guided.f_where_self(&bcast_right(&inside, v.dim())?, &v)?)
    }

    /// Step 4: the condition drop; returns the new `(v, y)`.
    pub fn cond_drop(&self, x: &Tensor, n: &Tensor, v: &Tensor, y: &Tensor, rngs: &mut Rngs) -> Result<(Tensor, Tensor)> {
        let b = leading("y", y)?;
        let device = y.device();
        let m = rngs.uniform("label_dropout", &[b], 0.0, 1.0, device)?.f_lt(self.cfg.cond_drop_ratio)?;
        let drop = match self.cfg.cond_drop {
            CondDrop::Prefix => {
                let k = m.f_sum(Kind::Int64)?;
                Tensor::f_arange(b, (Kind::Int64, device))?.f_lt_tensor(&k)?
            }
            CondDrop::Sampled => m,
        };
        let neg_y = Tensor::f_full([b], NULL_LABEL, (Kind::Int64, device))?;
        let y = neg_y.f_where_self(&drop, y)?;
        let v = n.f_sub(x)?.f_where_self(&bcast_right(&drop, v.dim())?, v)?;
        Ok((v, y))
    }

    fn pred_with_r(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, r: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        let dt = t.f_sub(r)?;
        Ok(net.forward(x_t, t, Cond { y, dt: Some(&dt), gw: None }, None)?.out)
    }
}

impl Interface for MeanFlow {
    fn name(&self) -> &'static str {
        "mean_flow"
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
    /// The instantaneous velocity `n - x` (the JVP target needs the network: see [`Interface::loss`]).
    fn target(&self, x: &Tensor, n: &Tensor, _t: &Tensor) -> Result<Tensor> {
        Ok(n.f_sub(x)?)
    }
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, r: Option<&Tensor>, y: Option<&Tensor>) -> Result<Tensor> {
        let b = check_data(x_t, y)?;
        let r = r.ok_or_else(|| Error::invalid("r", "the interval start r ([B]) for MeanFlow's pred", "none"))?;
        check_time(t, b, 0.0, 1.0, true, "MeanFlow's path runs from data at t = 0 to noise at t = 1")?;
        check_times("r", r, b, 0.0, 1.0, true, "the interval start r lies on the path, in [0, 1]")?;
        self.pred_with_r(net, x_t, t, r, y)
    }
    /// See [`MeanFlowScore`]; a given `r` is ignored by the reference formula (it uses `r = 0`).
    /// At `t = 0` the result is infinite, as in the reference (quirk Q12).
    fn score(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, _r: Option<&Tensor>, y: Option<&Tensor>) -> Result<Tensor> {
        let b = check_data(x_t, y)?;
        check_time(t, b, 0.0, 1.0, true, "MeanFlow's path runs from data at t = 0 to noise at t = 1")?;
        let tb = bcast_right(t, x_t.dim())?;
        let one_minus_t = tb.f_neg()?.f_add_scalar(1.0)?;
        Ok(match self.cfg.score {
            MeanFlowScore::Reference => {
                let u = self.pred_with_r(net, x_t, t, &t.f_zeros_like()?, y)?;
                x_t.f_add(&one_minus_t.f_mul(&u)?)?.f_div(&tb.f_square()?)?.f_neg()?
            }
            MeanFlowScore::Instantaneous => {
                let u = self.pred_with_r(net, x_t, t, t, y)?;
                x_t.f_add(&one_minus_t.f_mul(&u)?)?.f_div(&tb)?.f_neg()?
            }
        })
    }
    fn loss(&self, net: &dyn Backbone, x: &Tensor, y: Option<&Tensor>, rngs: &mut Rngs) -> Result<LossOutput> {
        let b = check_data(x, y)?;
        let device = x.device();
        let (t, r) = self.sample_t_r(b, rngs, device)?;
        let n = self.sample_n(&x.size(), rngs, device)?;
        let x_t = self.sample_x_t(x, &n, &t)?;
        let y = Self::labels(y, b, device)?;
        let v = self.guided_velocity(net, x, &n, &x_t, &t, &y, rngs)?;
        let (v, y) = self.cond_drop(x, &n, &v, &y, rngs)?;
        let primals = [x_t.shallow_clone(), t.shallow_clone(), r.shallow_clone()];
        let tangents = [Some(v.shallow_clone()), Some(t.f_ones_like()?), None];
        let dt = t.f_sub(&r)?;
        let (u, dudt, features) = match self.cfg.jvp {
            JvpBackend::DoubleBackward => {
                let mut features = Vec::new();
                let mut f = |p: &[Tensor]| -> Result<Tensor> {
                    let dt = p[1].f_sub(&p[2])?;
                    let o = net.forward(&p[0], &p[1], Cond { y: Some(&y), dt: Some(&dt), gw: None }, Some(&mut *rngs))?;
                    features = o.features;
                    Ok(o.out)
                };
                let (u, dudt) = jvp(JvpBackend::DoubleBackward, &mut f, &primals, &tangents)?;
                (u, dudt, features)
            }
            JvpBackend::ForwardAd => {
                // The tangent only feeds the stop-gradient target, so it is computed without
                // recording autograd (libtorch would otherwise keep the graph of every tangent
                // op, about twice the forward's, alive through the loss). The network's draws
                // (DiT label dropout) come from a copy of the streams; the primal `u` is then a
                // plain forward with the streams themselves, which draws the same numbers and
                // leaves the counters as one forward does.
                let dudt = {
                    let _ng = tch::no_grad_guard();
                    let mut replay = rngs.fork();
                    let mut f = |p: &[Tensor]| -> Result<Tensor> {
                        let dt = p[1].f_sub(&p[2])?;
                        Ok(net.forward(&p[0], &p[1], Cond { y: Some(&y), dt: Some(&dt), gw: None }, Some(&mut replay))?.out)
                    };
                    jvp(JvpBackend::ForwardAd, &mut f, &primals, &tangents)?.1
                };
                let o = net.forward(&x_t, &t, Cond { y: Some(&y), dt: Some(&dt), gw: None }, Some(&mut *rngs))?;
                (o.out, dudt, o.features)
            }
        };
        let h = bcast_right(&dt.f_clamp(0.0, 1.0)?, x.dim())?;
        let target = v.f_sub(&h.f_mul(&dudt)?)?.f_detach()?;
        let l = sum_flat(&u.f_sub(&target)?.f_square()?)?;
        let weight = l.f_detach()?.f_add_scalar(self.cfg.norm_eps)?.f_pow_tensor_scalar(self.cfg.norm_power)?.f_reciprocal()?;
        let loss = weight.f_mul(&l)?;
        Ok(LossOutput { loss, t, r: Some(r), n, x_t, target, net_out: u, features })
    }
}
