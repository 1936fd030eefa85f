//! `probe_mlp`: the tiny network of the case format (docs/reference.md, "probe_mlp") that exercises every
//! interface path (time, `dt`, labels, gradients, features) cheaply.
//!
//! ```text
//! emb(s)  = concat(sin(s[:,None] * freqs), cos(s[:,None] * freqs))   # [B, 2K]
//! cond    = emb(t) @ Wt  (+ emb(dt) @ Wd when dt is given)  + E[y]    # y = 1000 when absent
//! h       = silu(x @ W1 + b1 + cond broadcast over the middle axes)   # [B, ..., H]
//! out     = h @ W2 + b2                                               # [B, ..., C]
//! returns (out, [h reshaped to [B, T, H]])
//! ```
//!
//! It has a fused JVP ([`FusedJvp`]): the same forward with the tangent of each layer beside
//! it (`d emb = [cos(a), -sin(a)] da`, the matmuls, SiLU's derivative).

use std::collections::BTreeMap;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::tangent::{self, Dual};
use super::{Accepts, Backbone, Cond, FusedJvp, NetOutput, Pass, NULL_CLASS};
use crate::jvp::NetTangents;
use crate::error::{Error, Result};
use crate::validate::{self, Checks};


/// Settings of [`ProbeMlp`] (`channels` C, `hidden` H, `freqs` K).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeMlpConfig {
    /// Input / output channels C (the last axis of `x`).
    pub channels: i64,
    /// Hidden width H.
    pub hidden: i64,
    /// Number of frequencies K.
    pub freqs: i64,
}

impl ProbeMlpConfig {
    /// The parameter names and shapes, in golden-case order.
    pub fn parameter_shapes(&self) -> Vec<(&'static str, Vec<i64>)> {
        let (c, h, k) = (self.channels, self.hidden, self.freqs);
        vec![
            ("E", vec![NULL_CLASS + 1, h]),
            ("W1", vec![c, h]),
            ("W2", vec![h, c]),
            ("Wd", vec![2 * k, h]),
            ("Wt", vec![2 * k, h]),
            ("b1", vec![h]),
            ("b2", vec![c]),
        ]
    }

    fn validate(&self) -> Result<()> {
        for (name, v) in [("channels", self.channels), ("hidden", self.hidden), ("freqs", self.freqs)] {
            if v <= 0 {
                return Err(Error::invalid(name, "a positive size", v));
            }
        }
        Ok(())
    }
}

/// The probe network; parameters are leaf tensors that require gradients.
#[derive(Debug)]
pub struct ProbeMlp {
    cfg: ProbeMlpConfig,
    params: BTreeMap<String, Tensor>,
    freqs: Tensor,
}

impl ProbeMlp {
    /// Builds the network from named parameters (`E W1 W2 Wd Wt b1 b2`) and the `freqs` buffer,
    /// checking every name, shape and dtype (float32, or float64 throughout for numerical
    /// checks); parameters are made leaves that require gradients.
    pub fn new(cfg: ProbeMlpConfig, params: BTreeMap<String, Tensor>, freqs: Tensor) -> Result<ProbeMlp> {
        cfg.validate()?;
        let shapes = cfg.parameter_shapes();
        for name in params.keys() {
            if !shapes.iter().any(|(n, _)| n == name) {
                return Err(Error::invalid("params", "only E, W1, W2, Wd, Wt, b1, b2", format!("extra parameter `{name}`")));
            }
        }
        let kind = freqs.kind();
        if !matches!(kind, Kind::Float | Kind::Double) {
            return Err(Error::invalid("freqs", "float32 or float64", format!("{kind:?}")));
        }
        let mut out = BTreeMap::new();
        for (name, shape) in shapes {
            let p = params.get(name).ok_or_else(|| Error::invalid("params", format!("parameter `{name}`"), "none"))?;
            if p.size() != shape {
                return Err(Error::invalid(format!("params.{name}"), format!("shape {shape:?}"), format!("{:?}", p.size())));
            }
            if p.kind() != kind {
                return Err(Error::invalid(format!("params.{name}"), format!("dtype {kind:?} (that of freqs)"), format!("{:?}", p.kind())));
            }
            out.insert(name.to_string(), p.f_detach()?.set_requires_grad(true));
        }
        if freqs.size() != [cfg.freqs] {
            return Err(Error::invalid("freqs", format!("shape [{}]", cfg.freqs), format!("{:?}", freqs.size())));
        }
        Ok(ProbeMlp { cfg, params: out, freqs })
    }

    /// A randomly initialised probe, as the spec exporter's `init_probe_mlp(seed, ...)`:
    /// parameter `i` of `W1 b1 Wt Wd E W2 b2` is `scale * normal(fold_in(key(seed), i))` from
    /// the crate's JAX-exact streams (scale 0.1 for biases, 0.5 otherwise) and
    /// `freqs = exp(linspace(0, 3, K))`. It uses no global generator, so concurrent
    /// initialisations on several threads cannot disturb each other.
    pub fn init(cfg: ProbeMlpConfig, seed: i64, device: Device) -> Result<ProbeMlp> {
        Self::init_with_kind(cfg, seed, device, Kind::Float)
    }

    /// [`ProbeMlp::init`] in a chosen float dtype (float64 for finite-difference checks; the
    /// float32 draws are widened).
    pub fn init_with_kind(cfg: ProbeMlpConfig, seed: i64, device: Device, kind: Kind) -> Result<ProbeMlp> {
        cfg.validate()?;
        let key = crate::rng::Key::from_seed(seed);
        let shapes = cfg.parameter_shapes();
        let mut params = BTreeMap::new();
        for (i, name) in ["W1", "b1", "Wt", "Wd", "E", "W2", "b2"].into_iter().enumerate() {
            let shape = shapes.iter().find(|(n, _)| *n == name).map(|(_, s)| s.clone()).unwrap_or_default();
            let scale: f32 = if name.starts_with('b') { 0.1 } else { 0.5 };
            let n = crate::rng::numel(&shape)?;
            let v: Vec<f32> = key.fold_in(i as u32).normal(n).into_iter().map(|z| scale * z).collect();
            let p = Tensor::f_from_slice(&v)?.f_reshape(&shape)?.f_to_kind(kind)?.f_to_device(device)?;
            params.insert(name.to_string(), p);
        }
        let k = cfg.freqs;
        let f: Vec<f64> = (0..k).map(|i| if k > 1 { (3.0 * i as f64 / (k - 1) as f64).exp() } else { 1.0 }).collect();
        let freqs = Tensor::f_from_slice(&f)?.f_to_kind(kind)?.f_to_device(device)?;
        ProbeMlp::new(cfg, params, freqs)
    }

    /// The settings.
    pub fn config(&self) -> ProbeMlpConfig {
        self.cfg
    }

    fn p(&self, name: &str) -> &Tensor {
        // Every name is checked in `new`.
        &self.params[name]
    }
}

impl ProbeMlp {
    /// Checks the inputs of a forward (the conditioning, shapes, dtypes, devices, and the
    /// values at the pass's validation level); returns the batch size.
    fn check_inputs(&self, x: &Tensor, t: &Tensor, cond: &Cond<'_>, pass: &Pass<'_>) -> Result<i64> {
        validate::conditioning(&self.accepts(), cond)?;
        let xs = x.size();
        let b = *xs.first().ok_or_else(|| Error::invalid("x", "shape [B, ..., C]", "a scalar"))?;
        if xs.len() < 2 || xs[xs.len() - 1] != self.cfg.channels {
            return Err(Error::invalid("x", format!("shape [B, ..., {}]", self.cfg.channels), format!("{xs:?}")));
        }
        if b < 1 {
            return Err(Error::invalid("x", "a batch of at least 1 example", format!("{xs:?}")));
        }
        let (kind, device) = (self.freqs.kind(), self.freqs.device());
        let mut checks = Checks::new(pass.validation);
        validate::network_input(&mut checks, "x", x, kind, device)?;
        validate::length("t", t, b)?;
        validate::network_time(&mut checks, "t", t, kind, device)?;
        if let Some(dt) = cond.dt {
            validate::length("dt", dt, b)?;
            validate::network_time(&mut checks, "dt", dt, kind, device)?;
        }
        if let Some(y) = cond.y {
            validate::network_labels(&mut checks, y, b, NULL_CLASS, device)?;
        }
        checks.finish()?;
        Ok(b)
    }

    /// `emb(s)` of a dual time: `[sin(a), cos(a)]`, `a = s[:, None] * freqs`.
    fn emb_dual(&self, s: &Dual) -> Result<Dual> {
        let a = s.linear_map(|z| Ok(z.f_unsqueeze(-1)?.f_mul(&self.freqs)?))?;
        tangent::cat(&[tangent::sin(&a)?, tangent::cos(&a)?], -1)
    }

    /// The network on dual inputs (the plain forward when no input has a tangent): the output
    /// and the feature `h` `[B, T, H]` (primal only).
    fn run(&self, x: &Dual, t: &Dual, dt: Option<&Dual>, y: Option<&Tensor>, b: i64) -> Result<(Dual, Tensor)> {
        let xs = x.primal.size();
        let mut c = tangent::linear(&self.emb_dual(t)?, self.p("Wt"), None)?;
        if let Some(dt) = dt {
            c = c.add(&tangent::linear(&self.emb_dual(dt)?, self.p("Wd"), None)?)?;
        }
        let y = match y {
            Some(y) => y.f_to_kind(Kind::Int64)?,
            None => Tensor::f_full([b], NULL_CLASS, (Kind::Int64, x.primal.device()))?,
        };
        c = c.add_constant(&self.p("E").f_index_select(0, &y)?)?;
        let mut cshape = vec![b];
        cshape.extend(std::iter::repeat_n(1, xs.len() - 2));
        cshape.push(self.cfg.hidden);
        let pre = tangent::linear(x, self.p("W1"), Some(self.p("b1")))?.add(&c.linear_map(|z| Ok(z.f_reshape(&cshape)?))?)?;
        let h = tangent::silu(&pre)?;
        let out = tangent::linear(&h, self.p("W2"), Some(self.p("b2")))?;
        let feat = h.primal.f_reshape([b, -1, self.cfg.hidden])?;
        Ok((out, feat))
    }
}

impl Backbone for ProbeMlp {
    /// Takes labels and `dt`; no guidance weight, no extra inputs. The mode does not matter
    /// (the probe has no dropout) and it draws nothing.
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, pass: Pass<'_>) -> Result<NetOutput> {
        let b = self.check_inputs(x, t, &cond, &pass)?;
        let dt = cond.dt.map(|d| Dual::constant(d.shallow_clone()));
        let (out, feat) = self.run(&Dual::constant(x.shallow_clone()), &Dual::constant(t.shallow_clone()), dt.as_ref(), cond.y, b)?;
        Ok(NetOutput { out: out.primal, features: vec![feat] })
    }

    fn fused_jvp(&self) -> Option<&dyn FusedJvp> {
        Some(self)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.params.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect()
    }

    fn accepts(&self) -> Accepts<'_> {
        Accepts { labels: true, dt: true, gw: false, extra: &[] }
    }
}

impl FusedJvp for ProbeMlp {
    /// The probe's forward with the tangent of every layer computed beside it (sin / cos of the
    /// embeddings, the matmuls, SiLU); the primal is the plain forward's, bit for bit.
    fn forward_jvp(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, tangents: NetTangents<'_>, pass: Pass<'_>) -> Result<(NetOutput, Tensor)> {
        let b = self.check_inputs(x, t, &cond, &pass)?;
        let dual = |p: &Tensor, t: Option<&Tensor>| Dual::new(p.shallow_clone(), t.map(Tensor::shallow_clone));
        let dt = cond.dt.map(|d| dual(d, tangents.dt));
        let (out, feat) = self.run(&dual(x, Some(tangents.x)), &dual(t, Some(tangents.t)), dt.as_ref(), cond.y, b)?;
        let tangent = out.tangent_or_zeros()?;
        Ok((NetOutput { out: out.primal, features: vec![feat] }, tangent))
    }
}
