//! Replay of kinds `loss` and `grad`: build the network (train mode), the
//! interface and the streams, call the loss on `in.x` (with `in.y` when given),
//! and for `grad` backpropagate `mean(loss)` into every `param.*`.

use serde::Deserialize;
use tch::Kind;

use super::{build, Computed, ReplayOptions};
use crate::error::{Error, Result};
use crate::golden::{Array, Case, CaseKind};

#[derive(Debug, Deserialize)]
struct LossCase {
    shape: Vec<i64>,
    #[serde(default)]
    repa: Option<serde_json::Value>,
}

/// Replays the case.
pub fn run(case: &Case, opts: &ReplayOptions) -> Result<Computed> {
    let device = opts.device;
    let c: LossCase = case.settings()?;
    if c.repa.is_some() {
        return Err(Error::NotImplemented("the REPA wrapper".into()));
    }
    let iface = build::interface_with(case, opts.jvp)?;
    let net = build::network(case, device)?;
    let mut rngs = build::rngs(case, "rngs")?;
    if c.shape.len() < 2 || c.shape.iter().any(|&d| d < 1) {
        return Err(case.error(Some("case.json"), format!("`shape` {:?}: expected [B, ..., C] with at least 2 positive dimensions", c.shape)));
    }
    let shape: Vec<usize> = c.shape.iter().map(|&d| d as usize).collect();
    let x = case.tensor("in.x", "<f4", Some(&shape), device)?;
    let y = case.opt_tensor("in.y", "<i4", Some(&shape[..1]), device)?;
    net.set_train(true);
    let o = iface.loss(net.as_ref(), &x, y.as_ref(), &mut rngs)?;
    let mut out = Computed::new();
    out.insert("out.loss".into(), Array::from_tensor(&o.loss)?);
    out.insert("out.t".into(), Array::from_tensor(&o.t)?);
    if let Some(r) = &o.r {
        out.insert("out.r".into(), Array::from_tensor(r)?);
    }
    out.insert("out.n".into(), Array::from_tensor(&o.n)?);
    out.insert("out.x_t".into(), Array::from_tensor(&o.x_t)?);
    out.insert("out.target".into(), Array::from_tensor(&o.target)?);
    out.insert("out.net_out".into(), Array::from_tensor(&o.net_out)?);
    if case.kind == CaseKind::Grad {
        o.loss.f_mean(Kind::Float)?.f_backward()?;
        for (name, p) in net.parameters() {
            // A parameter the loss does not use (the probe's `Wd` without `dt`) has no
            // gradient in libtorch; JAX reports zeros, and so do we.
            let g = p.grad();
            let g = if g.defined() { g } else { p.f_zeros_like()? };
            out.insert(format!("grad.{name}"), Array::from_tensor(&g)?);
        }
    }
    Ok(out)
}
