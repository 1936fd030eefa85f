//! Replay of kind `sampler`: build the sampler from `sampler`, the interface and network from
//! their blocks, the streams as `nnx.Rngs(rng_seed)`, and sample from `in.x` (labels `in.y`
//! when given) with `guidance_scale`; the guidance model is the model itself (format v1 has
//! no separate guidance network). Outputs `out.timegrid` and `out.x_final`.

use tch::Device;

use super::{build, Computed, Replayed};
use crate::error::Result;
use crate::golden::{Array, Case};
use crate::rng::Rngs;
use crate::samplers::AnySampler;

#[derive(Debug, serde::Deserialize)]
struct SamplerCase {
    rng_seed: i64,
    #[serde(default = "one")]
    guidance_scale: f64,
}

fn one() -> f64 {
    1.0
}

/// Replays the case.
pub fn run(case: &Case, device: Device) -> Result<Replayed> {
    let c: SamplerCase = case.settings()?;
    let (ty, s) = build::typed_block(case, "sampler")?;
    let sampler = AnySampler::from_settings(&ty, &s).map_err(|e| case.error(Some("case.json"), format!("`sampler`: {e}")))?;
    let iface = build::interface(case)?;
    let net = build::network(case, device)?;
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
