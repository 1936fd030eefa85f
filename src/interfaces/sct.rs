//! sCT: continuous-time consistency training in the TrigFlow parametrization (Lu & Song,
//! "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models",
//! arXiv:2410.11081, ICLR 2025: §3 TrigFlow, §4 the stabilised objective, Algorithm 1).
//!
//! The reference (`diffuse_nnx`) declares `sCTInterface(EDMInterface)` and leaves it
//! empty, so this file — with its JAX restatement `spec/diffuse_spec_ref/interfaces/
//! consistency.py` and the `sct_*` fixtures — is the crate's own specification. The
//! constructor keeps the reference's argument names (inherited from EDM): `x_sigma` is
//! TrigFlow's `sigma_d`, `t_mu` / `t_sigma` are the proposal's `P_mean` / `P_std`.
//! Equation numbers of the paper could not be verified offline; formulas cite the section
//! and the step of Algorithm 1 (the paper's training loop, whose steps are labelled "tangent
//! warmup", "JVP rearrangement", "tangent normalization", "adaptive weighting") instead.
//!
//! ## Loss (per example), in order of evaluation
//!
//! With `sigma_d = x_sigma`, `c = tangent_norm_const`, `H = tangent_warmup_steps`, `D` the
//! number of values per example, and `step` the caller's training step (the training loop's
//! [`Interface::on_step`], or [`Sct::set_step`]):
//!
//! 1. `sigma = sample_t` of EDM from the `time` stream (`lognormal`: `exp(N t_sigma + t_mu)`,
//!    the paper's `e^tau, tau ~ N(P_mean, P_std^2)`), `t = arctan(sigma / sigma_d)`
//!    (Algorithm 1, sampling of `tau` and `t`).
//! 2. `n = N * n_sigma + n_mu` from the `noise` stream (`n_mu = 0`, `n_sigma = 1` are
//!    required), `z = sigma_d n`, `x_t = cos(t) x + sin(t) z` (Algorithm 1).
//! 3. The tangent input `dx_t/dt = cos(t) z - sin(t) x` (Algorithm 1, consistency-training
//!    branch; sCD replaces it by the teacher's velocity, see `scd.rs`).
//! 4. One JVP of the network `F(x_in, t_in)` (`c_noise(t) = t`, §4.1) at
//!    `(x_t / sigma_d, t)` with tangents `(cos(t) sin(t) dx_t/dt, cos(t) sin(t) sigma_d)`:
//!    it returns `F` (with its graph) and `J = sigma_d cos(t) sin(t) dF/dt` (the paper's
//!    "JVP rearrangement", §4.2 / Algorithm 1), exact ([`JvpBackend`]).
//! 5. `r = min(1, step / H)` (`r = 1` when `H = 0`; "tangent warmup", §4.2 / Algorithm 1) and
//!    `g = -cos^2(t) (sigma_d F- - dx_t/dt) - r (cos(t) sin(t) x_t + J)` with `F- =
//!    stop_grad(F)` (`g = cos(t) df-/dt`, Algorithm 1, "JVP rearrangement").
//! 6. `g <- g / (||g|| + c)`, the L2 norm over each example (tangent normalization, §4.2,
//!    Algorithm 1).
//! 7. `w = w_phi(t)` from the interface's [`LogVarHead`], and
//!    `loss = exp(w) / D * ||F - F- - g||^2 - w` ("adaptive weighting", §4.2 / Algorithm 1).
//!
//! Recorded intermediates ([`LossOutput`]): `t` (TrigFlow time), `n`, `x_t`,
//! `target = F- + g` (the stop-gradient regression target of `F`), `net_out = F`.
//! Randomness: `time` once (`[B]`), then `noise` once (`x.shape`), then whatever the network
//! draws; nothing else.
//!
//! ## Log-variance head (a documented choice)
//!
//! The paper trains `w_phi(t)` "alongside" the model (§4.2, "adaptive weighting") without
//! fixing its form. Here it is owned by the interface and is a linear function of a fixed
//! Fourier embedding of `c_noise(t) = t`:
//! `w_phi(t) = [sin(t f), cos(t f)] . W + b`, `W [2K, 1]`, `b [1]`, `f [K]` a buffer
//! (default `f = exp(linspace(0, 3, K))`, `K = 8`, `W = b = 0`, so `w = 0` at the start).
//! Golden files: `param.logvar.W`, `param.logvar.b`, `buffer.logvar.freqs`.
//!
//! ## Prediction and sampling
//!
//! `pred(x_t, t) = f(x_t, t) = cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, t)`, the
//! consistency function (§3; the reference's docstring "x = D"); `f(x, 0) = x`, the network in
//! eval mode. sCT has no score (it implements no [`super::Score`], so Euler-Maruyama cannot be
//! given one), as the reference raises. Sampling:
//! [`sample_one_step`] and [`sample_multistep`] (free functions beside the interface: the
//! `Sampler` trait is the reference's ODE/SDE loop, which consistency sampling does not follow).
//! Coefficients: `c_in = 1 / sigma_d`, `c_skip = cos(t)`, `c_out = -sigma_d sin(t)`,
//! `c_noise = t`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use tch::{Device, Kind, Tensor};

use super::trigflow;
use super::{bcast_right, flat_settings, sum_flat_as, BaseConfig, Fields, Interface, LossOutput, Preconditioning, Time};
use crate::error::{Error, Result};
use crate::jvp::{network_jvp, JvpBackend, NetTangents};
use crate::networks::{Backbone, Cond, Pass};
use crate::rng::Rngs;
use crate::validate::{self, Checks, Validation};

/// `pi / 2` rounded to float32 (`1.5707964`), the largest TrigFlow time accepted: a float32
/// time of "pi / 2" is this value, slightly above the real number.
pub const T_MAX: f64 = std::f32::consts::FRAC_PI_2 as f64;

/// The intermediate time of two-step sampling, `t = 1.1` (Lu & Song 2024, §5 / appendix,
/// "2-step sampling").
pub const TWO_STEP_T_MID: f64 = 1.1;

/// The one-step sampling time `t_max = arctan(sigma_max / sigma_d)` with EDM's
/// `sigma_max = 80` (Lu & Song 2024, appendix; `1.5645` for `sigma_d = 0.5`).
pub fn default_t_max(sigma_d: f64) -> f64 {
    (80.0 / sigma_d).atan()
}

/// Settings of [`Sct`]: the reference's names (those of its `EDMInterface`) with the paper's
/// defaults (Lu & Song 2024, §4 and appendix, CIFAR-10 sCT), plus the sCM settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SctConfig {
    /// The base settings, with the paper's defaults ([`BaseConfig::sct`]): the distribution of
    /// the EDM noise level `sigma` (`lognormal`, the paper's proposal), `t_mu` = `P_mean`
    /// (-1.0), `t_sigma` = `P_std` (1.4), `x_sigma` = `sigma_d` (0.5); TrigFlow's noise is
    /// `z = sigma_d n`, so only `n_mu = 0`, `n_sigma = 1` are accepted.
    pub base: BaseConfig,
    /// `H`, the tangent warm-up length in steps: `r = min(1, step / H)`; 0 disables the
    /// warm-up (`r = 1`). Default 10000.
    pub tangent_warmup_steps: u64,
    /// `c` of the tangent normalization `g / (||g|| + c)` (default 0.1).
    pub tangent_norm_const: f64,
    /// JVP implementation (not a reference setting; both give the same values).
    pub jvp: JvpBackend,
}

impl Default for SctConfig {
    fn default() -> Self {
        SctConfig { base: BaseConfig::sct(), tangent_warmup_steps: 10_000, tangent_norm_const: 0.1, jvp: JvpBackend::Auto }
    }
}

impl<'de> Deserialize<'de> for SctConfig {
    /// From one flat object: the base keys and the sCM settings.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        flat_settings(d, SctConfig::default(), |c, f| c.read(f))
    }
}

impl SctConfig {
    pub(super) fn read(&mut self, f: &mut Fields) -> std::result::Result<(), String> {
        self.base.read(f)?;
        f.take("tangent_warmup_steps", &mut self.tangent_warmup_steps)?;
        f.take("tangent_norm_const", &mut self.tangent_norm_const)?;
        f.take("jvp", &mut self.jvp)
    }

    pub(super) fn validate(&self) -> Result<()> {
        let b = &self.base;
        for (name, v) in [("t_sigma", b.t_sigma), ("x_sigma", b.x_sigma)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::invalid(name, "a finite value > 0", v));
            }
        }
        if !b.t_mu.is_finite() {
            return Err(Error::invalid("t_mu", "a finite value", b.t_mu));
        }
        if b.n_mu != 0.0 || b.n_sigma != 1.0 {
            return Err(Error::Unsupported {
                what: format!("n_mu = {}, n_sigma = {} for a TrigFlow interface", b.n_mu, b.n_sigma),
                why: "TrigFlow's noise is z = sigma_d n with n ~ N(0, 1); scale the noise through x_sigma".into(),
            });
        }
        if !(self.tangent_norm_const.is_finite() && self.tangent_norm_const > 0.0) {
            return Err(Error::invalid("tangent_norm_const", "a finite value > 0", self.tangent_norm_const));
        }
        Ok(())
    }
}

/// The learned log-variance `w_phi(t) = [sin(t f), cos(t f)] . W + b` of the adaptive
/// weighting (Lu & Song 2024, §4.2, "adaptive weighting"; form chosen here, see the module
/// docs). `W` (`[2K, 1]`) and `b` (`[1]`) are trainable leaves; `f` (`[K]`) is fixed.
#[derive(Debug)]
pub struct LogVarHead {
    w: Tensor,
    b: Tensor,
    freqs: Tensor,
}

impl LogVarHead {
    /// Builds the head from its arrays (float32 or float64, one dtype), checking shapes;
    /// `w` and `b` become leaves that require gradients.
    pub fn new(w: Tensor, b: Tensor, freqs: Tensor) -> Result<LogVarHead> {
        let kind = freqs.kind();
        if !matches!(kind, Kind::Float | Kind::Double) {
            return Err(Error::invalid("logvar.freqs", "float32 or float64", format!("{kind:?}")));
        }
        let fs = freqs.size();
        if fs.len() != 1 || fs[0] < 1 {
            return Err(Error::invalid("logvar.freqs", "shape [K] with K >= 1", format!("{fs:?}")));
        }
        let k = fs[0];
        if w.size() != [2 * k, 1] {
            return Err(Error::invalid("logvar.W", format!("shape [{}, 1]", 2 * k), format!("{:?}", w.size())));
        }
        if b.size() != [1] {
            return Err(Error::invalid("logvar.b", "shape [1]", format!("{:?}", b.size())));
        }
        for (name, p) in [("logvar.W", &w), ("logvar.b", &b)] {
            if p.kind() != kind {
                return Err(Error::invalid(name, format!("dtype {kind:?} (that of logvar.freqs)"), format!("{:?}", p.kind())));
            }
            if p.device() != freqs.device() {
                return Err(Error::invalid(name, format!("device {:?} (that of logvar.freqs)", freqs.device()), format!("{:?}", p.device())));
            }
        }
        Ok(LogVarHead { w: w.f_detach()?.set_requires_grad(true), b: b.f_detach()?.set_requires_grad(true), freqs })
    }

    /// The default head: `K` frequencies `exp(linspace(0, 3, K))`, `W = 0`, `b = 0` (so
    /// `w_phi = 0` and the loss starts as the plain mean square).
    pub fn init(k: i64, device: Device, kind: Kind) -> Result<LogVarHead> {
        if k < 1 {
            return Err(Error::invalid("k", "at least 1 frequency", k));
        }
        let freqs = Tensor::f_linspace(0.0, 3.0, k, (kind, device))?.f_exp()?;
        LogVarHead::new(Tensor::f_zeros([2 * k, 1], (kind, device))?, Tensor::f_zeros([1], (kind, device))?, freqs)
    }

    /// `w_phi(t)` for `t` of shape `[B]`, shape `[B]`.
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        if t.dim() != 1 {
            return Err(Error::invalid("t", "a [B] vector", format!("{:?}", t.size())));
        }
        let a = t.f_unsqueeze(-1)?.f_mul(&self.freqs)?;
        let emb = Tensor::f_cat(&[a.f_sin()?, a.f_cos()?], -1)?;
        Ok(emb.f_matmul(&self.w)?.f_add(&self.b)?.f_squeeze_dim(-1)?)
    }

    /// The trainable parameters by path: `logvar.W`, `logvar.b`.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![("logvar.W".into(), self.w.shallow_clone()), ("logvar.b".into(), self.b.shallow_clone())]
    }

    /// All arrays by path, buffers included (`logvar.W`, `logvar.b`, `logvar.freqs`).
    pub fn arrays(&self) -> BTreeMap<String, Tensor> {
        let mut m = BTreeMap::new();
        for (k, v) in self.parameters() {
            m.insert(k, v);
        }
        m.insert("logvar.freqs".into(), self.freqs.shallow_clone());
        m
    }
}

/// The sCT interface: settings, the interface's own log-variance head, and the training step
/// that drives the tangent warm-up (explicit state: the caller advances it).
#[derive(Debug)]
pub struct Sct {
    cfg: SctConfig,
    head: LogVarHead,
    step: u64,
}

/// A function giving the tangent input `dx_t/dt` from `(x, z, x_t, t, y)`; `None` means
/// sCT's conditional velocity `cos(t) z - sin(t) x`.
pub(super) type TangentFn<'a> = &'a dyn Fn(&Tensor, &Tensor, &Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor>;

impl Sct {
    /// Validates the settings and takes the log-variance head (see [`LogVarHead::init`] for the
    /// default one). The step starts at 0.
    pub fn new(cfg: SctConfig, head: LogVarHead) -> Result<Sct> {
        cfg.validate()?;
        Ok(Sct { cfg, head, step: 0 })
    }

    /// [`Sct::new`] with the default head ([`LogVarHead::init`], `K = 8`, float32) on `device`.
    pub fn with_default_head(cfg: SctConfig, device: Device) -> Result<Sct> {
        Sct::new(cfg, LogVarHead::init(8, device, Kind::Float)?)
    }

    /// The settings.
    pub fn config(&self) -> &SctConfig {
        &self.cfg
    }

    /// The log-variance head.
    pub fn head(&self) -> &LogVarHead {
        &self.head
    }

    /// The training step used by [`Interface::loss`] for the tangent warm-up (set by
    /// [`Interface::on_step`] or [`Sct::set_step`]).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Sets the training step (the caller advances it once per optimizer step).
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// The warm-up factor `r = min(1, step / H)`, `r = 1` when `H = 0` (Lu & Song 2024, §4.2,
    /// "tangent warmup"; Algorithm 1).
    pub fn warmup_ratio(&self, step: u64) -> f64 {
        let h = self.cfg.tangent_warmup_steps;
        if h == 0 {
            1.0
        } else {
            (step as f64 / h as f64).min(1.0)
        }
    }

    fn sigma_d(&self) -> f64 {
        self.cfg.base.x_sigma
    }

    fn level(&self) -> Validation {
        self.cfg.base.validation
    }

    /// `t = arctan(sigma / sigma_d)` with `sigma` drawn as EDM draws it (Algorithm 1;
    /// reference `sample_t`).
    pub fn sample_t(&self, batch: i64, rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        let sigma = self.cfg.base.sample_t(batch, rngs, device)?;
        trigflow::time_from_sigma(&sigma, self.sigma_d())
    }

    /// Draws noise of `shape` from the `noise` stream (reference `sample_n`).
    pub fn sample_n(&self, shape: &[i64], rngs: &mut Rngs, device: Device) -> Result<Tensor> {
        self.cfg.base.sample_n(shape, rngs, device)
    }

    /// `x_t = cos(t) x + sin(t) sigma_d n` (Lu & Song 2024, §3).
    pub fn sample_x_t(&self, x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor> {
        trigflow::state(x, &n.f_mul_scalar(self.sigma_d())?, t)
    }

    /// The conditional velocity `dx_t/dt = cos(t) sigma_d n - sin(t) x` that sCT feeds the
    /// JVP (Algorithm 1, consistency training); the regression target of `F` needs the
    /// network (see [`Sct::loss_at`]).
    pub fn target(&self, x: &Tensor, n: &Tensor, t: &Tensor) -> Result<Tensor> {
        trigflow::velocity(x, &n.f_mul_scalar(self.sigma_d())?, t)
    }

    /// The network output `F(x_t / sigma_d, c_noise(t))` (Lu & Song 2024, §3), in eval mode.
    pub fn network_output(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, cond: Cond<'_>) -> Result<Tensor> {
        Ok(net.call(&x_t.f_div_scalar(self.sigma_d())?, t, cond, Pass::eval().with_validation(self.level()))?.out)
    }

    /// The consistency function `f(x_t, t) = cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, t)`
    /// (Lu & Song 2024, §3), for float32 or float64 inputs, without input checks beyond
    /// shapes; the network in eval mode.
    pub fn consistency(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, cond: Cond<'_>) -> Result<Tensor> {
        let f = self.network_output(net, x_t, t, cond)?;
        trigflow::consistency(x_t, t, &f, self.sigma_d())
    }

    /// The tangent `g = -cos^2(t) (sigma_d F- - dx_t/dt) - r (cos(t) sin(t) x_t + J)` with
    /// `J = sigma_d cos(t) sin(t) dF-/dt` from [`Sct::network_jvp`]; at `r = 1` it is
    /// `cos(t) df-/dt` along the trajectory (Lu & Song 2024, §4.1-4.2, Algorithm 1,
    /// "JVP rearrangement"). All inputs are treated as constants.
    pub fn tangent(&self, f_sg: &Tensor, jvp_out: &Tensor, x_t: &Tensor, dxdt: &Tensor, t: &Tensor, r: f64) -> Result<Tensor> {
        let nd = x_t.dim();
        let c = bcast_right(&t.f_cos()?, nd)?;
        let s = bcast_right(&t.f_sin()?, nd)?;
        let g1 = c.f_mul(&c)?.f_neg()?.f_mul(&f_sg.f_mul_scalar(self.sigma_d())?.f_sub(dxdt)?)?;
        let g2 = c.f_mul(&s)?.f_mul(x_t)?.f_add(jvp_out)?;
        Ok(g1.f_sub(&g2.f_mul_scalar(r)?)?)
    }

    /// Tangent normalization `g / (||g|| + c)`, the L2 norm taken over each example
    /// (Lu & Song 2024, §4.2; Algorithm 1, "tangent normalization").
    pub fn normalize(&self, g: &Tensor) -> Result<Tensor> {
        let g2 = g.f_square()?;
        let norm = sum_flat_as(&g2, g2.kind())?.f_sqrt()?;
        Ok(g.f_div(&bcast_right(&norm.f_add_scalar(self.cfg.tangent_norm_const)?, g.dim())?)?)
    }

    /// `(F, J, features)`: the network output `F(x_t / sigma_d, t)` with its graph and
    /// `J = sigma_d cos(t) sin(t) dF/dt` along `dx_t/dt`, from one JVP with tangents
    /// `(cos(t) sin(t) dx_t/dt, cos(t) sin(t) sigma_d)` at `(x_t / sigma_d, t)` (Lu & Song 2024,
    /// §4.2 "JVP rearrangement"; Algorithm 1), the network run with `pass`. `J` is detached.
    pub fn network_jvp(&self, net: &dyn Backbone, x_t: &Tensor, t: &Tensor, dxdt: &Tensor, cond: Cond<'_>, pass: Pass<'_>) -> Result<(Tensor, Tensor, Vec<Tensor>)> {
        let sd = self.sigma_d();
        let cs = t.f_cos()?.f_mul(&t.f_sin()?)?;
        let tan_x = bcast_right(&cs, x_t.dim())?.f_mul(dxdt)?;
        let tan_t = cs.f_mul_scalar(sd)?;
        let x_in = x_t.f_div_scalar(sd)?;
        let (o, j) = network_jvp(self.cfg.jvp, net, &x_in, t, cond, NetTangents { x: &tan_x, t: &tan_t, dt: None }, pass)?;
        Ok((o.out, j, o.features))
    }

    /// The loss at an explicit training `step` (see the module docs for the steps); the
    /// network in train mode.
    pub fn loss_at(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs, step: u64) -> Result<LossOutput> {
        self.scm_loss(net, x, cond, rngs, step, None)
    }

    /// The shared sCT / sCD loss; `tangent` gives `dx_t/dt` (sCD's teacher), `None` = sCT's.
    pub(super) fn scm_loss(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs, step: u64, tangent: Option<TangentFn<'_>>) -> Result<LossOutput> {
        let mut c = Checks::new(self.level());
        let b = validate::data(&mut c, x, cond.y)?;
        c.finish()?;
        let device = x.device();
        let t = self.sample_t(b, rngs, device)?;
        let n = self.sample_n(&x.size(), rngs, device)?;
        let z = n.f_mul_scalar(self.sigma_d())?;
        let x_t = trigflow::state(x, &z, &t)?;
        let dxdt = match tangent {
            None => trigflow::velocity(x, &z, &t)?,
            Some(f) => {
                let _ng = tch::no_grad_guard();
                f(x, &z, &x_t, &t, cond.y)?.f_detach()?
            }
        };
        let pass = Pass::train(rngs).with_validation(self.level());
        let (big_f, jvp_out, features) = self.network_jvp(net, &x_t, &t, &dxdt, cond, pass)?;
        let f_sg = big_f.f_detach()?;
        let r = self.warmup_ratio(step);
        let g = self.normalize(&self.tangent(&f_sg, &jvp_out, &x_t, &dxdt, &t, r)?)?.f_detach()?;
        let w = self.head.forward(&t)?;
        let d: i64 = x.size().iter().skip(1).product();
        let sq = big_f.f_sub(&f_sg)?.f_sub(&g)?.f_square()?;
        let l = sum_flat_as(&sq, sq.kind())?;
        let loss = w.f_exp()?.f_div_scalar(d as f64)?.f_mul(&l)?.f_sub(&w)?;
        let target = f_sg.f_add(&g)?;
        Ok(LossOutput { loss, t, r: None, n, x_t, target, net_out: big_f, features })
    }

    /// The checked inputs of `pred`: the times as a `[B]` tensor in `[0, pi/2]`.
    pub(super) fn checked(&self, x_t: &Tensor, t: Time<'_>, cond: &Cond<'_>) -> Result<Tensor> {
        let mut c = Checks::new(self.level());
        let b = validate::data(&mut c, x_t, cond.y)?;
        let t = validate::time(&mut c, "t", t, b, x_t, 0.0, T_MAX, true, "TrigFlow time in [0, pi/2]")?;
        c.finish()?;
        Ok(t)
    }
}

impl Preconditioning for Sct {
    /// `c_in = 1 / sigma_d` (Lu & Song 2024, §3).
    fn c_in(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.f_ones_like()?.f_div_scalar(self.sigma_d())?)
    }
    /// `c_out = -sigma_d sin(t)` (Lu & Song 2024, §3).
    fn c_out(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.f_sin()?.f_mul_scalar(-self.sigma_d())?)
    }
    /// `c_skip = cos(t)` (Lu & Song 2024, §3).
    fn c_skip(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.f_cos()?)
    }
    /// `c_noise = t` (Lu & Song 2024, §4.1, identity time transformation).
    fn c_noise(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.shallow_clone())
    }
}

impl Interface for Sct {
    fn name(&self) -> &'static str {
        "sct"
    }
    /// The consistency function `f(x_t, t)` (Lu & Song 2024, §3), `t` in `[0, pi/2]`.
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        let t = self.checked(x_t, t, &cond)?;
        self.consistency(net, x_t, &t, cond)
    }
    /// The sCT loss at the interface's current step; see the module docs.
    fn loss(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs) -> Result<LossOutput> {
        self.loss_at(net, x, cond, rngs, self.step)
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.head.parameters()
    }
    /// Sets the step of the tangent warm-up ([`Sct::set_step`]).
    fn on_step(&mut self, step: u64) {
        self.step = step;
    }
}

/// One-step consistency sampling: `x_0 = f(sigma_d noise, t_max)` (Lu & Song 2024, §3 and
/// appendix, "sampling"; `t_max` is [`default_t_max`] in the paper, `pi/2` also works).
/// `noise` is unit Gaussian `[B, ...]` (float32), scaled here by `sigma_d`. Works for any
/// TrigFlow consistency model (`iface` is an [`Sct`] or the `Sct` inside an `Scd`).
///
/// A free function rather than a [`crate::samplers::Sampler`]: that trait is the reference's
/// ODE/SDE loop (its time grids, the noise scaled by the grid's first point, a last step that
/// never calls the model), which consistency sampling does not follow.
pub fn sample_one_step(iface: &Sct, net: &dyn Backbone, noise: &Tensor, y: Option<&Tensor>, t_max: f64) -> Result<Tensor> {
    sample_multistep(iface, net, noise, y, &[t_max], None)
}

/// Multistep consistency sampling (Lu & Song 2024, appendix; Song et al. 2023, Algorithm 1):
/// `x = sigma_d noise`; for each `t_i` of the decreasing `times`: `x_0 = f(x, t_i)`; before
/// the next time, `x = cos(t_{i+1}) x_0 + sin(t_{i+1}) sigma_d eps` with fresh `eps ~ N(0, I)`
/// drawn from the `default` stream of `rngs` (one draw of `noise.shape` per intermediate
/// time). Two steps are `times = [default_t_max(sigma_d), TWO_STEP_T_MID]`. Returns the last `x_0`.
///
/// A free function for the reason given at [`sample_one_step`].
pub fn sample_multistep(iface: &Sct, net: &dyn Backbone, noise: &Tensor, y: Option<&Tensor>, times: &[f64], mut rngs: Option<&mut Rngs>) -> Result<Tensor> {
    let mut c = Checks::new(iface.level());
    let b = validate::data(&mut c, noise, y)?;
    c.finish()?;
    if times.is_empty() {
        return Err(Error::invalid("times", "at least one sampling time", "none"));
    }
    for w in times.windows(2) {
        if w[1] >= w[0] {
            return Err(Error::invalid("times", "strictly decreasing times", format!("{times:?}")));
        }
    }
    if times.iter().any(|&t| !(0.0..=T_MAX).contains(&t)) {
        return Err(Error::invalid("times", "times in [0, pi/2]", format!("{times:?}")));
    }
    if times.len() > 1 && rngs.is_none() {
        return Err(Error::invalid("rngs", "random streams (with `default`) for the noise of multistep sampling", "none"));
    }
    let sd = iface.config().base.x_sigma;
    let device = noise.device();
    let _ng = tch::no_grad_guard();
    let f = |x: &Tensor, ti: f64| iface.consistency(net, x, &Tensor::f_full([b], ti, (noise.kind(), device))?, Cond::labels(y));
    let mut x0 = f(&noise.f_mul_scalar(sd)?, times[0])?;
    for &tn in &times[1..] {
        // `rngs` is present: checked above for more than one time.
        let r = rngs.as_deref_mut().ok_or_else(|| Error::invalid("rngs", "random streams", "none"))?;
        let eps = r.normal("default", &noise.size(), device)?.f_to_kind(noise.kind())?;
        let x = trigflow::state(&x0, &eps.f_mul_scalar(sd)?, &Tensor::f_full([b], tn, (noise.kind(), device))?)?;
        x0 = f(&x, tn)?;
    }
    Ok(x0)
}
