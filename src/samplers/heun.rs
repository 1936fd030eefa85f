//! Heun: the second-order deterministic sampler (explicit trapezoidal rule, Karras et al.
//! 2022, Algorithm 1) — and the reference's version of it, which is not second order.
//!
//! With the guided slope `D(x, t) = g(x, t) + w (d(x, t) - g(x, t))` (just `d` when `w == 1`;
//! `d` the conditional `pred`, `g` the guidance model's `pred` with labels 1000), one step
//! from `t` to `t_next`, `h = t_next - t`:
//!
//! - predictor: `x' = x + h D(x, t)`;
//! - [`HeunVariant::True`]: `x_next = x + h/2 (D(x, t) + D(x', t_next))` — Heun's method,
//!   global error `O(h^2)`.
//! - [`HeunVariant::Reference`] (the default, quirk Q1): the second slope reuses the first
//!   network output `d(x, t)`: `x_next = x + h/2 (D(x, t) + g(x', t_next) + w (d(x, t) -
//!   g(x', t_next)))`. Unguided (`w == 1`) this is exactly Euler (order 1); guided, the second
//!   slope mixes the guidance model at the predicted point with the conditional model at the
//!   start point.
//!
//! The last step is one Euler step with `D(x, t)` in both variants (the next point is
//! `t = 0`, where no interface can be evaluated, quirk Q12).

use serde::Deserialize;
use tch::Tensor;

use super::euler::guided_pred;
use super::{euler_update, Sample, SampleArgs, Sampler, SamplerConfig, TimeGrid};
use crate::error::Result;
use crate::interfaces::{Interface, Time};
use crate::rng::Rngs;

/// Which second slope [`Heun`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeunVariant {
    /// The reference (quirk Q1): the second slope reuses the conditional network output of
    /// the start point; unguided it is exactly Euler. The default.
    #[default]
    Reference,
    /// Heun's method: the second slope is the guided `pred` at the predicted point
    /// `(x + h D(x, t), t_next)`. Second order; two more network calls per step.
    True,
}

/// Heun's options beyond [`SamplerConfig`] (not reference settings; defaults reproduce it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeunOptions {
    /// [`HeunVariant::Reference`] (default) or [`HeunVariant::True`].
    pub variant: HeunVariant,
}

impl HeunOptions {
    /// The settings keys these options read.
    pub const KEYS: &'static [&'static str] = &["variant"];
}

/// The Heun sampler (reference `HeunSampler`, or the true Heun on request).
#[derive(Debug, Clone)]
pub struct Heun {
    cfg: SamplerConfig,
    opts: HeunOptions,
    grid: TimeGrid,
}

impl Heun {
    /// Validates the settings (`num_sampling_steps >= 1`, the grid's settings).
    pub fn new(cfg: SamplerConfig, opts: HeunOptions) -> Result<Heun> {
        let grid = cfg.grid()?;
        Ok(Heun { cfg, opts, grid })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// The options.
    pub fn options(&self) -> &HeunOptions {
        &self.opts
    }
}

impl Sampler for Heun {
    fn name(&self) -> &'static str {
        "heun"
    }
    fn num_sampling_steps(&self) -> i64 {
        self.cfg.num_sampling_steps
    }
    fn grid(&self) -> &TimeGrid {
        &self.grid
    }
}

/// Heun integrates any interface's `pred`.
impl<I: Interface + ?Sized> Sample<I> for Heun {
    fn forward(&self, _rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_next: f32) -> Result<Tensor> {
        let (tc, tn) = (Time::from(t_curr), Time::from(t_next));
        let d_next;
        let d_curr;
        match self.opts.variant {
            HeunVariant::Reference => {
                let d = args.model.pred(x, tc, args.cond)?;
                let null = args.null_labels()?;
                d_curr = args.blend(&d, null.as_ref(), |g, c| g.pred(x, tc, c))?;
                let x_pred = euler_update(x, &d_curr, t_curr, t_next)?;
                d_next = args.blend(&d, null.as_ref(), |g, c| g.pred(&x_pred, tn, c))?;
            }
            HeunVariant::True => {
                d_curr = guided_pred(args, x, t_curr)?;
                let x_pred = euler_update(x, &d_curr, t_curr, t_next)?;
                d_next = guided_pred(args, &x_pred, t_next)?;
            }
        }
        let half_h = 0.5 * (t_next - t_curr);
        Ok(x.f_add(&d_curr.f_add(&d_next)?.f_mul_scalar(half_h as f64)?)?)
    }
    fn last_step(&self, _rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_last: f32) -> Result<Tensor> {
        let d = guided_pred(args, x, t_curr)?;
        euler_update(x, &d, t_curr, t_last)
    }
}
