//! Replay of kind `pred`: `pred(x_t, t, y)` and `score(x_t, t, y)` (MeanFlow adds `in.r`).

use tch::Device;

use super::{build, Computed};
use crate::error::Result;
use crate::golden::{Array, Case};

/// Replays the case.
pub fn run(case: &Case, device: Device) -> Result<Computed> {
    let iface = build::interface(case)?;
    let net = build::network(case, device)?;
    let x_t = case.tensor("in.x_t", "<f4", None, device)?;
    let b = x_t.size().first().copied().unwrap_or(0) as usize;
    let t = case.tensor("in.t", "<f4", Some(&[b]), device)?;
    let y = case.opt_tensor("in.y", "<i4", Some(&[b]), device)?;
    let r = case.opt_tensor("in.r", "<f4", Some(&[b]), device)?;
    let mut out = Computed::new();
    let pred = iface.pred(net.as_ref(), &x_t, &t, r.as_ref(), y.as_ref())?;
    let score = iface.score(net.as_ref(), &x_t, &t, r.as_ref(), y.as_ref())?;
    out.insert("out.pred".into(), Array::from_tensor(&pred)?);
    out.insert("out.score".into(), Array::from_tensor(&score)?);
    Ok(out)
}
