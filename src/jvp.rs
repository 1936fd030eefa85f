//! Exact Jacobian-vector products of a network, `(f(p), J_f(p) . v)`, on libtorch.
//!
//! Four backends ([`JvpBackend`]):
//! - [`JvpBackend::Fused`]: the backbone's own JVP ([`FusedJvp`], through
//!   [`Backbone::fused_jvp`]): one pass through the network that computes the primal with its
//!   autograd graph and the tangent alongside it, from the primal's intermediates and without
//!   a graph (tangent rules written by hand, [`crate::networks::tangent`]). About two forwards
//!   of work and one forward of autograd memory; the primal may use fused kernels (SDPA) that
//!   have no forward-AD formula. Only a backbone that has one: asking for it explicitly of
//!   another backbone (or of a closure, [`jvp`]) is an [`Error::Unsupported`].
//! - [`JvpBackend::Auto`] (the default): `Fused` where the backbone has a fused JVP,
//!   `DoubleBackward` otherwise (any `tch::nn` network, a user's backbone).
//! - [`JvpBackend::DoubleBackward`] (plain tch): with a dummy cotangent
//!   `g` (zeros, requiring grad), `w = <J^T g, v>` is linear in `g`, so
//!   `dw/dg = J v` (the "double-vjp" trick; cost about three forward passes).
//! - [`JvpBackend::ForwardAd`]: forward-mode dual tensors (`_make_dual` /
//!   `_unpack_dual` of tch) inside a dual level entered and left through the C++ shim
//!   `csrc/dual_level.cpp`. A process-wide lock guarantees that only one level is ever
//!   open, and the level is closed before this function returns, so any `backward`
//!   the caller runs afterwards runs after it closes. Every op of `f` needs a
//!   forward-AD formula: attention must use the math kernel, not a fused one.
//!
//! In all, the primal output keeps its autograd graph to the network's parameters,
//! so a loss built from it can be backpropagated; the tangent is returned detached. The
//! autograd backends stay as the fallback for any network and as the cross-check of the
//! fused passes (the tests compare all three on every JVP fixture).
//!
//! [`network_jvp`] is the one entry point of the interfaces (MeanFlow, sCT, sCD): one pass of
//! a backbone with tangents on its input, its time and its `dt`.

use std::cell::Cell;
use std::ffi::{c_char, c_int, CStr};
use std::sync::Mutex;

use serde::Deserialize;
use tch::Tensor;

use crate::error::{Error, Result};
use crate::networks::{Backbone, Cond, FusedJvp, NetOutput, Pass};
use crate::validate;

/// Which JVP implementation to use (settings name in parentheses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JvpBackend {
    /// (`auto`) The backbone's fused JVP where it has one, double backward otherwise. The
    /// default.
    #[default]
    Auto,
    /// (`fused`) The backbone's fused primal-and-tangent pass ([`FusedJvp`]); an error for a
    /// backbone without one.
    Fused,
    /// (`double_backward`) Reverse-over-reverse (double backward).
    DoubleBackward,
    /// (`forward_ad`) Forward-mode dual tensors.
    ForwardAd,
}

impl JvpBackend {
    /// The backend that runs for `net`: [`JvpBackend::Auto`] becomes `Fused` when
    /// `net.fused_jvp()` is `Some`, else `DoubleBackward`; `Fused` for a backbone without a
    /// fused JVP is an [`Error::Unsupported`]; the others are themselves.
    pub fn resolve(self, net: &dyn Backbone) -> Result<JvpBackend> {
        match (self, net.fused_jvp().is_some()) {
            (JvpBackend::Auto, true) => Ok(JvpBackend::Fused),
            (JvpBackend::Auto, false) => Ok(JvpBackend::DoubleBackward),
            (JvpBackend::Fused, false) => Err(no_fused_jvp()),
            (b, _) => Ok(b),
        }
    }

    /// The settings name (`auto`, `fused`, `double_backward`, `forward_ad`).
    pub fn name(self) -> &'static str {
        match self {
            JvpBackend::Auto => "auto",
            JvpBackend::Fused => "fused",
            JvpBackend::DoubleBackward => "double_backward",
            JvpBackend::ForwardAd => "forward_ad",
        }
    }

    /// Parses a settings name.
    pub fn from_name(name: &str) -> Result<JvpBackend> {
        [JvpBackend::Auto, JvpBackend::Fused, JvpBackend::DoubleBackward, JvpBackend::ForwardAd]
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| Error::Unknown { what: "JVP backend".into(), name: name.into(), known: "auto, fused, double_backward, forward_ad".into() })
    }
}

fn no_fused_jvp() -> Error {
    Error::Unsupported {
        what: "the fused JVP (JvpBackend::Fused)".into(),
        why: "this backbone has no fused primal-and-tangent pass (Backbone::fused_jvp is None); use auto, double_backward or forward_ad".into(),
    }
}

extern "C" {
    fn dspec_enter_dual_level(level: *mut u64, err: *mut c_char, err_len: usize) -> c_int;
    fn dspec_exit_dual_level(level: u64, err: *mut c_char, err_len: usize) -> c_int;
}

static DUAL_LEVEL: Mutex<()> = Mutex::new(());

thread_local! {
    static IN_JVP: Cell<u32> = const { Cell::new(0) };
}

/// Whether this thread is evaluating the function of a [`jvp`] (either backend) right now.
/// Backbones read it to run their attention on the math kernel there, since libtorch's
/// fused attention kernels have neither forward-AD formulas nor double backward
/// ([`crate::networks::Attention::Fused`]).
pub fn in_jvp() -> bool {
    IN_JVP.with(|c| c.get() > 0)
}

/// Marks this thread as inside a JVP until dropped (also on an early return).
struct JvpScope;

impl JvpScope {
    fn enter() -> JvpScope {
        IN_JVP.with(|c| c.set(c.get() + 1));
        JvpScope
    }
}

impl Drop for JvpScope {
    fn drop(&mut self) {
        IN_JVP.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

fn shim_error(what: &str, buf: &[c_char]) -> Error {
    // SAFETY: the shim always NUL-terminates within the buffer.
    let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
    Error::Torch(tch::TchError::Torch(format!("{what}: {msg}")))
}

/// An open forward-AD level; closed on drop (also on an early `?` return).
struct DualLevel {
    level: u64,
    closed: bool,
}

impl DualLevel {
    fn enter() -> Result<DualLevel> {
        let mut level = 0u64;
        let mut buf = [0 as c_char; 512];
        // SAFETY: valid pointers to a u64 and a buffer of the stated length.
        let rc = unsafe { dspec_enter_dual_level(&mut level, buf.as_mut_ptr(), buf.len()) };
        if rc != 0 {
            return Err(shim_error("entering a forward-AD level", &buf));
        }
        Ok(DualLevel { level, closed: false })
    }

    fn exit(mut self) -> Result<()> {
        self.closed = true;
        let mut buf = [0 as c_char; 512];
        // SAFETY: a buffer of the stated length.
        let rc = unsafe { dspec_exit_dual_level(self.level, buf.as_mut_ptr(), buf.len()) };
        if rc != 0 {
            return Err(shim_error("leaving a forward-AD level", &buf));
        }
        Ok(())
    }
}

impl Drop for DualLevel {
    fn drop(&mut self) {
        if !self.closed {
            let mut buf = [0 as c_char; 512];
            // SAFETY: as in `exit`; an error here cannot be reported from drop.
            let _ = unsafe { dspec_exit_dual_level(self.level, buf.as_mut_ptr(), buf.len()) };
        }
    }
}

/// `(f(primals), J_f(primals) . tangents)`. A `None` tangent is a zero tangent (that input
/// is held fixed). Primals are used as given (detached leaves are made for the
/// double-backward route); the returned primal output keeps its graph to any parameters
/// `f` uses, and the tangent output is detached.
pub fn jvp(
    backend: JvpBackend,
    f: &mut dyn FnMut(&[Tensor]) -> Result<Tensor>,
    primals: &[Tensor],
    tangents: &[Option<Tensor>],
) -> Result<(Tensor, Tensor)> {
    if primals.len() != tangents.len() {
        return Err(Error::invalid("tangents", format!("{} tangents (one per primal)", primals.len()), tangents.len()));
    }
    for (i, (p, t)) in primals.iter().zip(tangents).enumerate() {
        if let Some(t) = t {
            check_tangent(&format!("primals[{i}]"), p, &format!("tangents[{i}]"), t)?;
        }
    }
    match backend {
        JvpBackend::Auto | JvpBackend::DoubleBackward => double_backward(f, primals, tangents),
        JvpBackend::ForwardAd => forward_ad(f, primals, tangents),
        JvpBackend::Fused => Err(Error::Unsupported {
            what: "the fused JVP of a closure".into(),
            why: "only a backbone has a fused JVP (FusedJvp); a closure is differentiated by double_backward or forward_ad".into(),
        }),
    }
}

/// A tangent `t` of primal `p`: same shape and device, both float.
fn check_tangent(pname: &str, p: &Tensor, tname: &str, t: &Tensor) -> Result<()> {
    if t.size() != p.size() {
        return Err(Error::invalid(tname, format!("shape {:?}", p.size()), format!("{:?}", t.size())));
    }
    if !p.is_floating_point() {
        return Err(Error::invalid(pname, "a float tensor (it has a tangent)", format!("dtype {:?}", p.kind())));
    }
    if !t.is_floating_point() {
        return Err(Error::invalid(tname, "a float tensor", format!("dtype {:?}", t.kind())));
    }
    if t.device() != p.device() {
        return Err(Error::invalid(tname, format!("device {:?} (that of {pname})", p.device()), format!("{:?}", t.device())));
    }
    Ok(())
}

/// The tangents of one backbone JVP ([`network_jvp`]): on the input `x`, on the time `t`,
/// and on `dt` (`None`: `dt`, when the conditioning has one, is held fixed).
#[derive(Debug, Clone, Copy)]
pub struct NetTangents<'a> {
    /// Tangent of `x` (shape of `x`).
    pub x: &'a Tensor,
    /// Tangent of `t` (`[B]`).
    pub t: &'a Tensor,
    /// Tangent of `cond.dt` (`[B]`).
    pub dt: Option<&'a Tensor>,
}

/// One exact JVP of a backbone: the output of `net.call(x, t, cond, pass)` (with its
/// autograd graph, and the block features) and its derivative along `(tangents.x,
/// tangents.t, tangents.dt)` on `(x, t, cond.dt)` (detached). Other conditioning is held
/// fixed. The network runs once, in the mode and with the streams of `pass` (so each backend
/// draws what one forward draws). `backend` is resolved for `net` ([`JvpBackend::resolve`]):
/// the fused pass by default where the backbone has one. Tangents of another float dtype than
/// their primal are converted to it.
pub fn network_jvp(backend: JvpBackend, net: &dyn Backbone, x: &Tensor, t: &Tensor, cond: Cond<'_>, tangents: NetTangents<'_>, pass: Pass<'_>) -> Result<(NetOutput, Tensor)> {
    let backend = backend.resolve(net)?;
    if backend == JvpBackend::Fused {
        let fused: &dyn FusedJvp = net.fused_jvp().ok_or_else(no_fused_jvp)?;
        return fused_jvp(fused, x, t, cond, tangents, pass);
    }
    let mut primals = vec![x.shallow_clone(), t.shallow_clone()];
    let mut tans = vec![Some(tangents.x.shallow_clone()), Some(tangents.t.shallow_clone())];
    match (cond.dt, tangents.dt) {
        (Some(dt), tdt) => {
            primals.push(dt.shallow_clone());
            tans.push(tdt.map(Tensor::shallow_clone));
        }
        (None, Some(_)) => return Err(Error::invalid("tangents.dt", "none (the conditioning has no dt)", "a tangent")),
        (None, None) => {}
    }
    let mut features = Vec::new();
    let mut pass = pass;
    let (out, tangent) = {
        let mut f = |p: &[Tensor]| -> Result<Tensor> {
            let o = net.call(&p[0], &p[1], Cond { dt: p.get(2), ..cond }, pass.reborrow())?;
            features = o.features;
            Ok(o.out)
        };
        jvp(backend, &mut f, &primals, &tans)?
    };
    Ok((NetOutput { out, features }, tangent))
}

/// The fused backend: the tangents checked and converted to their primals' dtypes, the
/// conditioning checked against what the backbone takes, then one fused pass.
fn fused_jvp(net: &dyn FusedJvp, x: &Tensor, t: &Tensor, cond: Cond<'_>, tangents: NetTangents<'_>, pass: Pass<'_>) -> Result<(NetOutput, Tensor)> {
    check_tangent("x", x, "tangents.x", tangents.x)?;
    check_tangent("t", t, "tangents.t", tangents.t)?;
    let dt_tangent = match (cond.dt, tangents.dt) {
        (Some(dt), Some(tdt)) => {
            check_tangent("dt", dt, "tangents.dt", tdt)?;
            Some(tdt.f_to_kind(dt.kind())?)
        }
        (None, Some(_)) => return Err(Error::invalid("tangents.dt", "none (the conditioning has no dt)", "a tangent")),
        (_, None) => None,
    };
    validate::conditioning(&net.accepts(), &cond)?;
    let (tx, tt) = (tangents.x.f_to_kind(x.kind())?, tangents.t.f_to_kind(t.kind())?);
    let (out, tangent) = net.forward_jvp(x, t, cond, NetTangents { x: &tx, t: &tt, dt: dt_tangent.as_ref() }, pass)?;
    Ok((out, tangent.f_detach()?))
}

fn double_backward(
    f: &mut dyn FnMut(&[Tensor]) -> Result<Tensor>,
    primals: &[Tensor],
    tangents: &[Option<Tensor>],
) -> Result<(Tensor, Tensor)> {
    let leaves: Vec<Tensor> = primals
        .iter()
        .zip(tangents)
        .map(|(p, t)| Ok(if t.is_some() { p.f_detach()?.set_requires_grad(true) } else { p.shallow_clone() }))
        .collect::<Result<_>>()?;
    let out = {
        let _scope = JvpScope::enter();
        f(&leaves)?
    };
    let active: Vec<(&Tensor, &Tensor)> = leaves.iter().zip(tangents).filter_map(|(l, t)| t.as_ref().map(|t| (l, t))).collect();
    if active.is_empty() || !out.requires_grad() {
        return Ok((out.shallow_clone(), out.f_zeros_like()?));
    }
    let g = out.f_zeros_like()?.set_requires_grad(true);
    let s = out.f_mul(&g)?.f_sum(out.kind())?;
    let inputs: Vec<&Tensor> = active.iter().map(|(l, _)| *l).collect();
    let vjps = Tensor::f_run_backward(&[&s], &inputs, true, true)?;
    let mut w: Option<Tensor> = None;
    for (vjp, (_, t)) in vjps.iter().zip(&active) {
        if !vjp.defined() {
            continue;
        }
        let term = vjp.f_mul(t)?.f_sum(vjp.kind())?;
        w = Some(match w {
            None => term,
            Some(acc) => acc.f_add(&term)?,
        });
    }
    let Some(w) = w else { return Ok((out.shallow_clone(), out.f_zeros_like()?)) };
    if !w.requires_grad() {
        return Ok((out.shallow_clone(), out.f_zeros_like()?));
    }
    let jv = Tensor::f_run_backward(&[&w], &[&g], true, false)?;
    let jv = jv.into_iter().next().filter(Tensor::defined);
    let jv = match jv {
        Some(t) => t.f_detach()?,
        None => out.f_zeros_like()?.f_detach()?,
    };
    Ok((out, jv))
}

fn forward_ad(
    f: &mut dyn FnMut(&[Tensor]) -> Result<Tensor>,
    primals: &[Tensor],
    tangents: &[Option<Tensor>],
) -> Result<(Tensor, Tensor)> {
    let _guard = DUAL_LEVEL.lock().map_err(|_| Error::Unsupported {
        what: "forward-mode JVP".into(),
        why: "a previous forward-AD computation panicked while holding the dual level".into(),
    })?;
    let level = DualLevel::enter()?;
    let lv = level.level as i64;
    let result = (|| -> Result<(Tensor, Tensor)> {
        let duals: Vec<Tensor> = primals
            .iter()
            .zip(tangents)
            .map(|(p, t)| match t {
                Some(t) => Ok(Tensor::f_internal_make_dual(p, &t.f_to_kind(p.kind())?, lv)?),
                None => Ok(p.shallow_clone()),
            })
            .collect::<Result<_>>()?;
        let out = {
            let _scope = JvpScope::enter();
            f(&duals)?
        };
        let (primal, tangent) = Tensor::f_internal_unpack_dual(&out, lv)?;
        let tangent = if tangent.defined() { tangent.f_detach()?.f_contiguous()?.f_detach_copy()? } else { primal.f_zeros_like()?.f_detach()? };
        Ok((primal, tangent))
    })();
    level.exit()?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// f(x, s) = sin(x) * s^2 + x^3, elementwise, with parameters a (so the primal must
    /// keep a graph): f = a * (sin(x) s^2 + x^3).
    fn f_of(a: &Tensor) -> impl FnMut(&[Tensor]) -> Result<Tensor> + '_ {
        move |p: &[Tensor]| Ok(a * (p[0].sin() * p[1].square() + p[0].pow_tensor_scalar(3)))
    }

    fn analytic(x: &Tensor, s: &Tensor, vx: &Tensor, vs: &Tensor, a: &Tensor) -> Tensor {
        a * ((x.cos() * s.square() + 3.0 * x.square()) * vx + x.sin() * 2.0 * s * vs)
    }

    #[test]
    fn both_backends_match_the_analytic_jvp_and_keep_the_graph() {
        for backend in [JvpBackend::DoubleBackward, JvpBackend::ForwardAd] {
            let opts = (Kind::Double, Device::Cpu);
            let a = Tensor::from_slice(&[0.5f64, -1.5, 2.0]).set_requires_grad(true);
            let x = Tensor::from_slice(&[0.1f64, 0.7, -1.3]);
            let s = Tensor::from_slice(&[1.1f64, -0.4, 0.9]);
            let vx = Tensor::from_slice(&[1.0f64, -2.0, 0.5]);
            let vs = Tensor::ones([3], opts);
            let mut f = f_of(&a);
            let (y, jv) = jvp(backend, &mut f, &[x.shallow_clone(), s.shallow_clone()], &[Some(vx.shallow_clone()), Some(vs.shallow_clone())]).unwrap();
            let want = analytic(&x, &s, &vx, &vs, &a).detach();
            assert!((&jv - &want).abs().max().double_value(&[]) < 1e-12, "{backend:?}");
            assert!(!jv.requires_grad());
            // The primal keeps its graph: d sum(y) / d a = sin(x) s^2 + x^3.
            y.sum(Kind::Double).backward();
            let ga = a.grad();
            let want_ga = x.sin() * s.square() + x.pow_tensor_scalar(3);
            assert!((&ga - &want_ga).abs().max().double_value(&[]) < 1e-12, "{backend:?}");
        }
    }

    #[test]
    fn a_none_tangent_holds_that_input_fixed() {
        for backend in [JvpBackend::DoubleBackward, JvpBackend::ForwardAd] {
            let a = Tensor::from_slice(&[1.0f64]);
            let x = Tensor::from_slice(&[0.3f64]);
            let s = Tensor::from_slice(&[2.0f64]);
            let mut f = f_of(&a);
            let (_, jv) = jvp(backend, &mut f, &[x.shallow_clone(), s.shallow_clone()], &[None, Some(Tensor::from_slice(&[1.0f64]))]).unwrap();
            let want = x.sin() * 2.0 * &s;
            assert!((&jv - &want).abs().max().double_value(&[]) < 1e-12);
        }
    }

    #[test]
    fn mismatched_tangents_are_refused() {
        let a = Tensor::from_slice(&[1.0f64]);
        let mut f = f_of(&a);
        let x = Tensor::from_slice(&[0.3f64]);
        assert!(jvp(JvpBackend::DoubleBackward, &mut f, &[x.shallow_clone()], &[]).is_err());
        let e = jvp(JvpBackend::ForwardAd, &mut f, &[x.shallow_clone(), x.shallow_clone()], &[Some(Tensor::ones([2], (Kind::Double, Device::Cpu))), None]);
        assert!(e.is_err());
    }
}
