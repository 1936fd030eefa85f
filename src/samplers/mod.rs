//! Samplers: integrate an interface's `pred` from noise to data over a time grid.
//!
//! The reference (`samplers/samplers.py` of diffuse_nnx) splits a sampler into a time grid,
//! one integration step (`forward`), a last step and the loop; so does this module:
//!
//! - [`TimeGrid`] ([`grid`]): `uniform` (SiT / MeanFlow time, noise at `t = 1`) or `exp`
//!   (EDM, where `t` is the noise level sigma).
//! - [`Sampler`]: what every sampler has (its name, step count and grid); [`Sample`]: `forward`
//!   (one step `t_curr -> t_next`), `last_step` and [`Sample::sample`], the loop: `grid =
//!   sample_t(num_sampling_steps + 1)`, `x = x * grid[0]`, `forward` over every consecutive
//!   pair but the last, `last_step` on the last pair.
//! - One file per sampler: [`Euler`], [`Heun`], [`EulerMaruyama`], [`EulerJump`].
//!
//! **What a sampler needs of its model** is a bound on its [`Sample`] implementation, so that
//! a mismatch does not compile: Euler and Heun integrate any [`Interface`]'s `pred`;
//! Euler-Maruyama needs a [`Score`]; Euler-jump an [`AverageVelocity`] (MeanFlow). The
//! [`Model`] pairs an interface with a backbone; [`AnySampler::sample`] dispatches at run
//! time on an [`AnyInterface`], refusing a missing capability with an error.
//!
//! **Guidance** (classifier-free, Ho & Salimans 2022): with a guidance scale `w != 1`, each
//! slope `d` of the conditional model is blended with the guidance model's slope `g`, computed
//! with every label replaced by the null class 1000: `d = g + w (d - g)`. The guidance model is
//! the sampling model unless another is given. With `w == 1` the guidance model is never
//! called. Euler-Maruyama blends its drift (not the tangent alone); Euler-jump ignores
//! guidance (quirk Q14).
//!
//! **Faithful by default.** Where the reference departs from the math, the default reproduces
//! it and a named option corrects it: [`HeunVariant`] (Q1), [`LastStepLabels`] (Q6),
//! [`ConstantCoeff`] (Q13), [`JumpGuidance`] (Q14). Where the reference produces NaN (Q5:
//! `linear_kl` at `t = 1`) this crate refuses with an error instead.
//!
//! **Devices and gradients.** Everything runs on the device of the initial `x` (grid values
//! are float32 host scalars, the noise of Euler-Maruyama is drawn on the host and copied, so
//! CPU and CUDA sample the same numbers). Sampling records the autograd graph when the
//! network's parameters require gradients: wrap calls in `tch::no_grad` for inference.

mod euler;
mod euler_jump;
mod euler_maruyama;
pub mod grid;
mod heun;

pub use euler::Euler;
pub use euler_jump::{EulerJump, EulerJumpOptions, JumpGuidance};
pub use euler_maruyama::{ConstantCoeff, DiffusionCoeff, EulerMaruyama, EulerMaruyamaOptions, LastStepLabels};
pub use grid::{ExpGrid, GridKind, GridKwargs, TimeGrid, UniformGrid};
pub use heun::{Heun, HeunOptions, HeunVariant};


use serde::Deserialize;
use serde_json::{Map, Value};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::interfaces::{AnyInterface, AverageVelocity, Interface, Score, Time};
use crate::networks::{Backbone, Cond};
use crate::rng::Rngs;
use crate::validate::{self, Checks, Validation};

/// The null class that replaces every label in the guidance model's pass (hard-coded in the
/// reference, quirk Q10).
pub use crate::networks::NULL_CLASS;

/// The most sampling steps accepted (grids are host vectors; this keeps them small).
pub const MAX_SAMPLING_STEPS: i64 = (grid::MAX_GRID_POINTS as i64) - 3;

/// An interface applied to a backbone: what the reference calls `net` in a sampler
/// (`net.pred(x, t, ...)`, `net.score(x, t, ...)`). `I` is the interface's type, or a trait
/// object of the capability a sampler needs (`dyn Interface`, `dyn Score`,
/// `dyn AverageVelocity`).
pub struct Model<'a, I: ?Sized + 'a = dyn Interface + 'a> {
    /// The interface whose `pred` (and `score`, or `u`) the sampler integrates.
    pub interface: &'a I,
    /// The backbone the interface calls.
    pub net: &'a dyn Backbone,
}

impl<I: ?Sized> Clone for Model<'_, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I: ?Sized> Copy for Model<'_, I> {}

impl<I: Interface + ?Sized> std::fmt::Debug for Model<'_, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("interface", &self.interface.name()).finish_non_exhaustive()
    }
}

impl<'a, I: Interface + ?Sized> Model<'a, I> {
    /// Pairs an interface with a backbone.
    pub fn new(interface: &'a I, net: &'a dyn Backbone) -> Self {
        Model { interface, net }
    }

    /// `interface.pred(net, x, t, cond)`.
    pub fn pred(&self, x: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        self.interface.pred(self.net, x, t, cond)
    }
}

impl<I: Score + ?Sized> Model<'_, I> {
    /// `interface.score(net, x, t, cond)`.
    pub fn score(&self, x: &Tensor, t: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        self.interface.score(self.net, x, t, cond)
    }
}

impl<I: AverageVelocity + ?Sized> Model<'_, I> {
    /// The average velocity `interface.average_velocity(net, x, t, r, cond)`.
    pub fn u(&self, x: &Tensor, t: Time<'_>, r: Time<'_>, cond: Cond<'_>) -> Result<Tensor> {
        self.interface.average_velocity(self.net, x, t, r, cond)
    }
}

/// What stays fixed over one sampling run: the model, the guidance model and scale, the
/// conditioning (labels, and whatever else the network is passed).
pub struct SampleArgs<'a, I: ?Sized + 'a = dyn Interface + 'a> {
    /// The (conditional) model.
    pub model: Model<'a, I>,
    /// The guidance model; `None` means `model` itself (the reference's `g_net = net`).
    pub g_model: Option<Model<'a, I>>,
    /// The guidance scale `w` (`1`: no guidance, the guidance model is not called).
    pub guidance_scale: f64,
    /// The conditioning: class labels `cond.y` (`[B]`, or `None` for the null class) and any
    /// other inputs passed to every forward.
    pub cond: Cond<'a>,
}

impl<I: ?Sized> Clone for SampleArgs<'_, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I: ?Sized> Copy for SampleArgs<'_, I> {}

impl<I: Interface + ?Sized> std::fmt::Debug for SampleArgs<'_, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleArgs").field("model", &self.model).field("guidance_scale", &self.guidance_scale).finish_non_exhaustive()
    }
}

impl<'a, I: ?Sized> SampleArgs<'a, I> {
    /// Bundles the arguments with labels `y`; errors unless `guidance_scale` is finite.
    pub fn new(model: Model<'a, I>, g_model: Option<Model<'a, I>>, guidance_scale: f64, y: Option<&'a Tensor>) -> Result<Self> {
        Self::with_cond(model, g_model, guidance_scale, Cond::labels(y))
    }

    /// Bundles the arguments with the conditioning `cond`; errors unless `guidance_scale` is
    /// finite.
    pub fn with_cond(model: Model<'a, I>, g_model: Option<Model<'a, I>>, guidance_scale: f64, cond: Cond<'a>) -> Result<Self> {
        if !guidance_scale.is_finite() {
            return Err(Error::invalid("guidance_scale", "a finite scale", guidance_scale));
        }
        Ok(SampleArgs { model, g_model, guidance_scale, cond })
    }

    /// The labels (`None`: the null class).
    pub fn y(&self) -> Option<&'a Tensor> {
        self.cond.y
    }

    /// Whether guidance is off (`w == 1`, the reference's `nnx.cond(guidance_scale == 1., ...)`).
    pub fn unguided(&self) -> bool {
        self.guidance_scale == 1.0
    }

    /// The guidance model (`model` when none was given).
    pub fn guide(&self) -> Model<'a, I> {
        self.g_model.unwrap_or(self.model)
    }

    /// The labels of the guidance pass: every label replaced by [`NULL_CLASS`]; absent labels
    /// stay absent (the backbone reads absent labels as the null class).
    pub fn null_labels(&self) -> Result<Option<Tensor>> {
        self.cond.y.map(|y| Ok(y.f_full_like(NULL_CLASS)?)).transpose()
    }

    /// Classifier-free guidance of a conditional slope `d`: `g + w (d - g)`, where `g` is
    /// computed by `slope` on the guidance model with the conditioning's labels replaced by
    /// `guide_labels`. Returns `d` itself (without calling the guidance model) when unguided.
    pub fn blend(&self, d: &Tensor, guide_labels: Option<&Tensor>, slope: impl FnOnce(Model<'a, I>, Cond<'_>) -> Result<Tensor>) -> Result<Tensor> {
        if self.unguided() {
            return Ok(d.shallow_clone());
        }
        let g = slope(self.guide(), self.cond.with_labels(guide_labels))?;
        Ok(g.f_add(&d.f_sub(&g)?.f_mul_scalar(self.guidance_scale)?)?)
    }
}

/// A `[B]` float32 vector filled with the grid time `t`, on the device of `x` (the reference's
/// `expand_right(t, x) = ones([B]) * t`).
pub fn expand_time(t: f32, x: &Tensor) -> Result<Tensor> {
    let b = *x.size().first().ok_or_else(|| Error::invalid("x", "shape [B, ...]", "a scalar"))?;
    Ok(Tensor::f_full([b], t as f64, (Kind::Float, x.device()))?)
}

/// `x + d (t_next - t_curr)`: one explicit step with slope `d` (the step size computed in
/// float32, as the reference does).
pub fn euler_update(x: &Tensor, d: &Tensor, t_curr: f32, t_next: f32) -> Result<Tensor> {
    Ok(x.f_add(&d.f_mul_scalar((t_next - t_curr) as f64)?)?)
}

/// Settings shared by every sampler (the reference's `Samplers.__init__`).
///
/// `num_sampling_steps` and `sampling_time_dist` have no reference default and are required;
/// `sampling_time_kwargs` defaults to `{}` (every key at its grid's default).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    /// Number of steps asked for; the grid has `num_sampling_steps + 1` points (`+ 2` for
    /// `exp`, quirk Q4). At least 1.
    pub num_sampling_steps: i64,
    /// `uniform` or `exp`.
    pub sampling_time_dist: GridKind,
    /// The grid's settings (see [`GridKwargs`]).
    #[serde(default)]
    pub sampling_time_kwargs: GridKwargs,
}

impl SamplerConfig {
    /// `num_sampling_steps` on the given grid kind with default settings.
    pub fn new(num_sampling_steps: i64, sampling_time_dist: GridKind) -> Self {
        SamplerConfig { num_sampling_steps, sampling_time_dist, sampling_time_kwargs: GridKwargs::default() }
    }

    /// Validates the step count and builds the grid.
    pub fn grid(&self) -> Result<TimeGrid> {
        if !(1..=MAX_SAMPLING_STEPS).contains(&self.num_sampling_steps) {
            return Err(Error::invalid("num_sampling_steps", format!("between 1 and {MAX_SAMPLING_STEPS}"), self.num_sampling_steps));
        }
        TimeGrid::new(self.sampling_time_dist, &self.sampling_time_kwargs)
    }
}

/// What every sampler has: a name, a step count and a time grid.
pub trait Sampler {
    /// The reference's name (`euler`, `heun`, `euler-maruyama`, `euler_jump`).
    fn name(&self) -> &'static str;

    /// Number of steps asked for.
    fn num_sampling_steps(&self) -> i64;

    /// The validated time grid.
    fn grid(&self) -> &TimeGrid;

    /// The grid the loop runs over: `sample_t(num_sampling_steps + 1)` (float32 values,
    /// noisiest first; `num_sampling_steps + 2` points on the `exp` grid, quirk Q4).
    fn timegrid(&self) -> Result<Vec<f32>> {
        self.grid().points(self.num_sampling_steps() as usize + 1)
    }
}

/// A sampler of models of kind `I`: a step, a last step and the loop.
///
/// Implementors provide [`Sample::forward`] and [`Sample::last_step`]; the loop
/// [`Sample::sample`] is shared. Each sampler implements it for the models it can integrate
/// (the bound on `I`): any [`Interface`] (Euler, Heun), a [`Score`] (Euler-Maruyama), an
/// [`AverageVelocity`] (Euler-jump). A model without what the sampler needs does not compile:
///
/// ```compile_fail,E0277
/// use diffuse_spec::interfaces::{SiT, SiTConfig};
/// use diffuse_spec::networks::ProbeMlp;
/// use diffuse_spec::rng::Rngs;
/// use diffuse_spec::samplers::{EulerJump, GridKind, Model, Sample, SamplerConfig};
///
/// // Euler-jump needs an average velocity u(x, t, r); SiT has none.
/// fn jump(sit: &SiT, net: &ProbeMlp, x: &tch::Tensor) -> diffuse_spec::Result<tch::Tensor> {
///     let s = EulerJump::new(SamplerConfig::new(2, GridKind::Uniform), Default::default())?;
///     s.sample(&mut Rngs::with_default(0), Model::new(sit, net), x, None, 1.0, None)
/// }
/// ```
///
/// ```compile_fail,E0277
/// use diffuse_spec::interfaces::Sct;
/// use diffuse_spec::networks::ProbeMlp;
/// use diffuse_spec::rng::Rngs;
/// use diffuse_spec::samplers::{EulerMaruyama, GridKind, Model, Sample, SamplerConfig};
///
/// // Euler-Maruyama needs a score; a consistency model has none.
/// fn sde(sct: &Sct, net: &ProbeMlp, x: &tch::Tensor) -> diffuse_spec::Result<tch::Tensor> {
///     let s = EulerMaruyama::new(SamplerConfig::new(2, GridKind::Uniform), Default::default())?;
///     s.sample(&mut Rngs::with_default(0), Model::new(sct, net), x, None, 1.0, None)
/// }
/// ```
pub trait Sample<I: ?Sized = dyn Interface>: Sampler {
    /// One integration step from `t_curr` to `t_next` (a step that is not the last).
    fn forward(&self, rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_next: f32) -> Result<Tensor>;

    /// The last step, from the grid's second-to-last point to its last (where the model is
    /// never evaluated: `t = 0` is outside every interface's domain, quirk Q12).
    fn last_step(&self, rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_last: f32) -> Result<Tensor>;

    /// The reference's `sample(rng, net, x, g_net, guidance_scale, y=...)`: from the initial
    /// noise `x` (`[B, ...]`, float32, unit variance; it is scaled by the grid's first point,
    /// so EDM starts at `x * sigma_max`) to a sample.
    ///
    /// `rngs`: the sampler's streams (the reference's `nnx.Rngs(seed)`); stochastic samplers
    /// draw from its `default` stream, one draw per non-last step. `g_model`: the guidance
    /// model (`None`: `model`). `y`: labels `[B]` or `None` (null class).
    fn sample(&self, rngs: &mut Rngs, model: Model<'_, I>, x: &Tensor, g_model: Option<Model<'_, I>>, guidance_scale: f64, y: Option<&Tensor>) -> Result<Tensor> {
        self.sample_with(rngs, model, x, g_model, guidance_scale, Cond::labels(y))
    }

    /// [`Sample::sample`] with any conditioning (labels and extra inputs of the network,
    /// passed to every forward; the guidance pass replaces the labels by the null class).
    fn sample_with(&self, rngs: &mut Rngs, model: Model<'_, I>, x: &Tensor, g_model: Option<Model<'_, I>>, guidance_scale: f64, cond: Cond<'_>) -> Result<Tensor> {
        // Shapes here; the values of `x` are checked by the model's first call, at its level.
        validate::data(&mut Checks::new(Validation::Cheap), x, cond.y)?;
        let args = SampleArgs::with_cond(model, g_model, guidance_scale, cond)?;
        let grid = self.timegrid()?;
        let n = grid.len();
        if n < 2 {
            return Err(Error::invalid("timegrid", "at least 2 points", n));
        }
        let mut x = x.f_mul_scalar(grid[0] as f64)?;
        for w in grid[..n - 1].windows(2) {
            x = self.forward(rngs, &args, &x, w[0], w[1])?;
        }
        self.last_step(rngs, &args, &x, grid[n - 2], grid[n - 1])
    }
}

pub use crate::kinds::SamplerType;

/// Any of the samplers, built from the reference's settings.
#[derive(Debug, Clone)]
pub enum AnySampler {
    /// See [`Euler`].
    Euler(Euler),
    /// See [`Heun`].
    Heun(Heun),
    /// See [`EulerMaruyama`].
    EulerMaruyama(EulerMaruyama),
    /// See [`EulerJump`].
    EulerJump(EulerJump),
}

impl AnySampler {
    /// Builds the sampler `ty` from a flat settings object with the reference's names
    /// (`num_sampling_steps`, `sampling_time_dist`, `sampling_time_kwargs`, and for
    /// `euler-maruyama` `diffusion_coeff`, `diffusion_coeff_norm`) plus this crate's named
    /// corrections (`variant` for Heun; `last_step_labels`, `constant_coeff` for
    /// Euler-Maruyama; `guidance` for Euler-jump).
    ///
    /// Errors: an unknown sampler, grid or coefficient name is [`Error::Unknown`]; a key no
    /// setting of that sampler has, or a value out of its domain, is [`Error::InvalidArgument`].
    pub fn from_settings(ty: &str, settings: &Map<String, Value>) -> Result<AnySampler> {
        let ty = SamplerType::parse(ty)?;
        // Names first, so that a misspelt name is `Unknown`, not a deserialization message.
        if let Some(Value::String(s)) = settings.get("sampling_time_dist") {
            GridKind::parse(s)?;
        }
        if let Some(Value::String(s)) = settings.get("diffusion_coeff") {
            DiffusionCoeff::parse(s)?;
        }
        let own: &[&str] = match ty {
            SamplerType::Euler => &[],
            SamplerType::Heun => HeunOptions::KEYS,
            SamplerType::EulerMaruyama => EulerMaruyamaOptions::KEYS,
            SamplerType::EulerJump => EulerJumpOptions::KEYS,
        };
        let (opts, common): (Map<String, Value>, Map<String, Value>) = settings.clone().into_iter().partition(|(k, _)| own.contains(&k.as_str()));
        let cfg: SamplerConfig = from_map("sampler settings", common)?;
        Ok(match ty {
            SamplerType::Euler => AnySampler::Euler(Euler::new(cfg)?),
            SamplerType::Heun => AnySampler::Heun(Heun::new(cfg, from_map("heun options", opts)?)?),
            SamplerType::EulerMaruyama => AnySampler::EulerMaruyama(EulerMaruyama::new(cfg, from_map("euler-maruyama options", opts)?)?),
            SamplerType::EulerJump => AnySampler::EulerJump(EulerJump::new(cfg, from_map("euler_jump options", opts)?)?),
        })
    }

    /// The sampler behind the trait (its name and grid).
    pub fn as_sampler(&self) -> &dyn Sampler {
        match self {
            AnySampler::Euler(s) => s,
            AnySampler::Heun(s) => s,
            AnySampler::EulerMaruyama(s) => s,
            AnySampler::EulerJump(s) => s,
        }
    }

    /// Samples with `interface` on `net`, the guidance model being the model itself (see
    /// [`Sample::sample`]). The interface must have what the sampler needs: a score for
    /// Euler-Maruyama, an average velocity for Euler-jump; otherwise [`Error::Unsupported`].
    pub fn sample(&self, rngs: &mut Rngs, interface: &AnyInterface, net: &dyn Backbone, x: &Tensor, guidance_scale: f64, y: Option<&Tensor>) -> Result<Tensor> {
        let missing = |what: &str| Error::Unsupported {
            what: format!("{} with the {} interface", self.as_sampler().name(), interface.name()),
            why: format!("the sampler needs {what}, which this interface does not have"),
        };
        match self {
            AnySampler::Euler(s) => s.sample(rngs, Model::new(interface.interface(), net), x, None, guidance_scale, y),
            AnySampler::Heun(s) => s.sample(rngs, Model::new(interface.interface(), net), x, None, guidance_scale, y),
            AnySampler::EulerMaruyama(s) => {
                let i = interface.as_score().ok_or_else(|| missing("a score"))?;
                s.sample(rngs, Model::new(i, net), x, None, guidance_scale, y)
            }
            AnySampler::EulerJump(s) => {
                let i = interface.as_average_velocity().ok_or_else(|| missing("an average velocity u(x, t, r)"))?;
                s.sample(rngs, Model::new(i, net), x, None, guidance_scale, y)
            }
        }
    }
}

fn from_map<T: serde::de::DeserializeOwned>(what: &str, m: Map<String, Value>) -> Result<T> {
    serde_json::from_value(Value::Object(m)).map_err(|e| Error::invalid(what, "the reference's sampler settings", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn settings_errors_are_structured() {
        let ok = obj(json!({"num_sampling_steps": 4, "sampling_time_dist": "uniform"}));
        assert!(AnySampler::from_settings("euler", &ok).is_ok());
        assert!(matches!(AnySampler::from_settings("ddim", &ok), Err(Error::Unknown { .. })));
        let bad_grid = obj(json!({"num_sampling_steps": 4, "sampling_time_dist": "cosine"}));
        assert!(matches!(AnySampler::from_settings("euler", &bad_grid), Err(Error::Unknown { .. })));
        let bad_coeff = obj(json!({"num_sampling_steps": 4, "sampling_time_dist": "uniform", "diffusion_coeff": "quadratic"}));
        assert!(matches!(AnySampler::from_settings("euler-maruyama", &bad_coeff), Err(Error::Unknown { .. })));
        let zero = obj(json!({"num_sampling_steps": 0, "sampling_time_dist": "uniform"}));
        assert!(matches!(AnySampler::from_settings("heun", &zero), Err(Error::InvalidArgument { .. })));
        // An Euler-Maruyama setting on Euler is refused, not ignored.
        let foreign = obj(json!({"num_sampling_steps": 4, "sampling_time_dist": "uniform", "diffusion_coeff_norm": 2.0}));
        assert!(matches!(AnySampler::from_settings("euler", &foreign), Err(Error::InvalidArgument { .. })));
        let exp_bad = obj(json!({"num_sampling_steps": 4, "sampling_time_dist": "exp", "sampling_time_kwargs": {"rho": -1.0}}));
        assert!(matches!(AnySampler::from_settings("heun", &exp_bad), Err(Error::InvalidArgument { .. })));
    }

    #[test]
    fn timegrid_has_the_reference_point_counts() {
        let e = Euler::new(SamplerConfig::new(8, GridKind::Uniform)).unwrap();
        assert_eq!(e.timegrid().unwrap().len(), 9);
        let h = Heun::new(SamplerConfig::new(8, GridKind::Exp), HeunOptions::default()).unwrap();
        assert_eq!(h.timegrid().unwrap().len(), 10);
    }
}
