//! Replay of kinds `loss` and `grad`: build the network (train mode), the
//! interface and the streams, call the loss on `in.x` (with `in.y` when given),
//! and for `grad` backpropagate `mean(loss)` into every `param.*`.
//!
//! With a `repa` block the interface is wrapped by [`Repa`] (projector from
//! `param.projector.*`, target features `in.x_feature`); the outputs are then
//! `out.loss`, `out.diffusion_loss`, `out.repa_loss` and the gradients of the network's
//! and the projector's parameters.

use tch::{Kind, Tensor};

use super::spec::LossSpec;
use super::{Computed, ReplayOptions, Replayed};
use crate::error::Result;
use crate::golden::{Array, Case};
use crate::interfaces::{Interface, Repa};
use crate::networks::Cond;

/// Replays the case.
pub fn run(case: &Case, c: &LossSpec, opts: &ReplayOptions) -> Result<Replayed> {
    let device = opts.device;
    let iface = c.interface.build(case, device)?;
    let net = c.network.build(case, device)?;
    let mut rngs = c.rngs()?;
    rngs.start_recording();
    let shape = &c.shape;
    let x = case.tensor("in.x", "<f4", Some(shape), device)?;
    let y = case.opt_tensor("in.y", "<i4", Some(&shape[..1]), device)?;
    let mut out = Computed::new();
    let mut params = net.parameters();
    // Parameters the interface owns (sCT / sCD's log-variance head).
    params.extend(iface.parameters());
    let loss = if let Some(cfg) = &c.repa {
        let projector = c.projector(case, cfg, device)?;
        let repa = Repa::new(cfg.clone(), Box::new(iface), projector)?;
        let x_feature = case.tensor("in.x_feature", "<f4", None, device)?;
        let o = repa.loss(net.as_ref(), &x, &x_feature, Cond::labels(y.as_ref()), &mut rngs)?;
        out.insert("out.diffusion_loss".into(), Array::from_tensor(&o.diffusion_loss)?);
        out.insert("out.repa_loss".into(), Array::from_tensor(&o.repa_loss)?);
        params.extend(repa.parameters());
        o.loss
    } else {
        let o = iface.loss(net.as_ref(), &x, Cond::labels(y.as_ref()), &mut rngs)?;
        out.insert("out.t".into(), Array::from_tensor(&o.t)?);
        if let Some(r) = &o.r {
            out.insert("out.r".into(), Array::from_tensor(r)?);
        }
        out.insert("out.n".into(), Array::from_tensor(&o.n)?);
        out.insert("out.x_t".into(), Array::from_tensor(&o.x_t)?);
        out.insert("out.target".into(), Array::from_tensor(&o.target)?);
        out.insert("out.net_out".into(), Array::from_tensor(&o.net_out)?);
        o.loss
    };
    out.insert("out.loss".into(), Array::from_tensor(&loss)?);
    // The draws of the loss itself (the backward below draws nothing).
    let draws = rngs.take_draws();
    if c.grad {
        loss.f_mean(Kind::Float)?.f_backward()?;
        for (name, p) in params {
            out.insert(format!("grad.{name}"), Array::from_tensor(&grad_or_zeros(&p)?)?);
        }
    }
    Ok(Replayed { outputs: out, draws })
}

/// A parameter the loss does not use (the probe's `Wd` without `dt`, the DiT's
/// `gaussian_basis` under stop-gradient) has no gradient in libtorch; JAX reports zeros,
/// and so do we.
fn grad_or_zeros(p: &Tensor) -> Result<Tensor> {
    let g = p.grad();
    Ok(if g.defined() { g } else { p.f_zeros_like()? })
}
