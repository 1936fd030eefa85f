//! Euler: the first-order deterministic sampler (explicit Euler on the probability-flow ODE).
//!
//! One step from `t` to `t_next` (every step, the last included):
//! `x_next = x + (t_next - t) d(x, t)`, with `d = pred(x, t, y)` (SiT: the velocity `n - x`
//! estimate; EDM: the noise estimate `(x_t - D) / sigma`, so that `dx/dsigma = d`), and with
//! guidance `w != 1`: `d = g + w (d - g)`, `g = pred_guide(x, t, y = 1000)`.
//!
//! Global error `O(h)` in the step size `h` (order 1).

use tch::Tensor;

use super::{euler_update, expand_time, SampleArgs, Sampler, SamplerConfig, TimeGrid};
use crate::error::Result;
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
pub(super) fn guided_pred(args: &SampleArgs<'_>, x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let d = args.model.pred(x, t, None, args.y)?;
    let null = args.null_labels()?;
    args.blend(&d, null.as_ref(), |g, y| g.pred(x, t, None, y))
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
    fn forward(&self, _rngs: &mut Rngs, args: &SampleArgs<'_>, x: &Tensor, t_curr: f32, t_next: f32) -> Result<Tensor> {
        let d = guided_pred(args, x, &expand_time(t_curr, x)?)?;
        euler_update(x, &d, t_curr, t_next)
    }
    fn last_step(&self, rngs: &mut Rngs, args: &SampleArgs<'_>, x: &Tensor, t_curr: f32, t_last: f32) -> Result<Tensor> {
        self.forward(rngs, args, x, t_curr, t_last)
    }
}
