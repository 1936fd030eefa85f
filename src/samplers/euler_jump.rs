//! Euler-jump: one-step / few-step sampling with an average-velocity model (MeanFlow, Geng
//! et al., "Mean Flows for One-step Generative Modeling", 2025, eq. 12).
//!
//! MeanFlow's `u(x, t, r)` estimates the average velocity over `[r, t]`, so a jump from `t`
//! to `t_next` is exact for the ideal model: `x_next = x + (t_next - t) u(x, t, r = t_next)`
//! (every step, the last included). The model must be an average-velocity model
//! ([`AverageVelocity`]; with any other interface it does not compile).
//!
//! Quirk Q14: the reference accepts a guidance model and scale and silently ignores both
//! (MeanFlow bakes guidance into training). The default reproduces that;
//! [`JumpGuidance::Refuse`] makes a guidance request an error instead.

use serde::Deserialize;
use tch::Tensor;

use super::{euler_update, Sample, SampleArgs, Sampler, SamplerConfig, TimeGrid};
use crate::error::{Error, Result};
use crate::interfaces::{AverageVelocity, Time};
use crate::rng::Rngs;

/// What Euler-jump does with a guidance request (`guidance_scale != 1` or a guidance model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JumpGuidance {
    /// Ignore it, as the reference (quirk Q14). The default.
    #[default]
    Ignore,
    /// Refuse it with [`Error::Unsupported`].
    Refuse,
}

/// Euler-jump's options beyond [`SamplerConfig`] (not reference settings; defaults reproduce it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EulerJumpOptions {
    /// See [`JumpGuidance`].
    pub guidance: JumpGuidance,
}

impl EulerJumpOptions {
    /// The settings keys these options read.
    pub const KEYS: &'static [&'static str] = &["guidance"];
}

/// The Euler-jump sampler (reference `EulerJumpSampler`).
#[derive(Debug, Clone)]
pub struct EulerJump {
    cfg: SamplerConfig,
    opts: EulerJumpOptions,
    grid: TimeGrid,
}

impl EulerJump {
    /// Validates the settings (`num_sampling_steps >= 1`, the grid's settings).
    pub fn new(cfg: SamplerConfig, opts: EulerJumpOptions) -> Result<EulerJump> {
        let grid = cfg.grid()?;
        Ok(EulerJump { cfg, opts, grid })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// The options.
    pub fn options(&self) -> &EulerJumpOptions {
        &self.opts
    }
}

impl Sampler for EulerJump {
    fn name(&self) -> &'static str {
        "euler_jump"
    }
    fn num_sampling_steps(&self) -> i64 {
        self.cfg.num_sampling_steps
    }
    fn grid(&self) -> &TimeGrid {
        &self.grid
    }
}

/// Euler-jump takes an average-velocity model.
impl<I: AverageVelocity + ?Sized> Sample<I> for EulerJump {
    fn forward(&self, _rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_next: f32) -> Result<Tensor> {
        if self.opts.guidance == JumpGuidance::Refuse && (!args.unguided() || args.g_model.is_some()) {
            return Err(Error::Unsupported {
                what: format!("euler_jump with guidance (scale {}, guidance model given: {})", args.guidance_scale, args.g_model.is_some()),
                why: "Euler-jump has no guided step (the reference ignores guidance, quirk Q14); guidance = refuse was asked for".into(),
            });
        }
        let u = args.model.u(x, Time::from(t_curr), Time::from(t_next), args.cond)?;
        euler_update(x, &u, t_curr, t_next)
    }
    fn last_step(&self, rngs: &mut Rngs, args: &SampleArgs<'_, I>, x: &Tensor, t_curr: f32, t_last: f32) -> Result<Tensor> {
        self.forward(rngs, args, x, t_curr, t_last)
    }
}
