//! Euler-Maruyama: the first-order stochastic sampler of the reverse SDE (SiT, Ma et al. 2024,
//! sec. 2.3; Maruyama 1955).
//!
//! With a diffusion coefficient `w(t)` (see [`DiffusionCoeff`]), the drift is
//! `f(x, t) = pred(x, t) - 0.5 w(t) score(x, t)`; with guidance `w_g != 1` the *drift* is
//! blended, `f = f_guide + w_g (f - f_guide)`, `f_guide` computed on the guidance model with
//! labels 1000. One step from `t` to `t_next`, `h = t_next - t`:
//!
//! `x_mean = x + h f(x, t)`, `x_next = x_mean + sqrt(w(t)) (N sqrt(|h|))`,
//!
//! `N ~ N(0, I)` drawn from the sampler's `default` stream (the reference's `rng()`), one draw
//! of `x`'s shape per step, so that samples match JAX's bit for bit in the noise. The last step
//! returns the mean `x + h f(x, t)` and draws nothing.
//!
//! Quirks:
//! - Q5: the default `linear_kl` coefficient is infinite at `t = 1`, the default `t_start`;
//!   the reference then samples NaN. This crate refuses, when the sampler is built, any grid on
//!   which `w(t)` is not finite and non-negative at a time the sampler evaluates it (every
//!   grid point but the last): use `t_start < 1`.
//! - Q6: the reference's last step feeds the *conditional* labels to the guidance model, so
//!   with the guidance model equal to the model the last step is unguided. The default
//!   reproduces it; [`LastStepLabels::Null`] uses the null class as every other step does.
//! - Q11: the reference accepts no custom coefficient function; neither does this crate.
//! - Q13: the reference crashes with `constant` (its coefficient is a float where an array is
//!   expected). The default refuses it with [`Error::Unsupported`];
//!   [`ConstantCoeff::Norm`] implements the evident intent, `w(t) = diffusion_coeff_norm`.

use serde::Deserialize;
use tch::Tensor;

use super::{euler_update, Model, Sample, SampleArgs, Sampler, SamplerConfig, TimeGrid};
use crate::error::{Error, Result};
use crate::interfaces::{Score, Time};
use crate::networks::Cond;
use crate::rng::Rngs;

/// The diffusion coefficient `w(t)` (`diffusion_coeff`), scaled by `norm = diffusion_coeff_norm`.
///
/// Evaluated in float32 with the reference's order of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum DiffusionCoeff {
    /// `w(t) = norm` (refused unless [`ConstantCoeff::Norm`], quirk Q13).
    Constant,
    /// `w(t) = norm ((1 / (1 - t)) t^2 + t)` (`= norm t / (1 - t)`): the default; infinite at
    /// `t = 1` (quirk Q5).
    LinearKl,
    /// `w(t) = norm t`.
    Linear,
    /// `w(t) = 0.25 (norm cos(pi t) + 1)^2`.
    Cos,
    /// `w(t) = 0.25 (norm sin(pi t) + 1)^2`.
    Concave,
}

impl DiffusionCoeff {
    /// Parses `constant`, `linear_kl`, `linear`, `cos` or `concave` (case ignored, as the
    /// reference's enum names); anything else is [`Error::Unknown`].
    pub fn parse(s: &str) -> Result<DiffusionCoeff> {
        match s.to_ascii_lowercase().as_str() {
            "constant" => Ok(DiffusionCoeff::Constant),
            "linear_kl" => Ok(DiffusionCoeff::LinearKl),
            "linear" => Ok(DiffusionCoeff::Linear),
            "cos" => Ok(DiffusionCoeff::Cos),
            "concave" => Ok(DiffusionCoeff::Concave),
            _ => Err(Error::Unknown { what: "diffusion coefficient".into(), name: s.into(), known: "constant, linear_kl, linear, cos, concave".into() }),
        }
    }

    /// The reference's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffusionCoeff::Constant => "constant",
            DiffusionCoeff::LinearKl => "linear_kl",
            DiffusionCoeff::Linear => "linear",
            DiffusionCoeff::Cos => "cos",
            DiffusionCoeff::Concave => "concave",
        }
    }

    /// `w(t)` for `norm`, in float32 as the reference computes it.
    pub fn eval(self, t: f32, norm: f32) -> f32 {
        let pi = std::f32::consts::PI;
        match self {
            DiffusionCoeff::Constant => norm,
            DiffusionCoeff::LinearKl => norm * (1.0 / (1.0 - t) * (t * t) + t),
            DiffusionCoeff::Linear => norm * t,
            DiffusionCoeff::Cos => {
                let c = ((pi * t) as f64).cos() as f32;
                let v = norm * c + 1.0;
                0.25 * (v * v)
            }
            DiffusionCoeff::Concave => {
                let s = ((pi * t) as f64).sin() as f32;
                let v = norm * s + 1.0;
                0.25 * (v * v)
            }
        }
    }
}

impl TryFrom<String> for DiffusionCoeff {
    type Error = Error;
    fn try_from(s: String) -> Result<DiffusionCoeff> {
        DiffusionCoeff::parse(&s)
    }
}

/// Which labels the guidance model gets in the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastStepLabels {
    /// The conditional labels, as the reference (quirk Q6). The default.
    #[default]
    Conditional,
    /// The null class 1000, as in every other step.
    Null,
}

/// What to do with the `constant` coefficient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstantCoeff {
    /// Refuse it with [`Error::Unsupported`]: the reference crashes (quirk Q13). The default.
    #[default]
    Refuse,
    /// `w(t) = diffusion_coeff_norm` for every `t`.
    Norm,
}

/// Euler-Maruyama's settings beyond [`SamplerConfig`]: the reference's `diffusion_coeff`
/// (default `linear_kl`) and `diffusion_coeff_norm` (default 1), and this crate's corrections.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EulerMaruyamaOptions {
    /// The coefficient `w(t)`.
    pub diffusion_coeff: DiffusionCoeff,
    /// Its scale `norm`.
    pub diffusion_coeff_norm: f64,
    /// The guidance labels of the last step (quirk Q6).
    pub last_step_labels: LastStepLabels,
    /// Whether `constant` is refused or implemented (quirk Q13).
    pub constant_coeff: ConstantCoeff,
}

impl Default for EulerMaruyamaOptions {
    fn default() -> Self {
        EulerMaruyamaOptions {
            diffusion_coeff: DiffusionCoeff::LinearKl,
            diffusion_coeff_norm: 1.0,
            last_step_labels: LastStepLabels::Conditional,
            constant_coeff: ConstantCoeff::Refuse,
        }
    }
}

impl EulerMaruyamaOptions {
    /// The settings keys these options read.
    pub const KEYS: &'static [&'static str] = &["diffusion_coeff", "diffusion_coeff_norm", "last_step_labels", "constant_coeff"];
}

/// The Euler-Maruyama sampler (reference `EulerMaruyamaSampler`).
#[derive(Debug, Clone)]
pub struct EulerMaruyama {
    cfg: SamplerConfig,
    opts: EulerMaruyamaOptions,
    grid: TimeGrid,
}

impl EulerMaruyama {
    /// Validates the settings: the grid's, a finite `diffusion_coeff_norm`, `constant` only with
    /// [`ConstantCoeff::Norm`] (Q13), and `w(t)` finite and non-negative at every grid time the
    /// sampler evaluates (Q5).
    pub fn new(cfg: SamplerConfig, opts: EulerMaruyamaOptions) -> Result<EulerMaruyama> {
        let grid = cfg.grid()?;
        if !opts.diffusion_coeff_norm.is_finite() {
            return Err(Error::invalid("diffusion_coeff_norm", "a finite value", opts.diffusion_coeff_norm));
        }
        if opts.diffusion_coeff == DiffusionCoeff::Constant && opts.constant_coeff == ConstantCoeff::Refuse {
            return Err(Error::Unsupported {
                what: "euler-maruyama with diffusion_coeff = constant".into(),
                why: "the reference crashes on it (quirk Q13); set constant_coeff = norm for w(t) = diffusion_coeff_norm".into(),
            });
        }
        let s = EulerMaruyama { cfg, opts, grid };
        let points = s.timegrid()?;
        for &t in &points[..points.len() - 1] {
            let w = s.diffusion_coeff(t);
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::invalid(
                    "diffusion_coeff",
                    format!("a finite w(t) >= 0 at every grid time but the last (quirk Q5: linear_kl is infinite at t = 1; use t_start < 1), for `{}`", s.opts.diffusion_coeff.as_str()),
                    format!("w({t}) = {w}"),
                ));
            }
        }
        Ok(s)
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// The options.
    pub fn options(&self) -> &EulerMaruyamaOptions {
        &self.opts
    }

    /// `w(t)` with this sampler's coefficient and norm (float32).
    pub fn diffusion_coeff(&self, t: f32) -> f32 {
        self.opts.diffusion_coeff.eval(t, self.opts.diffusion_coeff_norm as f32)
    }

    /// The drift `pred(x, t, y) - 0.5 w(t) score(x, t, y)` of `model`.
    pub fn drift<I: Score + ?Sized>(&self, model: Model<'_, I>, x: &Tensor, t: Time<'_>, w: f32, cond: Cond<'_>) -> Result<Tensor> {
        let tangent = model.pred(x, t, cond)?;
        let score = model.score(x, t, cond)?;
        Ok(tangent.f_sub(&score.f_mul_scalar((0.5 * w) as f64)?)?)
    }

    fn guided_drift<I: Score + ?Sized>(&self, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, guide_labels: Option<&Tensor>) -> Result<Tensor> {
        let t = Time::from(t_curr);
        let w = self.diffusion_coeff(t_curr);
        let d = self.drift(args.model, x, t, w, args.cond)?;
        args.blend(&d, guide_labels, |g, c| self.drift(g, x, t, w, c))
    }
}

impl Sampler for EulerMaruyama {
    fn name(&self) -> &'static str {
        "euler-maruyama"
    }
    fn num_sampling_steps(&self) -> i64 {
        self.cfg.num_sampling_steps
    }
    fn grid(&self) -> &TimeGrid {
        &self.grid
    }
}

/// Euler-Maruyama needs a score (its drift is `pred - w/2 score`).
impl<I: Score + ?Sized> Sample<I> for EulerMaruyama {
    fn forward(&self, rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_next: f32) -> Result<Tensor> {
        let null = args.null_labels()?;
        let d = self.guided_drift(args, x, t_curr, null.as_ref())?;
        let x_mean = euler_update(x, &d, t_curr, t_next)?;
        let n = rngs.normal("default", &x_mean.size(), x_mean.device())?;
        let wiener = n.f_mul_scalar((t_next - t_curr).abs().sqrt() as f64)?;
        Ok(x_mean.f_add(&wiener.f_mul_scalar(self.diffusion_coeff(t_curr).sqrt() as f64)?)?)
    }
    fn last_step(&self, _rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_last: f32) -> Result<Tensor> {
        let labels = match self.opts.last_step_labels {
            LastStepLabels::Conditional => args.cond.y.map(Tensor::shallow_clone),
            LastStepLabels::Null => args.null_labels()?,
        };
        let d = self.guided_drift(args, x, t_curr, labels.as_ref())?;
        euler_update(x, &d, t_curr, t_last)
    }
}
