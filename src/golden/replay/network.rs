//! Replay of kind `network`: a backbone alone. Build the network from the case's
//! `network` block and files, call it on `in.x`, `in.t` with `y = in.y`, `dt = in.dt` and,
//! when present, `gw = in.gw` (in eval mode: these cases have `enable_dropout` off, so the
//! mode draws nothing either way), and report `out.out` and `out.feature.<i>` (block `i`'s
//! tokens `[B, T, hidden]`). A `dt` or `gw` is passed only to a network that takes one (the
//! reference's DiT ignores them otherwise, and its cases carry an `in.dt` regardless).

use super::spec::NetworkSpec;
use super::{Computed, ReplayOptions, Replayed};
use crate::error::{Error, Result};
use crate::golden::{Array, Case};
use crate::networks::{Cond, Pass};

/// Replays the case.
pub fn run(case: &Case, network: &NetworkSpec, opts: &ReplayOptions) -> Result<Replayed> {
    let device = opts.device;
    let net = network.build(case, device)?;
    let x = case.tensor("in.x", "<f4", None, device)?;
    let b = *x.size().first().ok_or_else(|| case.error(Some("in.x.npy"), "a scalar where [B, ...] is expected"))? as usize;
    let t = case.tensor("in.t", "<f4", Some(&[b]), device)?;
    let y = case.opt_tensor("in.y", "<i4", Some(&[b]), device)?;
    let dt = case.opt_tensor("in.dt", "<f4", Some(&[b]), device)?;
    let gw = case.opt_tensor("in.gw", "<f4", Some(&[b]), device)?;
    let takes = net.accepts();
    let cond = Cond { y: y.as_ref(), dt: dt.as_ref().filter(|_| takes.dt), gw: gw.as_ref().filter(|_| takes.gw), ..Cond::default() };
    let o = net.call(&x, &t, cond, Pass::eval()).map_err(|e| match e {
        Error::Case { .. } => e,
        other => case.error(None, other.to_string()),
    })?;
    let mut out = Computed::new();
    out.insert("out.out".into(), Array::from_tensor(&o.out)?);
    for (i, f) in o.features.iter().enumerate() {
        out.insert(format!("out.feature.{i}"), Array::from_tensor(f)?);
    }
    Ok(out.into())
}
