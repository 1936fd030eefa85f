//! Replay of kind `sampler`: build the sampler from `sampler`, the interface and network from
//! their blocks, the streams as `nnx.Rngs(rng_seed)`, and sample from `in.x` (labels `in.y`
//! when given) with `guidance_scale`; the guidance model is the model itself (format v1 has
//! no separate guidance network). Outputs `out.timegrid` and `out.x_final`.

use super::spec::SamplerSpec;
use super::{Computed, ReplayOptions, Replayed};
use crate::error::Result;
use crate::golden::{Array, Case};
use crate::rng::Rngs;

/// Replays the case.
pub fn run(case: &Case, c: &SamplerSpec, opts: &ReplayOptions) -> Result<Replayed> {
    let device = opts.device;
    let sampler = &c.sampler;
    let iface = c.interface.build(case, device)?;
    let net = c.network.build(case, device)?;
    let x = case.tensor("in.x", "<f4", None, device)?;
    let b = x.size().first().copied().unwrap_or(0) as usize;
    let y = case.opt_tensor("in.y", "<i4", Some(&[b]), device)?;
    let mut rngs = Rngs::with_default(c.rng_seed);
    rngs.start_recording();
    let grid = sampler.as_sampler().timegrid()?;
    let x_final = tch::no_grad(|| sampler.sample(&mut rngs, &iface, net.as_ref(), &x, c.guidance_scale, y.as_ref()))?;
    let mut out = Computed::new();
    out.insert("out.timegrid".into(), Array::f32(vec![grid.len()], grid)?);
    out.insert("out.x_final".into(), Array::from_tensor(&x_final)?);
    Ok(Replayed { outputs: out, draws: rngs.take_draws() })
}
