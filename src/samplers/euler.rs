//! Euler: the first-order deterministic sampler (explicit Euler on the probability-flow ODE).
//!
//! One step from `t` to `t_next` (every step, the last included):
//! `x_next = x + (t_next - t) d(x, t)`, with `d = pred(x, t, y)` (SiT: the velocity `n - x`
//! estimate; EDM: the noise estimate `(x_t - D) / sigma`, so that `dx/dsigma = d`), and with
//! guidance `w != 1`: `d = g + w (d - g)`, `g = pred_guide(x, t, y = 1000)`.
//!
//! Global error `O(h)` in the step size `h` (order 1).

use tch::Tensor;

use super::{euler_update, Sample, SampleArgs, Sampler, SamplerConfig, TimeGrid};
use crate::error::Result;
use crate::interfaces::{Interface, Time};
use crate::rng::Rngs;

/// The Euler sampler (reference `EulerSampler`).
#[derive(Debug, Clone)]
pub struct Euler {
    cfg: SamplerConfig,
    grid: TimeGrid,
}

impl Euler {
    /// Validates the settings (`num_sampling_steps >= 1`, the grid's settings).
    pub fn new(cfg: SamplerConfig) -> Result<Euler> {
        let grid = cfg.grid()?;
        Ok(Euler { cfg, grid })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }
}

/// The guided slope at `(x, t)`: `d = pred(x, t, y)`, blended with the guidance model's
/// `pred(x, t, null labels)` when `w != 1` (shared by Euler, Heun and their last steps).
pub(super) fn guided_pred<I: Interface + ?Sized>(args: &SampleArgs<'_, I>, x: &Tensor, t: f32) -> Result<Tensor> {
    let t = Time::from(t);
    let d = args.model.pred(x, t, args.cond)?;
    let null = args.null_labels()?;
    args.blend(&d, null.as_ref(), |g, c| g.pred(x, t, c))
}

impl Sampler for Euler {
    fn name(&self) -> &'static str {
        "euler"
    }
    fn num_sampling_steps(&self) -> i64 {
        self.cfg.num_sampling_steps
    }
    fn grid(&self) -> &TimeGrid {
        &self.grid
    }
}

/// Euler integrates any interface's `pred`.
impl<I: Interface + ?Sized> Sample<I> for Euler {
    fn forward(&self, _rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_next: f32) -> Result<Tensor> {
        let d = guided_pred(args, x, t_curr)?;
        euler_update(x, &d, t_curr, t_next)
    }
    fn last_step(&self, rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_last: f32) -> Result<Tensor> {
        self.forward(rngs, args, x, t_curr, t_last)
    }
}
