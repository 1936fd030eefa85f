//! Replay of kind `pred`: `pred(x_t, t, y)` and `score(x_t, t, y)`; with `in.r` (MeanFlow)
//! `out.pred` is the average velocity `u(x_t, t, r)`. An interface without a score (sCT,
//! sCD have none) is checked on `pred` alone when the case carries no `out.score`.

use super::spec::PredSpec;
use super::{Computed, ReplayOptions, Replayed};
use crate::error::{Error, Result};
use crate::golden::{Array, Case};
use crate::interfaces::{Interface, Time};
use crate::networks::Cond;

/// Replays the case.
pub fn run(case: &Case, spec: &PredSpec, opts: &ReplayOptions) -> Result<Replayed> {
    let device = opts.device;
    let iface = spec.interface.build(case, device)?;
    let net = spec.network.build(case, device)?;
    let x_t = case.tensor("in.x_t", "<f4", None, device)?;
    let b = x_t.size().first().copied().unwrap_or(0) as usize;
    let t = case.tensor("in.t", "<f4", Some(&[b]), device)?;
    let y = case.opt_tensor("in.y", "<i4", Some(&[b]), device)?;
    let r = case.opt_tensor("in.r", "<f4", Some(&[b]), device)?;
    let mut out = Computed::new();
    let cond = Cond::labels(y.as_ref());
    let pred = match &r {
        Some(r) => {
            let u = iface.as_average_velocity().ok_or_else(|| case.error(Some("in.r.npy"), format!("an interval start r for the {} interface, which has no average velocity", iface.name())))?;
            u.average_velocity(net.as_ref(), &x_t, Time::Batch(&t), Time::Batch(r), cond)?
        }
        None => iface.pred(net.as_ref(), &x_t, Time::Batch(&t), cond)?,
    };
    out.insert("out.pred".into(), Array::from_tensor(&pred)?);
    match iface.as_score() {
        Some(s) => {
            out.insert("out.score".into(), Array::from_tensor(&s.score(net.as_ref(), &x_t, Time::Batch(&t), cond)?)?);
        }
        None if !case.has("out.score") => {}
        None => return Err(Error::Unsupported { what: format!("score of the {} interface", iface.name()), why: "it has none".into() }),
    }
    Ok(out.into())
}
