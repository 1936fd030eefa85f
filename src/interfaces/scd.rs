//! sCD: continuous-time consistency distillation in the TrigFlow parametrization (Lu & Song,
//! "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models",
//! arXiv:2410.11081, ICLR 2025: §4-5, Algorithm 1 with its distillation branch of `dx_t/dt`).
//!
//! The reference declares `sCDInterface(sCTInterface)` with the constructor arguments
//! `(network, train_time_dist_type, t_mu, t_sigma, n_mu, n_sigma, x_sigma, teacher,
//! guidance_scale)` and leaves it empty; this file, its JAX restatement and the `scd_*`
//! fixtures are the crate's own specification.
//!
//! sCD is sCT (see `sct.rs`: the same draws, JVP, warm-up, tangent normalization, adaptive
//! weighting and recorded intermediates) with one change (Algorithm 1, distillation branch): the tangent
//! input is the teacher's probability-flow velocity instead of the conditional velocity,
//!
//! ```text
//! dx_t/dt = v_u + w (v_c - v_u),   v_c = V(x_t, t, y),  v_u = V(x_t, t, null class 1000)
//! ```
//!
//! with `w = guidance_scale` (classifier-free guidance of the teacher; `w = 1` skips the
//! unconditional pass) and `V` the teacher's TrigFlow velocity, computed without gradient
//! and with every teacher forward in eval mode ([`Teacher::velocity`]). Guiding the velocity equals
//! guiding the teacher's own prediction: every conversion below is affine in the network
//! output at a fixed state.
//!
//! ## The teacher: any interface of the crate, converted to TrigFlow
//!
//! `k = sigma_d / n_sigma` (`n_sigma` the teacher's, `n_mu = 0` required); maps derived in
//! `trigflow.rs`:
//! - SiT: `(x_s, s) = (x_t / (cos t + k sin t), k sin t / (cos t + k sin t))`,
//!   `v = net(x_s, s, y)`, `dx_t/dt = sigma_d cos(t) (x_s + (1 - s) v) / n_sigma -
//!   sin(t) (x_s - s v)`.
//! - MeanFlow: as SiT with its instantaneous velocity `net(x_s, s, y, dt = 0)`.
//! - EDM: `(x_e, sigma) = (x_t / cos t, k tan t)`, `D` its denoiser, `dx_t/dt = sigma_d cos(t)
//!   (x_e - D) / (sigma n_sigma) - sin(t) D`.
//! - TrigFlow (a TrigFlow diffusion model with its own `sigma_d'`): same `sigma_d`: `dx_t/dt =
//!   sigma_d F(x_t / sigma_d, t)`; otherwise through the common EDM state (`t' =
//!   arctan(sigma_d tan(t) / sigma_d')`, `x_t' = cos(t') x_t / cos(t)`), `v' = sigma_d'
//!   F(x_t' / sigma_d', t')`, `x-hat = cos(t') x_t' - sin(t') v'`, `eps-hat = (sin(t') x_t' +
//!   cos(t') v') / sigma_d'`, `dx_t/dt = sigma_d cos(t) eps-hat - sin(t) x-hat`.
//!
//! Golden cases hold the teacher as `teacher: {interface: {...}, network: {...}}` in
//! case.json and its arrays as `buffer.teacher.<path>` (all of them buffers: the teacher
//! is frozen, so it has no `grad.*`).

use serde::{Deserialize, Deserializer};
use tch::{Kind, Tensor};

use super::sct::{LogVarHead, Sct, SctConfig};
use super::trigflow;
use super::{flat_settings, Edm, Interface, LossOutput, MeanFlow, Preconditioning, SiT, Time, NULL_LABEL};
use crate::error::{Error, Result};
use crate::networks::{Backbone, Cond, Pass};
use crate::rng::Rngs;
use crate::validate::Validation;

/// Settings of [`Scd`]: those of [`SctConfig`] (same names and defaults) plus the reference's
/// `guidance_scale` (default 1, no guidance), read from one flat object.
#[derive(Debug, Clone, PartialEq)]
pub struct ScdConfig {
    /// The sCT settings (the student's).
    pub sct: SctConfig,
    /// The teacher's classifier-free guidance scale `w` (default 1).
    pub guidance_scale: f64,
}

impl Default for ScdConfig {
    fn default() -> Self {
        ScdConfig { sct: SctConfig::default(), guidance_scale: 1.0 }
    }
}

impl<'de> Deserialize<'de> for ScdConfig {
    /// From one flat object: sCT's keys and `guidance_scale`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        flat_settings(d, ScdConfig::default(), |c, f| {
            c.sct.read(f)?;
            f.take("guidance_scale", &mut c.guidance_scale)
        })
    }
}

impl ScdConfig {
    /// The sCT part of the settings.
    pub fn sct(&self) -> SctConfig {
        self.sct.clone()
    }
}

/// Which convention the teacher's network was trained in.
#[derive(Debug)]
pub enum TeacherConvention {
    /// A SiT velocity model (linear path, noise at `s = 1`).
    SiT(SiT),
    /// A MeanFlow model, used through its instantaneous velocity (`dt = 0`).
    MeanFlow(MeanFlow),
    /// An EDM denoiser (`t` is sigma).
    Edm(Edm),
    /// A TrigFlow diffusion model `dx_t/dt = sigma_d F(x_t / sigma_d, t)` with its own `sigma_d`
    /// (the `x_sigma` of its settings).
    TrigFlow {
        /// The teacher's `sigma_d`.
        sigma_d: f64,
    },
}

/// A frozen teacher: a convention and its network (every forward in eval mode).
pub struct Teacher {
    convention: TeacherConvention,
    net: Box<dyn Backbone>,
    validation: Validation,
}

impl std::fmt::Debug for Teacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teacher").field("convention", &self.convention).finish_non_exhaustive()
    }
}

fn zero_mean(name: &str, n_mu: f64) -> Result<()> {
    if n_mu != 0.0 {
        return Err(Error::Unsupported {
            what: format!("a {name} teacher with n_mu = {n_mu}"),
            why: "the maps to TrigFlow assume centred noise".into(),
        });
    }
    Ok(())
}

impl Teacher {
    /// Checks the convention (centred noise; a positive TrigFlow `sigma_d`).
    pub fn new(convention: TeacherConvention, net: Box<dyn Backbone>) -> Result<Teacher> {
        match &convention {
            TeacherConvention::SiT(s) => zero_mean("SiT", s.config().base.n_mu)?,
            TeacherConvention::MeanFlow(m) => zero_mean("MeanFlow", m.config().base.n_mu)?,
            TeacherConvention::Edm(e) => zero_mean("EDM", e.config().base.n_mu)?,
            TeacherConvention::TrigFlow { sigma_d } => {
                if !(sigma_d.is_finite() && *sigma_d > 0.0) {
                    return Err(Error::invalid("sigma_d", "a finite value > 0", sigma_d));
                }
            }
        }
        Ok(Teacher { convention, net, validation: Validation::Full })
    }

    /// The convention.
    pub fn convention(&self) -> &TeacherConvention {
        &self.convention
    }

    /// The teacher's network.
    pub fn network(&self) -> &dyn Backbone {
        self.net.as_ref()
    }

    /// How much the teacher's network checks its inputs (an [`Scd`] sets its student's level).
    pub fn with_validation(self, validation: Validation) -> Teacher {
        Teacher { validation, ..self }
    }

    /// The teacher's TrigFlow velocity `dx_t/dt` at the student's `(x_t, t)` for a student
    /// with `sigma_d`, labels `y` (`None`: the null class); no gradient (formulas in the
    /// module docs, derived in `trigflow.rs` from Lu & Song 2024, §3).
    pub fn velocity(&self, x_t: &Tensor, t: &Tensor, y: Option<&Tensor>, sigma_d: f64) -> Result<Tensor> {
        let _ng = tch::no_grad_guard();
        let net = self.net.as_ref();
        let cond = Cond::labels(y);
        let v = match &self.convention {
            TeacherConvention::SiT(s) => {
                let ns = s.config().base.n_sigma;
                let (x_s, ss) = trigflow::to_sit(x_t, t, sigma_d, ns)?;
                let v = net.call(&x_s, &ss, cond, Pass::eval().with_validation(self.validation))?.out;
                trigflow::velocity_from_sit(&x_s, &ss, &v, t, sigma_d, ns)?
            }
            TeacherConvention::MeanFlow(m) => {
                let ns = m.config().base.n_sigma;
                let (x_s, ss) = trigflow::to_sit(x_t, t, sigma_d, ns)?;
                let dt = ss.f_zeros_like()?;
                let v = net.call(&x_s, &ss, cond.with_dt(Some(&dt)), Pass::eval().with_validation(self.validation))?.out;
                trigflow::velocity_from_sit(&x_s, &ss, &v, t, sigma_d, ns)?
            }
            TeacherConvention::Edm(e) => {
                let ns = e.config().base.n_sigma;
                let (x_e, sigma) = trigflow::to_edm(x_t, t, sigma_d, ns)?;
                let (d, _) = e.denoise(net, &x_e, &sigma, cond, Pass::eval().with_validation(self.validation))?;
                trigflow::velocity_from_edm(&x_e, &sigma, &d, t, sigma_d, ns)?
            }
            TeacherConvention::TrigFlow { sigma_d: sd_t } => {
                let sd_t = *sd_t;
                if sd_t == sigma_d {
                    net.call(&x_t.f_div_scalar(sigma_d)?, t, cond, Pass::eval().with_validation(self.validation))?.out.f_mul_scalar(sigma_d)?
                } else {
                    let (x_e, sigma) = trigflow::to_edm(x_t, t, sigma_d, 1.0)?;
                    let (x_tt, tt) = trigflow::from_edm(&x_e, &sigma, sd_t, 1.0)?;
                    let vt = net.call(&x_tt.f_div_scalar(sd_t)?, &tt, cond, Pass::eval().with_validation(self.validation))?.out.f_mul_scalar(sd_t)?;
                    let (x_hat, z_hat) = trigflow::split(&x_tt, &tt, &vt)?;
                    trigflow::velocity_from_estimates(&x_hat, &z_hat.f_div_scalar(sd_t)?, t, sigma_d)?
                }
            }
        };
        Ok(v.f_detach()?)
    }

    /// The guided velocity `v_u + w (v_c - v_u)` (`v_c` with labels `y`, `v_u` with the null
    /// class; `w = 1` returns `v_c` without the unconditional pass). Classifier-free guidance
    /// (Ho & Salimans 2022, eq. 6) applied to the teacher, as sCD distils a guided teacher.
    pub fn guided_velocity(&self, x_t: &Tensor, t: &Tensor, y: Option<&Tensor>, sigma_d: f64, w: f64) -> Result<Tensor> {
        let v_c = self.velocity(x_t, t, y, sigma_d)?;
        if w == 1.0 {
            return Ok(v_c);
        }
        let b = match t.size()[..] {
            [b] => b,
            ref s => return Err(Error::invalid("t", "a [B] vector", format!("{s:?}"))),
        };
        let null = Tensor::f_full([b], NULL_LABEL, (Kind::Int64, x_t.device()))?;
        let v_u = self.velocity(x_t, t, Some(&null), sigma_d)?;
        Ok(v_u.f_add(&v_c.f_sub(&v_u)?.f_mul_scalar(w)?)?)
    }
}

/// The sCD interface: an [`Sct`] core (settings, log-variance head, step) and a teacher.
#[derive(Debug)]
pub struct Scd {
    core: Sct,
    teacher: Teacher,
    guidance_scale: f64,
}

impl Scd {
    /// Validates the settings; takes the student's log-variance head and the teacher.
    pub fn new(cfg: ScdConfig, head: LogVarHead, teacher: Teacher) -> Result<Scd> {
        if !cfg.guidance_scale.is_finite() {
            return Err(Error::invalid("guidance_scale", "a finite value", cfg.guidance_scale));
        }
        let teacher = teacher.with_validation(cfg.sct.base.validation);
        Ok(Scd { core: Sct::new(cfg.sct, head)?, teacher, guidance_scale: cfg.guidance_scale })
    }

    /// The sCT core (settings, head, step, consistency function; for sampling).
    pub fn core(&self) -> &Sct {
        &self.core
    }

    /// The teacher.
    pub fn teacher(&self) -> &Teacher {
        &self.teacher
    }

    /// The teacher's guidance scale.
    pub fn guidance_scale(&self) -> f64 {
        self.guidance_scale
    }

    /// The training step of the tangent warm-up.
    pub fn step(&self) -> u64 {
        self.core.step()
    }

    /// Sets the training step (the caller advances it once per optimizer step, or lets
    /// [`Interface::on_step`] do it).
    pub fn set_step(&mut self, step: u64) {
        self.core.set_step(step);
    }

    /// The sCD loss at an explicit `step`: sCT's with the guided teacher velocity as tangent
    /// input (Algorithm 1, distillation branch).
    pub fn loss_at(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs, step: u64) -> Result<LossOutput> {
        let sd = self.core.config().base.x_sigma;
        let w = self.guidance_scale;
        let tangent = |_x: &Tensor, _z: &Tensor, x_t: &Tensor, t: &Tensor, y: Option<&Tensor>| self.teacher.guided_velocity(x_t, t, y, sd, w);
        self.core.scm_loss(net, x, cond, rngs, step, Some(&tangent))
    }
}

impl Preconditioning for Scd {
    fn c_in(&self, t: &Tensor) -> Result<Tensor> {
        self.core.c_in(t)
    }
    fn c_out(&self, t: &Tensor) -> Result<Tensor> {
        self.core.c_out(t)
    }
    fn c_skip(&self, t: &Tensor) -> Result<Tensor> {
        self.core.c_skip(t)
    }
    fn c_noise(&self, t: &Tensor) -> Result<Tensor> {
        self.core.c_noise(t)
    }
}

impl Interface for Scd {
    fn name(&self) -> &'static str {
        "scd"
    }
    /// The student's consistency function `f(x_t, t)` (as sCT's).
    fn pred(&self, net: &dyn Backbone, x_t: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        self.core.pred(net, x_t, t, cond)
    }
    /// The sCD loss at the interface's current step.
    fn loss(&self, net: &dyn Backbone, x: &Tensor, cond: Cond<'_>, rngs: &mut Rngs) -> Result<LossOutput> {
        self.loss_at(net, x, cond, rngs, self.core.step())
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.core.parameters()
    }
    /// Sets the step of the tangent warm-up ([`Scd::set_step`]).
    fn on_step(&mut self, step: u64) {
        self.core.set_step(step);
    }
}
