//! What the DiT and LightningDiT share: parameters by reference path, the patch embedding
//! and its sin-cos position table, the `t` / `dt` / `gw` embedders, the class table with its
//! label dropout, adaLN modulation, the reference's LayerNorm, attention's softmax core,
//! unpatchify and the initialisation.
//!
//! The computing helpers take and return [`Dual`]s (a primal with an optional tangent, the
//! rules of [`super::tangent`]): the plain forward runs them on constants (no tangent: the
//! very ops of a forward), the fused JVP ([`super::FusedJvp`]) on inputs with tangents, so
//! the two share one body and the fused pass's primal is the forward's bit for bit.
//!
//! Both backbones are the same skeleton (docs/reference.md, "Networks"): patches plus `pe`
//! into tokens, a conditioning vector `c = t_embedder(t) + y_embedder(y) (+ dt_embedder(dt))
//! (+ gw_embedder(gw))`, blocks modulated by `silu(c)`, a final `(shift, scale)`-modulated
//! linear layer and unpatchify. Only the blocks differ.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::dit::DitConfig;
use super::tangent::{self, Dual, Variance};
use super::weights::check_names_and_shapes;
use super::Cond;
use crate::error::{Error, Result};
use crate::rng::Rngs;
use crate::validate;

/// LayerNorm epsilon of every DiT / LightningDiT norm (LayerNorm and RMSNorm).
pub const LN_EPS: f64 = 1e-6;

/// The stream the backbones' label dropout draws from.
pub const LABEL_DROPOUT_STREAM: &str = "label_dropout";

/// How attention is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attention {
    /// The softmax of scaled dot products with plain matmuls: supports double backward and
    /// forward-mode AD (what MeanFlow's JVP needs). The default.
    #[default]
    Math,
    /// libtorch's fused `scaled_dot_product_attention` (flash / memory-efficient kernels where
    /// available): faster, same math up to rounding. Its kernels lack double backward and
    /// forward-mode AD, so inside an autograd JVP ([`crate::jvp::in_jvp`]) the math kernel
    /// runs instead; the backbones' fused JVP ([`super::FusedJvp`]) keeps this kernel for
    /// the primal and recomputes the softmax for the tangent.
    Fused,
}

/// How the reference's LayerNorms are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerNorm {
    /// The reference's arithmetic (Flax `use_fast_variance=True`): `var = max(0, E[x^2] -
    /// E[x]^2)`, `(x - E[x]) * rsqrt(var + eps)`, as ten elementwise ops and reductions.
    /// The default.
    #[default]
    FastVariance,
    /// libtorch's fused `layer_norm` (one kernel forward and backward, with forward-AD and
    /// double-backward formulas): the same function with the variance summed as
    /// `E[(x - E[x])^2]`, so results differ from the reference by rounding (and are more
    /// accurate where `|E[x]|` dwarfs the spread). For speed.
    Fused,
}

/// Where attention's `1 / sqrt(hd)` is applied (each backbone as its reference does; the
/// result differs only by rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScaleOn {
    /// `softmax((q / sqrt(hd)) k^T)` (Flax's `dot_product_attention`, the DiT).
    Query,
    /// `softmax(q (k^T / sqrt(hd)))` (LightningDiT).
    KeyT,
}

/// `softmax(q k^T / sqrt(hd)) v` for `q, k, v` `[B, H, T, hd]` on the kernel `kind`, with
/// the tangent of [`tangent::attention_math`] / [`tangent::attention_sdpa`] when the inputs
/// carry one. The plain forward passes `kind = Attention::Math` inside an autograd JVP
/// ([`crate::jvp::in_jvp`]: the fused kernel has no forward-AD or double-backward formula);
/// the fused JVP may keep the fused kernel (its tangent recomputes `P` without a graph).
pub(crate) fn attention(q: &Dual, k: &Dual, v: &Dual, kind: Attention, scale_on: ScaleOn) -> Result<Dual> {
    let hd = q.primal.size().last().copied().unwrap_or(1);
    let sqrt_hd = (hd as f32).sqrt() as f64;
    match kind {
        Attention::Math => {
            let (q, kt) = match scale_on {
                ScaleOn::Query => (q.linear_map(|z| Ok(z.f_div_scalar(sqrt_hd)?))?, k.linear_map(|z| Ok(z.f_transpose(-2, -1)?))?),
                ScaleOn::KeyT => (q.shallow_clone(), k.linear_map(|z| Ok(z.f_transpose(-2, -1)?.f_div_scalar(sqrt_hd)?))?),
            };
            let kind = q.primal.kind();
            tangent::attention_math(&q, &kt, v, kind)
        }
        Attention::Fused => tangent::attention_sdpa(q, k, v, 1.0 / sqrt_hd),
    }
}

/// The attention kernel a plain forward runs: `kind`, or the math kernel inside an autograd
/// JVP.
pub(crate) fn forward_attention(kind: Attention) -> Attention {
    if crate::jvp::in_jvp() {
        Attention::Math
    } else {
        kind
    }
}

/// The standard 2-D sin-cos position table of MAE / DiT (`get_2d_sincos_pos_embed`),
/// `[grid * grid, dim]` row-major in float32, computed as the reference's numpy code does:
/// for `d = dim / 2` and `omega_i = 1 / 10000^(i / (d / 2))`, `i < d / 2`, token
/// `(row r, column c)` (index `r * grid + c`) is
/// `[sin(c omega), cos(c omega), sin(r omega), cos(r omega)]` — the column (x) coordinate
/// first. `dim` must be a positive multiple of 4.
pub fn sincos_pos_embed_2d(dim: i64, grid: i64) -> Result<Vec<f32>> {
    if dim <= 0 || dim % 4 != 0 {
        return Err(Error::invalid("dim", "a positive multiple of 4", dim));
    }
    if grid <= 0 {
        return Err(Error::invalid("grid", "a positive size", grid));
    }
    let d = dim / 2;
    let q = (d / 2) as usize;
    // numpy float32: omega = arange(q) ; omega /= d / 2.0 ; omega = 1.0 / 10000 ** omega
    let omega: Vec<f32> = (0..q).map(|i| 1.0f32 / 10000f32.powf(i as f32 / (d as f32 / 2.0))).collect();
    let mut out = Vec::with_capacity((grid * grid * dim) as usize);
    for r in 0..grid {
        for c in 0..grid {
            for pos in [c as f32, r as f32] {
                out.extend(omega.iter().map(|&w| (pos * w).sin()));
                out.extend(omega.iter().map(|&w| (pos * w).cos()));
            }
        }
    }
    Ok(out)
}

/// The `pe` buffer `[1, T, D]` of a configuration.
pub(crate) fn pos_embed_buffer(cfg: &DitConfig, device: Device) -> Result<Tensor> {
    let pe = sincos_pos_embed_2d(cfg.hidden_size, cfg.grid())?;
    Ok(Tensor::f_from_slice(&pe)?.f_reshape([1, cfg.tokens(), cfg.hidden_size])?.f_to_device(device)?)
}

/// A backbone's parameters by reference path: float32 leaves that require gradients, all on
/// one device (a float64 copy for numerical checks: [`ParamTable::to_kind`]).
#[derive(Debug)]
pub(crate) struct ParamTable {
    map: BTreeMap<String, Tensor>,
    device: Device,
    kind: Kind,
}

impl ParamTable {
    /// Checks `params` against `shapes` (missing, extra, mis-shaped: an error naming the path)
    /// and that they share the device of `anchor`; converts them to float32 leaves.
    pub(crate) fn new(shapes: &[(String, Vec<i64>)], params: BTreeMap<String, Tensor>, anchor: &str) -> Result<ParamTable> {
        check_names_and_shapes("parameter", shapes, &params)?;
        let device = params.get(anchor).map(|t| t.device()).unwrap_or(Device::Cpu);
        let mut map = BTreeMap::new();
        for (name, p) in params {
            if p.device() != device {
                return Err(Error::invalid(format!("parameter {name}"), format!("device {device:?} (that of {anchor})"), format!("{:?}", p.device())));
            }
            map.insert(name, p.f_to_kind(Kind::Float)?.f_detach()?.f_contiguous()?.set_requires_grad(true));
        }
        Ok(ParamTable { map, device, kind: Kind::Float })
    }

    /// A copy of every parameter in `kind` (new leaves that require gradients).
    pub(crate) fn to_kind(&self, kind: Kind) -> Result<ParamTable> {
        let mut map = BTreeMap::new();
        for (name, p) in &self.map {
            map.insert(name.clone(), p.f_detach()?.f_to_kind(kind)?.f_contiguous()?.set_requires_grad(true));
        }
        Ok(ParamTable { map, device: self.device, kind })
    }

    /// The floating-point kind of every parameter (float32 unless converted).
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// The device of every parameter.
    pub(crate) fn device(&self) -> Device {
        self.device
    }

    /// The parameter `name`.
    pub(crate) fn p(&self, name: &str) -> Result<&Tensor> {
        self.map.get(name).ok_or_else(|| Error::invalid("parameter", "a parameter of this configuration", name))
    }

    /// `x @ <prefix>.kernel + <prefix>.bias` over the last axis.
    pub(crate) fn linear(&self, prefix: &str, x: &Dual) -> Result<Dual> {
        tangent::linear(x, self.p(&format!("{prefix}.kernel"))?, Some(self.p(&format!("{prefix}.bias"))?))
    }

    /// The parameters, sorted by path (shallow clones: the same leaves).
    pub(crate) fn list(&self) -> Vec<(String, Tensor)> {
        self.map.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect()
    }

    /// The parameters as a map (shallow clones).
    pub(crate) fn to_map(&self) -> BTreeMap<String, Tensor> {
        self.map.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect()
    }

    /// The time-like embedder `prefix` (`t_embedder`, `dt_embedder`, `gw_embedder`) applied
    /// to `s` `[B]`: sinusoidal `[cos(s f), sin(s f)]` with `f_i = exp(-ln(10000) i / (F/2))`
    /// (a zero column appended for odd `F`), or continuous `[sin(a), cos(a)]` with
    /// `a = (s * gaussian_basis) * float32(2 pi)` (the basis under stop-gradient); then
    /// `Linear - SiLU - Linear`.
    pub(crate) fn time_embed(&self, cfg: &DitConfig, prefix: &str, s: &Dual) -> Result<Dual> {
        let f = cfg.freq_embed_size;
        let half = f / 2;
        let kind = self.kind;
        let s = s.linear_map(|z| Ok(z.f_to_kind(kind)?))?;
        let feats = if cfg.continuous_time_embed {
            let basis = self.p(&format!("{prefix}.gaussian_basis"))?.f_detach()?;
            tangent::gaussian_embedding(&s, &basis, (2.0 * std::f32::consts::PI) as f64)?
        } else {
            // freqs = exp((-ln(10000) * arange(half)) / half), float32 as the reference.
            let ln = (10000f32).ln() as f64;
            let freqs = Tensor::f_arange(half, (kind, s.primal.device()))?.f_mul_scalar(-ln)?.f_div_scalar(half as f64)?.f_exp()?;
            tangent::sinusoidal_embedding(&s, &freqs, f % 2 == 1)?
        };
        let h = tangent::silu(&self.linear(&format!("{prefix}.mlp.layers.0"), &feats)?)?;
        self.linear(&format!("{prefix}.mlp.layers.2"), &h)
    }

    /// Class embedding with `jnp.take`'s fill semantics: labels in `[-rows, rows)` are looked
    /// up (negative ones wrap), others read NaN (quirk Q10).
    pub(crate) fn class_embed(&self, cfg: &DitConfig, y: &Tensor) -> Result<Tensor> {
        let table = self.p("y_embedder.embedding_table.embedding")?;
        let rows = cfg.table_rows();
        let inside = y.f_ge(-rows)?.f_logical_and(&y.f_lt(rows)?)?;
        let idx = y.f_remainder(rows)?.f_where_self(&inside, &y.f_zeros_like()?)?;
        let e = table.f_index_select(0, &idx)?;
        let nan = Tensor::f_full([1], f64::NAN, (self.kind, e.device()))?;
        Ok(e.f_where_self(&inside.f_unsqueeze(-1)?, &nan)?)
    }

    /// Patch embedding plus the position table: `[B, g, p, g, p, C] -> [B, T, p*p*C] @
    /// [p*p*C, D] + bias + pe` (equal to the strided VALID conv of the reference).
    pub(crate) fn patch_embed(&self, cfg: &DitConfig, pe: &Tensor, x: &Dual, b: i64) -> Result<Dual> {
        let (c, p, d, g, tok) = (cfg.in_channels, cfg.patch_size, cfg.hidden_size, cfg.grid(), cfg.tokens());
        let patches = x.linear_map(|z| Ok(z.f_reshape([b, g, p, g, p, c])?.f_permute([0, 1, 3, 2, 4, 5])?.f_reshape([b, tok, p * p * c])?))?;
        let wx = self.p("x_proj.kernel")?.f_reshape([p * p * c, d])?;
        tangent::linear(&patches, &wx, Some(self.p("x_proj.bias")?))?.add_constant(pe)
    }

    /// The final layer: `(sh, sc) = split(Linear(D, 2D)(silu(c)), 2)`,
    /// `Linear(D, p*p*C)(normed * (1 + sc) + sh)`, then unpatchify to `[B, H, W, C]` (each
    /// token's values in `(p, q, C)` order).
    pub(crate) fn final_layer(&self, cfg: &DitConfig, normed: &Dual, silu_c: &Dual, b: i64) -> Result<Dual> {
        let m = self.linear("final_layer.adaLN_mod.layers.1", silu_c)?.chunk(2, -1)?;
        let o = self.linear("final_layer.linear", &tangent::modulate(normed, Some(&m[0]), &m[1])?)?;
        let (s, c, p, g) = (cfg.input_size, cfg.in_channels, cfg.patch_size, cfg.grid());
        o.linear_map(|z| Ok(z.f_reshape([b, g, g, p, p, c])?.f_permute([0, 1, 3, 2, 4, 5])?.f_reshape([b, s, s, c])?))
    }
}

/// The skeleton both backbones share, on duals: checks `x` and `t`, runs `refuse` (a
/// backbone's own refusals, before anything is drawn), patches plus `pe`, `c =
/// t_embedder(t) + y_embedder(y)` with the labels dropped ([`drop_labels`]) when
/// `dropout = (active, who)` is active (train mode and the backbone's own rule),
/// `+ dt_embedder(dt) + gw_embedder(gw)` as `absent` says, then `block(i, h, silu(c))` for
/// every block and the final layer on `final_norm(h)`. Returns the output and each block's
/// tokens (primals), the features REPA aligns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn skeleton(
    params: &ParamTable,
    cfg: &DitConfig,
    pe: &Tensor,
    (x, t): (&Dual, &Dual),
    cond: &Cond<'_>,
    dt_tangent: Option<&Tensor>,
    rngs: Option<&mut Rngs>,
    (active, who): (bool, &str),
    absent: Absent,
    refuse: impl FnOnce() -> Result<()>,
    block: impl Fn(i64, &Dual, &Dual) -> Result<Dual>,
    final_norm: impl Fn(&Dual) -> Result<Dual>,
) -> Result<(Dual, Vec<Tensor>)> {
    let dev = params.device();
    let b = check_input(cfg, &x.primal, &t.primal, dev, params.kind())?;
    refuse()?;
    let mut h = params.patch_embed(cfg, pe, x, b)?;
    let te = params.time_embed(cfg, "t_embedder", t)?;
    let y = labels(cfg, cond.y, b, dev)?;
    let y = drop_labels(cfg, y, active, rngs, who)?;
    let c = te.add_constant(&params.class_embed(cfg, &y)?)?;
    let silu_c = tangent::silu(&add_dt_gw(params, cfg, c, cond, dt_tangent, b, absent)?)?;
    let mut features = Vec::with_capacity(cfg.depth as usize);
    for i in 0..cfg.depth {
        h = block(i, &h, &silu_c)?;
        features.push(h.primal.shallow_clone());
    }
    let out = params.final_layer(cfg, &final_norm(&h)?, &silu_c, b)?;
    Ok((out, features))
}

/// What a backbone does with an absent `dt` / `gw` it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    /// Zeros / ones of shape `[B]` (the intended default).
    Fill,
    /// An error (LightningDiT, quirk Q15: the reference cannot run the call).
    Refuse,
}

/// Checks the image input `x` `[B, H, W, C]` (of the parameters' `kind`) against the
/// settings and `t` `[B]`; returns `B`.
pub(crate) fn check_input(cfg: &DitConfig, x: &Tensor, t: &Tensor, device: Device, kind: Kind) -> Result<i64> {
    let (s, c) = (cfg.input_size, cfg.in_channels);
    let xs = x.size();
    if xs.len() != 4 || xs[1] != s || xs[2] != s || xs[3] != c || xs[0] < 1 {
        return Err(Error::invalid("x", format!("shape [B, {s}, {s}, {c}] with B >= 1"), format!("{xs:?}")));
    }
    if x.kind() != kind {
        let want = if kind == Kind::Float { "dtype float32".to_string() } else { format!("dtype {kind:?} (that of the parameters)") };
        return Err(Error::invalid("x", want, format!("{:?}", x.kind())));
    }
    if x.device() != device {
        return Err(Error::invalid("x", format!("device {device:?} (that of the parameters)"), format!("{:?}", x.device())));
    }
    let b = xs[0];
    check_vec("t", t, b, device)?;
    Ok(b)
}

/// Errors unless `v` is `[b]` on `device`.
pub(crate) fn check_vec(name: &str, v: &Tensor, b: i64, device: Device) -> Result<()> {
    validate::length(name, v, b)?;
    validate::on_device(name, v, device, "that of x")
}

/// The labels of a call as int64 `[B]`: `cond.y`, or the null class `K` when absent.
pub(crate) fn labels(cfg: &DitConfig, y: Option<&Tensor>, b: i64, device: Device) -> Result<Tensor> {
    Ok(match y {
        Some(y) => {
            check_vec("y", y, b, device)?;
            if y.is_floating_point() || y.kind() == Kind::Bool {
                return Err(Error::invalid("y", "integer class labels", format!("{:?}", y.kind())));
            }
            y.f_to_kind(Kind::Int64)?
        }
        None => Tensor::f_full([b], cfg.num_classes, (Kind::Int64, device))?,
    })
}

/// Label dropout when `active` (train mode and the backbone's own rule): `where(uniform([B])
/// < class_dropout_prob, K, y)`, the uniform drawn from `label_dropout`; `who` says in the
/// error why streams are needed.
pub(crate) fn drop_labels(cfg: &DitConfig, y: Tensor, active: bool, rngs: Option<&mut Rngs>, who: &str) -> Result<Tensor> {
    let p = cfg.class_dropout_prob;
    if !(active && p != 0.0) {
        return Ok(y);
    }
    let rngs = rngs.ok_or_else(|| Error::invalid("rngs", format!("random streams ({who})"), "none"))?;
    let b = y.size()[0];
    let u = rngs.uniform(LABEL_DROPOUT_STREAM, &[b], 0.0, 1.0, y.device())?;
    // JAX compares float32 draws with the float32 probability.
    let drop = u.f_lt((p as f32) as f64)?;
    Ok(y.f_masked_fill(&drop, cfg.num_classes)?)
}

/// Adds `dt_embedder(dt)` and then `gw_embedder(gw)` to `c` (`t_embedder(t) + y_embedder(y)`)
/// when the settings take them, in the reference's order of sums; `absent` says what an
/// absent one means; `dt_tangent` is the tangent of `cond.dt` in a fused JVP (`gw` is held
/// fixed).
pub(crate) fn add_dt_gw(params: &ParamTable, cfg: &DitConfig, mut c: Dual, cond: &Cond<'_>, dt_tangent: Option<&Tensor>, b: i64, absent: Absent) -> Result<Dual> {
    let dev = params.device();
    for (taken, name, given, fill) in [(cfg.take_dt, "dt", cond.dt, 0.0), (cfg.take_gw, "gw", cond.gw, 1.0)] {
        if !taken {
            continue;
        }
        let v = match (given, absent) {
            (Some(v), _) => {
                check_vec(name, v, b, dev)?;
                let t = if name == "dt" { dt_tangent.map(Tensor::shallow_clone) } else { None };
                Dual::new(v.shallow_clone(), t)
            }
            (None, Absent::Fill) => Dual::constant(Tensor::f_full([b], fill, (params.kind(), dev))?),
            (None, Absent::Refuse) => {
                return Err(Error::Unsupported { what: format!("a call without `{name}`"), why: format!("this network takes `{name}` and fills in none") })
            }
        };
        c = c.add(&params.time_embed(cfg, &format!("{name}_embedder"), &v)?)?;
    }
    Ok(c)
}

/// The reference's LayerNorm over the last axis, without scale or bias, on `kind`:
/// [`LayerNorm::FastVariance`] is Flax's `var = max(0, E[x^2] - E[x]^2)`,
/// `(x - E[x]) * rsqrt(var + 1e-6)`; [`LayerNorm::Fused`] libtorch's kernel.
pub(crate) fn layer_norm(x: &Dual, kind: LayerNorm) -> Result<Dual> {
    let form = match kind {
        LayerNorm::FastVariance => Variance::Fast,
        LayerNorm::Fused => Variance::TwoPass,
    };
    tangent::layer_norm(x, form, LN_EPS)
}

/// `x + gate[:, None] * h`, a block's gated residual.
pub(crate) fn gated_residual(x: &Dual, gate: &Dual, h: &Dual) -> Result<Dual> {
    x.add(&gate.linear_map(|g| Ok(g.f_unsqueeze(1)?))?.mul(h)?)
}

/// A fresh parameter by the DiT paper's released initialisation (adaLN-Zero): adaLN
/// modulations, the final linear layer and every bias zero; `gaussian_basis` `N(0, 1)`;
/// norm weights and scales one; the class table and the time-embedder MLPs `N(0, 0.02^2)`;
/// every other kernel Xavier-uniform on the kernel seen as a matrix `[fan_in, fan_out]`.
pub(crate) fn init_param(name: &str, shape: &[i64], device: Device) -> Result<Tensor> {
    let opts = (Kind::Float, device);
    Ok(if name.contains("adaLN_mod") || name.starts_with("final_layer.linear") || name.ends_with(".bias") {
        Tensor::f_zeros(shape, opts)?
    } else if name.ends_with("rms_weight") || name.ends_with("norm.scale") {
        Tensor::f_ones(shape, opts)?
    } else if name.ends_with("gaussian_basis") {
        Tensor::f_randn(shape, opts)?
    } else if name.ends_with("embedding") || name.contains("_embedder.mlp.") {
        Tensor::f_randn(shape, opts)?.f_mul_scalar(0.02)?
    } else {
        let (fan_in, fan_out): (i64, i64) = if name.ends_with("attn.out.kernel") && shape.len() == 3 {
            (shape[0] * shape[1], shape[2])
        } else if name.contains(".attn.") && shape.len() == 3 {
            (shape[0], shape[1] * shape[2])
        } else {
            (shape[..shape.len() - 1].iter().product(), shape[shape.len() - 1])
        };
        let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
        Tensor::f_rand(shape, opts)?.f_mul_scalar(2.0 * a)?.f_sub_scalar(a)?
    })
}
