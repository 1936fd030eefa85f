//! Replay of kind `pred`: `pred(x_t, t, y)` and `score(x_t, t, y)` (MeanFlow adds `in.r`).
//! An interface without a score (sCT, sCD refuse it) is checked on `pred` alone when the
//! case carries no `out.score`.

use tch::Device;

use super::{build, Computed};
use crate::error::{Error, Result};
use crate::golden::{Array, Case};

/// Replays the case.
pub fn run(case: &Case, device: Device) -> Result<Computed> {
    let iface = build::interface_on(case, None, device)?;
    let net = build::network(case, device)?;
    let x_t = case.tensor("in.x_t", "<f4", None, device)?;
    let b = x_t.size().first().copied().unwrap_or(0) as usize;
    let t = case.tensor("in.t", "<f4", Some(&[b]), device)?;
    let y = case.opt_tensor("in.y", "<i4", Some(&[b]), device)?;
    let r = case.opt_tensor("in.r", "<f4", Some(&[b]), device)?;
    let mut out = Computed::new();
    let pred = iface.pred(net.as_ref(), &x_t, &t, r.as_ref(), y.as_ref())?;
    out.insert("out.pred".into(), Array::from_tensor(&pred)?);
    match iface.score(net.as_ref(), &x_t, &t, r.as_ref(), y.as_ref()) {
        Ok(score) => {
            out.insert("out.score".into(), Array::from_tensor(&score)?);
        }
        Err(Error::Unsupported { .. }) if !case.has("out.score") => {}
        Err(e) => return Err(e),
    }
    Ok(out)
}
