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
//! 3. Guided velocity ([`MeanFlow::insta_velocity`]), the network in eval mode: `v = n - x`.
//!    If `w == 1` and `kappa == 0`, `v` is kept. Otherwise `v_unc = net(x_t, t, neg_y,
//!    dt = 0)`; if `kappa == 0`, `v = v_unc + w (v - v_unc)`; else also `v_c = net(x_t, t,
//!    y, dt = 0)`, the network goes back to train mode, and `v = w v + (1 - w - kappa)
//!    v_unc + kappa v_c`; both only inside `t_min <= t <= t_max`. Quirk Q8: only the
//!    mixture path returns the network to train mode; otherwise it stays in eval mode
//!    for the rest of the step. With the mode an argument of each forward, the JVP forward
//!    of step 5 runs in train mode exactly when `kappa != 0`, as the reference leaves it.
//! 4. Condition drop ([`MeanFlow::cond_drop`], `label_dropout` stream): `m = uniform([B]) < cond_drop_ratio`,
//!    `k = sum(m)`; quirk Q7: the *first k* examples get `y = neg_y` and `v = n - x`
//!    ([`CondDrop::Prefix`], faithful); [`CondDrop::Sampled`] drops the examples whose
//!    draw fell below the ratio.
//! 5. `(u, du/dt) = jvp((x_t, t, r) -> net(x_t, t, dt = t - r, y), (x_t, t, r), (v, 1, 0))`
//!    (exact; [`JvpBackend`]), `target = stop_grad(v - clip(t - r, 0, 1) du/dt)` (eq. 10);
//!    steps 3-5 are [`MeanFlow::target`]. The JVP is taken on `(x_t, t, dt)` with tangents
//!    `(v, 1, 1)`, the same derivative (`dt = t - r`, `dr = 0`), through
//!    [`crate::jvp::network_jvp`].
//!    By default ([`JvpBackend::Auto`]) a backbone with a fused JVP ([`crate::networks::FusedJvp`]:
//!    the probe, the DiT) computes `u` with its graph and `du/dt` without one in a single pass;
//!    another backbone gets the double-backward JVP. With [`JvpBackend::ForwardAd`] the
//!    tangent is computed without autograd recording and `u` by a separate plain forward on
//!    the same draws (same numbers; about half the step's peak memory of double backward, for
//!    the cost of that forward). Every backend draws what one forward draws.
//! 6. `l = sum over non-batch axes (u - target)^2`,
//!    `loss = stop_grad(1 / (l + norm_eps)^norm_power) l` (the adaptive weight, eq. 14).
//!
//! The average velocity ([`AverageVelocity`]) is `u(x_t, t, r) = net(x_t, t, dt = t - r)`;
//! the interface's instantaneous `pred(x_t, t)` is `u(x_t, t, t)` (what Euler and Heun
//! integrate), Euler-jump takes `u` itself; `score` see [`MeanFlowScore`] (quirk Q3). All
//! three run the network in eval mode.
//!
//! Labels: absent labels (`cond.y = None`) and `neg_y` are the null class 1000. A backbone
//! that takes no labels (an unconditional network) is given none: every label it would get is
//! then the null class.

use serde::{Deserialize, Deserializer};
use tch::{Device, Kind, Tensor};

use super::{bcast_right, flat_settings, sum_flat, AverageVelocity, BaseConfig, Interface, LossOutput, Preconditioning, Score, SiT, SiTConfig, Time, TimeDist};
use crate::error::{Error, Result};
use crate::jvp::{network_jvp, JvpBackend, NetTangents};
use crate::networks::{Backbone, Cond, Pass};
use crate::rng::Rngs;
use crate::validate::{self, Checks, Validation};

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
#[derive(Debug, Clone, PartialEq)]
pub struct MeanFlowConfig {
    /// The base settings (`train_time_dist_type`: `uniform` or `logitnormal`, `lognormal` is
    /// refused, as for SiT).
    pub base: BaseConfig,
    /// Accepted and ignored (quirk Q9: the reference does not forward it to its SiT).
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
            base: BaseConfig::default(),
            t_shift_base: 4096.0,
            guidance_scale: 1.0,
            guidance_mixture_ratio: 0.5,
            guidance_t_min: 0.0,
            guidance_t_max: 1.0,
            norm_eps: 1e-3,
            norm_power: 1.0,
            fm_portion: 0.75,
            cond_drop_ratio: 0.5,
            jvp: JvpBackend::Auto,
            cond_drop: CondDrop::Prefix,
            score: MeanFlowScore::Reference,
        }
    }
}

impl<'de> Deserialize<'de> for MeanFlowConfig {
    /// From one flat object: the base keys, `t_shift_base` and MeanFlow's own settings.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        flat_settings(d, MeanFlowConfig::default(), |c, f| {
            c.base.read(f)?;
            f.take("t_shift_base", &mut c.t_shift_base)?;
            f.take("guidance_scale", &mut c.guidance_scale)?;
            f.take("guidance_mixture_ratio", &mut c.guidance_mixture_ratio)?;
            f.take("guidance_t_min", &mut c.guidance_t_min)?;
            f.take("guidance_t_max", &mut c.guidance_t_max)?;
            f.take("norm_eps", &mut c.norm_eps)?;
            f.take("norm_power", &mut c.norm_power)?;
            f.take("fm_portion", &mut c.fm_portion)?;
            f.take("cond_drop_ratio", &mut c.cond_drop_ratio)?;
            f.take("jvp", &mut c.jvp)?;
            f.take("cond_drop", &mut c.cond_drop)?;
            f.take("score", &mut c.score)
        })
    }
}

/// What [`MeanFlow::target`] computes: the network's average velocity `u` (with its graph)
/// and features from the JVP forward, and the stop-gradient regression target.
#[derive(Debug)]
pub struct MeanFlowTarget {
    /// `u(x_t, t, r)` with its autograd graph.
    pub u: Tensor,
    /// The backbone's per-block features from the same forward.
    pub features: Vec<Tensor>,
    /// `stop_grad(v - clip(t - r, 0, 1) du/dt)` (eq. 10).
    pub target: Tensor,
}

/// The MeanFlow interface, built on a [`SiT`] (the reference's `MeanFlowInterface(SiTInterface)`):
/// the path, the time and noise sampling and the preconditioning are SiT's.
#[derive(Debug, Clone)]
pub struct MeanFlow {
    sit: SiT,
    cfg: MeanFlowConfig,
}

/// MeanFlow's time domain.
const WHY: &str = "MeanFlow's path runs from data at t = 0 to noise at t = 1";

fn in_unit(name: &str, v: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        return Err(Error::invalid(name, "a value in [0, 1]", v));
    }
    Ok(())
}

fn null_labels(b: i64, device: Device) -> Result<Tensor> {
    Ok(Tensor::f_full([b], NULL_LABEL, (Kind::Int64, device))?)
}

impl MeanFlow {
    /// Validates the settings.
    pub fn new(cfg: MeanFlowConfig) -> Result<MeanFlow> {
        if cfg.base.train_time_dist_type == TimeDist::LogNormal {
            return Err(Error::Unsupported {
                what: "MeanFlow with train_time_dist_type = lognormal".into(),
                why: "lognormal times are not confined to [0, 1]; the reference refuses them too".into(),
            });
        }
        cfg.base.validate(&[("guidance_scale", cfg.guidance_scale), ("guidance_mixture_ratio", cfg.guidance_mixture_ratio), ("norm_power", cfg.norm_power)])?;
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
        // Q9: the reference builds its SiT without MeanFlow's t_shift_base (SiT's default stays).
        let sit = SiT::new(SiTConfig { base: cfg.base.clone(), ..SiTConfig::default() })?;
        Ok(MeanFlow { sit, cfg })
    }

    /// The settings.
    pub fn config(&self) -> &MeanFlowConfig {
        &self.cfg
    }

    /// The SiT the interface is built on.
    pub fn sit(&self) -> &SiT {
        &self.sit
    }

    fn level(&self) -> Validation {
        self.cfg.base.validation
    }

    /// Draws `[batch]` times from the `time` stream (SiT's `sample_t`).
    pub fn sample_t(&self, batch: i64, rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.sit.sample_t(batch, rngs, device)
    }

    /// Draws noise of `shape` from the `noise` stream (SiT's `sample_n`).
    pub fn sample_n(&self, shape: &[i64], rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.sit.sample_n(shape, rngs, device)
    }

    /// The noisy state `x_t = (1 - t) x + t n` (SiT's `sample_x_t`).
    pub fn sample_x_t(&self, x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.sit.sample_x_t(x, n, t)
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

    /// The conditioning of a forward: the caller's, with the labels `y` when the network
    /// takes labels (none otherwise: every label is the null class then).
    fn cond_with<'a>(net: &dyn Backbone, cond: Cond<'a>, y: &'a Tensor, dt: &'a Tensor) -> Cond<'a> {
        let y = if net.accepts().labels { Some(y) } else { None };
        Cond { y, dt: Some(dt), ..cond }
    }

    /// Refuses a caller's `dt` (MeanFlow passes `dt = t - r` itself) and conditioning the
    /// network does not take.
    fn check_cond(net: &dyn Backbone, cond: &Cond<'_>, neg_y: Option<&Tensor>) -> Result<()> {
        if cond.dt.is_some() {
            return Err(Error::invalid("dt", "none (MeanFlow passes the network dt = t - r itself)", "a tensor"));
        }
        validate::conditioning(&net.accepts(), &Cond { y: cond.y.or(neg_y), ..*cond })
    }

    /// Step 3, the reference's `insta_velocity(x, n, t, *args, y, neg_y)`: the guided
    /// instantaneous velocity `v` (no gradient; the network in eval mode, quirk Q8), with the
    /// labels `y` and `neg_y` it used (absent ones are the null class).
    pub fn insta_velocity(&self, net: &dyn Backbone, x: &Tensor, n: &Tensor, t: &Tensor, cond: Cond<'_>, neg_y: Option<&Tensor>, rngs: &mut Rngs) -> Result<(Tensor, Tensor, Tensor)> {
        validate::vector("t", t)?;
        Self::check_cond(net, &cond, neg_y)?;
        let x_t = self.sample_x_t(x, n, t)?;
        self.insta_velocity_at(net, x, n, &x_t, t, cond, neg_y, rngs)
    }

    #[allow(clippy::too_many_arguments)]
    fn insta_velocity_at(&self, net: &dyn Backbone, x: &Tensor, n: &Tensor, x_t: &Tensor, t: &Tensor, cond: Cond<'_>, neg_y: Option<&Tensor>, rngs: &mut Rngs) -> Result<(Tensor, Tensor, Tensor)> {
        let _ng = tch::no_grad_guard();
        let b = validate::vector("t", t)?;
        let device = t.device();
        let y = match cond.y {
            Some(y) => y.f_to_kind(Kind::Int64)?,
            None => null_labels(b, device)?,
        };
        let neg_y = match neg_y {
            Some(y) => y.f_to_kind(Kind::Int64)?,
            None => null_labels(b, device)?,
        };
        let v = n.f_sub(x)?;
        let (w, kappa) = (self.cfg.guidance_scale, self.cfg.guidance_mixture_ratio);
        if w == 1.0 && kappa == 0.0 {
            return Ok((v, y, neg_y));
        }
        let zeros = t.f_zeros_like()?;
        let eval = |rngs: &mut Rngs, labels: &Tensor| -> Result<Tensor> {
            let pass = Pass { train: false, rngs: Some(rngs), validation: self.level() };
            Ok(net.call(x_t, t, Self::cond_with(net, cond, labels, &zeros), pass)?.out)
        };
        let v_unc = eval(rngs, &neg_y)?;
        let guided = if kappa == 0.0 {
            v_unc.f_add(&v.f_sub(&v_unc)?.f_mul_scalar(w)?)?
        } else {
            let v_c = eval(rngs, &y)?;
            v.f_mul_scalar(w)?.f_add(&v_unc.f_mul_scalar(1.0 - w - kappa)?)?.f_add(&v_c.f_mul_scalar(kappa)?)?
        };
        let inside = t.f_ge(self.cfg.guidance_t_min)?.f_logical_and(&t.f_le(self.cfg.guidance_t_max)?)?;
        Ok((guided.f_where_self(&bcast_right(&inside, v.dim())?, &v)?, y, neg_y))
    }

    /// Quirk Q8: the mode the reference leaves the network in after `insta_velocity`, in which
    /// the JVP forward runs: train mode only after the mixture path (`kappa != 0`).
    pub fn jvp_in_train_mode(&self) -> bool {
        self.cfg.guidance_mixture_ratio != 0.0
    }

    /// Step 4, the reference's `cond_drop(x, n, v, y, neg_y)`: the condition drop (one
    /// `label_dropout` draw); returns the new `(v, y)`.
    pub fn cond_drop(&self, x: &Tensor, n: &Tensor, v: &Tensor, y: &Tensor, neg_y: &Tensor, rngs: &mut Rngs) -> Result<(Tensor, Tensor)> {
        let b = validate::vector("y", y)?;
        validate::length("neg_y", neg_y, b)?;
        let device = y.device();
        let m = rngs.uniform("label_dropout", &[b], 0.0, 1.0, device)?.f_lt(self.cfg.cond_drop_ratio)?;
        let drop = match self.cfg.cond_drop {
            CondDrop::Prefix => {
                let k = m.f_sum(Kind::Int64)?;
                Tensor::f_arange(b, (Kind::Int64, device))?.f_lt_tensor(&k)?
            }
            CondDrop::Sampled => m,
        };
        let y = neg_y.f_to_kind(Kind::Int64)?.f_where_self(&drop, &y.f_to_kind(Kind::Int64)?)?;
        let v = n.f_sub(x)?.f_where_self(&bcast_right(&drop, v.dim())?, v)?;
        Ok((v, y))
    }

    /// Steps 3-5, the reference's `target(x, n, t, r, *args, y, neg_y)`: the guided velocity,
    /// the condition drop, and the JVP of `u` along `(v, 1, 0)` on `(x_t, t, r)`; returns `u`
    /// (with its graph) and its features, and the stop-gradient target
    /// `v - clip(t - r, 0, 1) du/dt`. Draws: the guidance forwards', `label_dropout` once, the
    /// JVP forward's (in train mode only when `kappa != 0`, quirk Q8).
    #[allow(clippy::too_many_arguments)]
    pub fn target(&self, net: &dyn Backbone, x: &Tensor, n: &Tensor, t: &Tensor, r: &Tensor, cond: Cond<'_>, neg_y: Option<&Tensor>, rngs: &mut Rngs) -> Result<MeanFlowTarget> {
        let b = validate::vector("t", t)?;
        validate::length("r", r, b)?;
        Self::check_cond(net, &cond, neg_y)?;
        let x_t = self.sample_x_t(x, n, t)?;
        self.target_at(net, x, n, &x_t, t, r, cond, neg_y, rngs)
    }

    #[allow(clippy::too_many_arguments)]
    fn target_at(&self, net: &dyn Backbone, x: &Tensor, n: &Tensor, x_t: &Tensor, t: &Tensor, r: &Tensor, cond: Cond<'_>, neg_y: Option<&Tensor>, rngs: &mut Rngs) -> Result<MeanFlowTarget> {
        let (v, y, neg_y) = self.insta_velocity_at(net, x, n, x_t, t, cond, neg_y, rngs)?;
        let (v, y) = self.cond_drop(x, n, &v, &y, &neg_y, rngs)?;
        let dt = t.f_sub(r)?;
        let ones = t.f_ones_like()?;
        let c = Self::cond_with(net, cond, &y, &dt);
        let tangents = NetTangents { x: &v, t: &ones, dt: Some(&ones) };
        let (train, level) = (self.jvp_in_train_mode(), self.level());
        let (u, dudt, features) = match self.cfg.jvp.resolve(net)? {
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
                    network_jvp(JvpBackend::ForwardAd, net, x_t, t, c, tangents, Pass { train, rngs: Some(&mut replay), validation: level })?.1
                };
                let o = net.call(x_t, t, c, Pass { train, rngs: Some(rngs), validation: level })?;
                (o.out, dudt, o.features)
            }
            // Fused (one pass: the primal with its graph, the tangent without) or double backward.
            backend => {
                let (o, dudt) = network_jvp(backend, net, x_t, t, c, tangents, Pass { train, rngs: Some(rngs), validation: level })?;
                (o.out, dudt, o.features)
            }
        };
        let h = bcast_right(&dt.f_clamp(0.0, 1.0)?, x.dim())?;
        let target = v.f_sub(&h.f_mul(&dudt)?)?.f_detach()?;
        Ok(MeanFlowTarget { u, features, target })
    }

    /// The loss of [`Interface::loss`] with the reference's `neg_y` keyword (the labels of the
    /// unconditional guidance pass and of dropped examples; `None`: the null class).
    pub fn loss_with_neg_y(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, neg_y: Option<&Tensor>, rngs: &mut Rngs) -> Result<LossOutput> {
        let mut c = Checks::new(self.level());
        let b = validate::data(&mut c, x, cond.y)?;
        if let Some(neg_y) = neg_y {
            validate::label_shape(neg_y, b, x.device(), "that of x")?;
        }
        c.finish()?;
        Self::check_cond(net, &cond, neg_y)?;
        let device = x.device();
        let (t, r) = self.sample_t_r(b, rngs, device)?;
        let n = self.sample_n(&x.size(), rngs, device)?;
        let x_t = self.sample_x_t(x, &n, &t)?;
        let MeanFlowTarget { u, features, target } = self.target_at(net, x, &n, &x_t, &t, &r, cond, neg_y, rngs)?;
        let l = sum_flat(&u.f_sub(&target)?.f_square()?)?;
        let weight = l.f_detach()?.f_add_scalar(self.cfg.norm_eps)?.f_pow_tensor_scalar(self.cfg.norm_power)?.f_reciprocal()?;
        let loss = weight.f_mul(&l)?;
        Ok(LossOutput { loss, t, r: Some(r), n, x_t, target, net_out: u, features })
    }

    /// `(u, t)`: the average velocity and the times as a `[B]` tensor.
    fn u_at(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, r: Option<Time<'_>>, cond: Cond<'_>) -> Result<(Tensor, Tensor)> {
        if cond.dt.is_some() {
            return Err(Error::invalid("dt", "none (MeanFlow passes the network dt = t - r itself)", "a tensor"));
        }
        let mut c = Checks::new(self.level());
        let b = validate::data(&mut c, x_t, cond.y)?;
        let t = validate::time(&mut c, "t", t, b, x_t, 0.0, 1.0, true, WHY)?;
        let r = match r {
            Some(r) => Some(validate::time(&mut c, "r", r, b, x_t, 0.0, 1.0, true, "the interval start r lies on the path, in [0, 1]")?),
            None => None,
        };
        c.finish()?;
        let dt = match &r {
            Some(r) => t.f_sub(r)?,
            None => t.f_zeros_like()?, // r = t: dt = t - t = 0 exactly
        };
        let u = net.call(x_t, &t, cond.with_dt(Some(&dt)), Pass::eval().with_validation(self.level()))?.out;
        Ok((u, t))
    }
}

impl Preconditioning for MeanFlow {
    fn c_in(&self, t: &Tensor) -> Result<Tensor> {
        self.sit.c_in(t)
    }
    fn c_out(&self, t: &Tensor) -> Result<Tensor> {
        self.sit.c_out(t)
    }
    fn c_skip(&self, t: &Tensor) -> Result<Tensor> {
        self.sit.c_skip(t)
    }
    fn c_noise(&self, t: &Tensor) -> Result<Tensor> {
        self.sit.c_noise(t)
    }
}

impl Interface for MeanFlow {
    fn name(&self) -> &'static str {
        "mean_flow"
    }
    /// The instantaneous velocity `u(x_t, t, t) = net(x_t, t, dt = 0)`.
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        Ok(self.u_at(net, x_t, t, None, cond)?.0)
    }
    fn loss(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs) -> Result<LossOutput> {
        self.loss_with_neg_y(net, x, cond, None, rngs)
    }
}

impl AverageVelocity for MeanFlow {
    /// `u(x_t, t, r) = net(x_t, t, dt = t - r)`.
    fn average_velocity(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, r: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        Ok(self.u_at(net, x_t, t, Some(r), cond)?.0)
    }
}

impl Score for MeanFlow {
    /// See [`MeanFlowScore`]. At `t = 0` the result is infinite, as in the reference (quirk Q12).
    fn score(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        match self.cfg.score {
            MeanFlowScore::Reference => {
                let (u, t) = self.u_at(net, x_t, t, Some(Time::Scalar(0.0)), cond)?;
                let tb = bcast_right(&t, x_t.dim())?;
                Ok(x_t.f_add(&tb.f_neg()?.f_add_scalar(1.0)?.f_mul(&u)?)?.f_div(&tb.f_square()?)?.f_neg()?)
            }
            MeanFlowScore::Instantaneous => {
                let (u, t) = self.u_at(net, x_t, t, None, cond)?;
                SiT::score_from_velocity(x_t, &t, &u)
            }
        }
    }
}
