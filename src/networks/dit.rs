//! `dit`: the reference Diffusion Transformer (Peebles & Xie, "Scalable Diffusion Models
//! with Transformers", ICCV 2023), as diffuse_nnx's `networks/transformers/dit_nnx.py`
//! computes it (docs/reference.md, "dit").
//!
//! Inputs are channel-last, `x: [B, H, W, C]` with `H = W = input_size`; `t: [B]`.
//! With patch size `p`, `g = input_size / p`, `T = g^2` tokens, hidden size `D`,
//! `heads` heads of width `hd = D / heads`, frequency size `F` and `K` classes:
//!
//! ```text
//! x  = conv(x, x_proj, kernel p, stride p, VALID) + x_embedder.pe   # [B, T, D], pe a buffer
//! temb(s): sinusoidal: [cos(s f), sin(s f)], f_i = exp(-ln(10000) i / (F/2)), i < F/2
//!          (s is NOT scaled by 1000; odd F appends a zero column);
//!          continuous: a = (s * gaussian_basis) * float32(2 pi), [sin(a), cos(a)]
//!          (gaussian_basis [F/2] is a parameter under stop_gradient: its gradient is 0);
//!          then Linear(F, D) - SiLU - Linear(D, D)
//! c  = t_embedder(t) + y_embedder(y) (+ dt_embedder(dt) if take_dt, + gw_embedder(gw) if take_gw)
//!      # y absent: K; dt absent: 0; gw absent: 1. The class table has K+1 rows only when
//!      # class_dropout_prob > 0. In train mode with enable_dropout and class_dropout_prob != 0,
//!      # labels are first dropped to K where uniform([B]) from `label_dropout` < class_dropout_prob.
//! block(x, c): (sh1, sc1, g1, sh2, sc2, g2) = split(Linear(D, 6D)(silu(c)), 6)
//!      x = x + g1 * attn(LN(x) * (1 + sc1) + sh1)
//!      x = x + g2 * mlp(LN(x) * (1 + sc2) + sh2)       # mlp: Linear - gelu(tanh) - Linear
//! final: (sh, sc) = split(Linear(D, 2D)(silu(c)), 2); Linear(D, p*p*C)(LN(x) * (1 + sc) + sh)
//! unpatchify: each token's p*p*C values are ordered (p, q, C) -> [B, H, W, C]
//! LN: eps 1e-6, no scale or bias, var = max(0, E[x^2] - E[x]^2), (x - E[x]) * rsqrt(var + eps)
//! attn: q/k/v = x W + b with kernels [D, heads, hd], biases [heads, hd];
//!       softmax((q / sqrt(hd)) k^T) v; out kernel [heads, hd, D], bias [D]
//! ```
//!
//! The forward returns the output `[B, H, W, C]` and each block's tokens `[B, T, D]`
//! (after both residuals), first block first: the features REPA aligns.
//!
//! Conventions and quirks:
//! - The patch embedding is computed as unfold + matmul (the conv kernel `[p, p, C, D]`
//!   flattened in `(p, q, C)` order), which equals the strided VALID conv.
//! - A `dt` or `gw` passed to a DiT built without `take_dt` / `take_gw` is an error naming
//!   it (the reference ignores it silently, which hides a network built for another
//!   interface; [`Backbone::accepts`] says what this one takes). An absent `dt` / `gw` of a DiT
//!   that takes one is `[B]` zeros / ones. (The reference's own default is a `[B, D]` array
//!   built after `t` has been replaced by its embedding, a shape bug; this crate uses the
//!   intended `[B]` zeros / ones, as docs/reference.md specifies.)
//! - Train / eval mode comes with each call ([`Pass::train`]): label dropout is drawn only in
//!   train mode, from the pass's streams.
//! - Quirk Q10: a label outside the class table (the null class `K` of a DiT built with
//!   `class_dropout_prob = 0`, or 1000 for `K < 1000`) reads NaN, as `jnp.take`'s fill mode
//!   does; negative labels in `[-rows, 0)` wrap, as in `jnp.take`.
//! - Attention runs on the plain math path (matmul + softmax) by default, so that forward-
//!   mode AD and double backward work (the autograd JVP backends need them); [`Attention::Fused`]
//!   switches to libtorch's `scaled_dot_product_attention` for speed, and the fused JVP
//!   ([`FusedJvp`], MeanFlow's default) keeps it.
//! - LayerNorms use the reference's fast-variance arithmetic by default;
//!   [`LayerNorm::Fused`] switches to libtorch's `layer_norm` kernel for speed (same function,
//!   other rounding; it keeps forward-AD and double-backward support).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use tch::{Device, Tensor};

use super::common::{self, Absent, Attention, LayerNorm, ParamTable, ScaleOn};
use super::weights::{check_names_and_shapes, Weights};
use super::tangent::{self, Dual};
use super::{Accepts, Backbone, Cond, FusedJvp, NetOutput, Pass};
use crate::jvp::NetTangents;
use crate::error::{Error, Result};
use crate::interfaces::Fields;

/// Settings of [`Dit`], with the reference's names. The default is the reference's
/// DiT-XL/2 on 32x32x4 latents (the DiT paper's ImageNet 256 model): input 32, patch 2,
/// 4 channels, hidden 1152, depth 28, 16 heads, MLP ratio 4, sinusoidal time embedding of
/// 256 frequencies, 1000 classes with label dropout 0.1 (enabled), no `dt` / `gw` input.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DitConfig {
    /// Spatial size `H = W` of the input.
    pub input_size: i64,
    /// Patch size `p` (the patch embedding's kernel and stride).
    pub patch_size: i64,
    /// Input / output channels `C`.
    pub in_channels: i64,
    /// Hidden size `D`.
    pub hidden_size: i64,
    /// Number of blocks.
    pub depth: i64,
    /// Attention heads (`D` must be a multiple).
    pub num_heads: i64,
    /// MLP width as a multiple of `D` (the width is `int(D * mlp_ratio)`).
    pub mlp_ratio: f64,
    /// `true`: Gaussian-basis time embedding; `false`: sinusoidal.
    pub continuous_time_embed: bool,
    /// Frequency feature size `F` of the time embedders.
    pub freq_embed_size: i64,
    /// Number of classes `K` (label `K` is the null class when the table has a null row).
    pub num_classes: i64,
    /// Probability of dropping a label to `K` in train mode; `> 0` adds the null row.
    pub class_dropout_prob: f64,
    /// Whether label dropout is applied in train mode.
    pub enable_dropout: bool,
    /// Whether the network takes an interval length `dt` (MeanFlow).
    pub take_dt: bool,
    /// Whether the network takes a guidance weight `gw`.
    pub take_gw: bool,
}

impl Default for DitConfig {
    fn default() -> Self {
        DitConfig {
            input_size: 32,
            patch_size: 2,
            in_channels: 4,
            hidden_size: 1152,
            depth: 28,
            num_heads: 16,
            mlp_ratio: 4.0,
            continuous_time_embed: false,
            freq_embed_size: 256,
            num_classes: 1000,
            class_dropout_prob: 0.1,
            enable_dropout: true,
            take_dt: false,
            take_gw: false,
        }
    }
}

impl DitConfig {
    /// Returns the settings if they describe a buildable DiT: sizes positive, `input_size` a
    /// multiple of `patch_size`, `hidden_size` a multiple of `num_heads` and of 4 (the 2-D
    /// sin-cos table splits it in four), `mlp_ratio` giving a width of at least 1,
    /// `class_dropout_prob` in `[0, 1]`, and an even `freq_embed_size` for the continuous
    /// embedding (its features are `[sin, cos]` of `F/2` basis entries).
    pub fn validated(self) -> Result<DitConfig> {
        self.validate()?;
        Ok(self)
    }

    /// Checks the settings (see [`DitConfig::validated`]).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("input_size", self.input_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
            ("freq_embed_size", self.freq_embed_size),
            ("num_classes", self.num_classes),
        ] {
            if v <= 0 {
                return Err(Error::invalid(name, "a positive size", v));
            }
        }
        if self.input_size % self.patch_size != 0 {
            return Err(Error::invalid("input_size", format!("a multiple of patch_size {}", self.patch_size), self.input_size));
        }
        if self.hidden_size % self.num_heads != 0 {
            return Err(Error::invalid("hidden_size", format!("a multiple of num_heads {}", self.num_heads), self.hidden_size));
        }
        if self.hidden_size % 4 != 0 {
            return Err(Error::invalid("hidden_size", "a multiple of 4 (the 2-D sin-cos position table)", self.hidden_size));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) || self.mlp_hidden() < 1 {
            return Err(Error::invalid("mlp_ratio", "a finite ratio giving an MLP width of at least 1", self.mlp_ratio));
        }
        if !(0.0..=1.0).contains(&self.class_dropout_prob) {
            return Err(Error::invalid("class_dropout_prob", "a probability in [0, 1]", self.class_dropout_prob));
        }
        if self.continuous_time_embed && self.freq_embed_size % 2 != 0 {
            return Err(Error::invalid("freq_embed_size", "an even size for the continuous time embedding", self.freq_embed_size));
        }
        Ok(())
    }

    /// Tokens per side, `input_size / patch_size`.
    pub fn grid(&self) -> i64 {
        self.input_size / self.patch_size
    }

    /// Number of tokens `T = grid^2`.
    pub fn tokens(&self) -> i64 {
        self.grid() * self.grid()
    }

    /// Head width `D / num_heads`.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_heads
    }

    /// MLP width `int(D * mlp_ratio)` (truncation, as Python's `int`).
    pub fn mlp_hidden(&self) -> i64 {
        (self.hidden_size as f64 * self.mlp_ratio) as i64
    }

    /// Rows of the class table: `K + 1` when `class_dropout_prob > 0` (the null row), else `K`.
    pub fn table_rows(&self) -> i64 {
        self.num_classes + i64::from(self.class_dropout_prob > 0.0)
    }

    /// The time-like embedders present: `t_embedder`, then `dt_embedder` and `gw_embedder`
    /// when taken.
    pub fn embedders(&self) -> Vec<&'static str> {
        let mut e = vec!["t_embedder"];
        if self.take_dt {
            e.push("dt_embedder");
        }
        if self.take_gw {
            e.push("gw_embedder");
        }
        e
    }

    /// The paths and shapes every DiT-like backbone has, unsorted: the patch projection, the
    /// `t` / `dt` / `gw` embedders, the class table and the final layer.
    pub(crate) fn shared_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let (p, c, d, f) = (self.patch_size, self.in_channels, self.hidden_size, self.freq_embed_size);
        let mut s: Vec<(String, Vec<i64>)> = vec![("x_proj.kernel".into(), vec![p, p, c, d]), ("x_proj.bias".into(), vec![d])];
        for e in self.embedders() {
            if self.continuous_time_embed {
                s.push((format!("{e}.gaussian_basis"), vec![f / 2]));
            }
            s.push((format!("{e}.mlp.layers.0.kernel"), vec![f, d]));
            s.push((format!("{e}.mlp.layers.0.bias"), vec![d]));
            s.push((format!("{e}.mlp.layers.2.kernel"), vec![d, d]));
            s.push((format!("{e}.mlp.layers.2.bias"), vec![d]));
        }
        s.push(("y_embedder.embedding_table.embedding".into(), vec![self.table_rows(), d]));
        s.push(("final_layer.adaLN_mod.layers.1.kernel".into(), vec![d, 2 * d]));
        s.push(("final_layer.adaLN_mod.layers.1.bias".into(), vec![2 * d]));
        s.push(("final_layer.linear.kernel".into(), vec![d, p * p * c]));
        s.push(("final_layer.linear.bias".into(), vec![p * p * c]));
        s
    }

    /// Takes the DiT's keys from a flat settings object (for a config that embeds this one).
    pub(crate) fn read(&mut self, f: &mut Fields) -> std::result::Result<(), String> {
        f.take("input_size", &mut self.input_size)?;
        f.take("patch_size", &mut self.patch_size)?;
        f.take("in_channels", &mut self.in_channels)?;
        f.take("hidden_size", &mut self.hidden_size)?;
        f.take("depth", &mut self.depth)?;
        f.take("num_heads", &mut self.num_heads)?;
        f.take("mlp_ratio", &mut self.mlp_ratio)?;
        f.take("continuous_time_embed", &mut self.continuous_time_embed)?;
        f.take("freq_embed_size", &mut self.freq_embed_size)?;
        f.take("num_classes", &mut self.num_classes)?;
        f.take("class_dropout_prob", &mut self.class_dropout_prob)?;
        f.take("enable_dropout", &mut self.enable_dropout)?;
        f.take("take_dt", &mut self.take_dt)?;
        f.take("take_gw", &mut self.take_gw)
    }

    /// Every trainable parameter's reference path and shape, sorted by path.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let (d, h) = (self.hidden_size, self.num_heads);
        let (hd, m) = (self.head_dim(), self.mlp_hidden());
        let mut s = self.shared_shapes();
        for i in 0..self.depth {
            let b = format!("blocks.{i}");
            s.push((format!("{b}.adaLN_mod.layers.1.kernel"), vec![d, 6 * d]));
            s.push((format!("{b}.adaLN_mod.layers.1.bias"), vec![6 * d]));
            for q in ["query", "key", "value"] {
                s.push((format!("{b}.attn.{q}.kernel"), vec![d, h, hd]));
                s.push((format!("{b}.attn.{q}.bias"), vec![h, hd]));
            }
            s.push((format!("{b}.attn.out.kernel"), vec![h, hd, d]));
            s.push((format!("{b}.attn.out.bias"), vec![d]));
            s.push((format!("{b}.mlp.linear1.kernel"), vec![d, m]));
            s.push((format!("{b}.mlp.linear1.bias"), vec![m]));
            s.push((format!("{b}.mlp.linear2.kernel"), vec![m, d]));
            s.push((format!("{b}.mlp.linear2.bias"), vec![d]));
        }
        s.sort();
        s
    }

    /// Every buffer's path and shape: `x_embedder.pe` `[1, T, D]`.
    pub fn buffer_shapes(&self) -> Vec<(String, Vec<i64>)> {
        vec![(Dit::BUFFER_NAMES[0].to_string(), vec![1, self.tokens(), self.hidden_size])]
    }

    /// The number of trainable scalars.
    pub fn num_parameters(&self) -> i64 {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<i64>()).sum()
    }
}


/// The DiT; parameters are leaf tensors that require gradients.
#[derive(Debug)]
pub struct Dit {
    cfg: DitConfig,
    params: ParamTable,
    pe: Tensor,
    attention: Attention,
    layer_norm: LayerNorm,
}

impl Dit {
    /// Paths of the DiT's buffers (not trained, no gradient).
    pub const BUFFER_NAMES: [&'static str; 1] = ["x_embedder.pe"];

    /// Builds the network from parameters and buffers keyed by reference path (see
    /// [`DitConfig::parameter_shapes`]; the one buffer is `x_embedder.pe` `[1, T, D]`).
    /// A missing, extra or mis-shaped array is an [`Error::InvalidArgument`] naming its path.
    /// Parameters are converted to float32 and made leaves that require gradients. The
    /// network computes attention with [`Attention::Math`] and the reference's LayerNorm.
    pub fn from_params(cfg: DitConfig, params: BTreeMap<String, Tensor>, buffers: BTreeMap<String, Tensor>) -> Result<Dit> {
        cfg.validate()?;
        let params = ParamTable::new(&cfg.parameter_shapes(), params, "x_proj.kernel")?;
        check_names_and_shapes("buffer", &cfg.buffer_shapes(), &buffers)?;
        let pe = buffers[Dit::BUFFER_NAMES[0]].f_to_kind(tch::Kind::Float)?.f_to_device(params.device())?.f_detach()?;
        Ok(Dit { cfg, params, pe, attention: Attention::Math, layer_norm: LayerNorm::FastVariance })
    }

    /// Builds the network from [`Weights`] (see [`Dit::from_params`]).
    pub fn from_weights(cfg: DitConfig, w: Weights) -> Result<Dit> {
        Dit::from_params(cfg, w.params, w.buffers)
    }

    /// Loads a directory of `param.<path>.npy` / `buffer.<path>.npy` files onto `device`.
    pub fn load_npy_dir(cfg: DitConfig, dir: &Path, device: Device) -> Result<Dit> {
        Dit::from_weights(cfg, Weights::from_npy_dir(dir, device)?)
    }

    /// Loads one `.safetensors` file onto `device` (keys `param.<path>` / `buffer.<path>`, or
    /// bare paths, `x_embedder.pe` being the buffer). When the file has no `x_embedder.pe`,
    /// the table is computed ([`Dit::default_buffers`]), since it is fixed by the settings.
    pub fn load_safetensors(cfg: DitConfig, path: &Path, device: Device) -> Result<Dit> {
        let mut w = Weights::from_safetensors(path, &Dit::BUFFER_NAMES, device)?;
        if w.buffers.is_empty() {
            w.buffers = Dit::default_buffers(&cfg, device)?;
        }
        Dit::from_weights(cfg, w)
    }

    /// The buffers a fresh model uses: `x_embedder.pe` = [`common::sincos_pos_embed_2d`]`(D,
    /// grid)` as `[1, T, D]`.
    pub fn default_buffers(cfg: &DitConfig, device: Device) -> Result<BTreeMap<String, Tensor>> {
        cfg.validate()?;
        Ok(BTreeMap::from([(Dit::BUFFER_NAMES[0].to_string(), common::pos_embed_buffer(cfg, device)?)]))
    }

    /// A freshly initialised model (torch's global generator seeded with `seed`), with the
    /// DiT paper's adaLN-Zero initialisation as in its released code: dense, attention and
    /// patch kernels Xavier-uniform with zero biases; time-embedder MLP kernels and the class
    /// table `N(0, 0.02^2)`; every adaLN modulation and the final linear layer zero (so the
    /// model starts as the zero function and each block as the identity); `gaussian_basis`
    /// `N(0, 1)` (diffuse_nnx's own initialisers are not pinned by any golden case).
    pub fn init(cfg: DitConfig, seed: i64, device: Device) -> Result<Dit> {
        cfg.validate()?;
        tch::manual_seed(seed);
        let mut params = BTreeMap::new();
        for (name, shape) in cfg.parameter_shapes() {
            let t = common::init_param(&name, &shape, device)?;
            params.insert(name, t);
        }
        Dit::from_params(cfg.clone(), params, Dit::default_buffers(&cfg, device)?)
    }

    /// The settings.
    pub fn config(&self) -> &DitConfig {
        &self.cfg
    }

    /// The position table `x_embedder.pe` `[1, T, D]`.
    pub fn pos_embed(&self) -> &Tensor {
        &self.pe
    }

    /// How attention is computed.
    pub fn attention(&self) -> Attention {
        self.attention
    }

    /// Switches the attention implementation (see [`Attention`]).
    pub fn set_attention(&mut self, a: Attention) {
        self.attention = a;
    }

    /// This network with another attention implementation.
    pub fn with_attention(mut self, a: Attention) -> Dit {
        self.attention = a;
        self
    }

    /// How the LayerNorms are computed.
    pub fn layer_norm(&self) -> LayerNorm {
        self.layer_norm
    }

    /// Switches the LayerNorm implementation (see [`LayerNorm`]).
    pub fn set_layer_norm(&mut self, n: LayerNorm) {
        self.layer_norm = n;
    }

    /// This network with another LayerNorm implementation.
    pub fn with_layer_norm(mut self, n: LayerNorm) -> Dit {
        self.layer_norm = n;
        self
    }

    /// A float64 copy (parameters and buffer converted, new leaves), for numerical checks:
    /// finite differences of the network or of a loss at double precision. It takes float64
    /// `x`; the reference, the golden cases and [`Dit::from_params`] are float32.
    pub fn to_double(&self) -> Result<Dit> {
        Ok(Dit {
            cfg: self.cfg.clone(),
            params: self.params.to_kind(tch::Kind::Double)?,
            pe: self.pe.f_detach()?.f_to_kind(tch::Kind::Double)?,
            attention: self.attention,
            layer_norm: self.layer_norm,
        })
    }

    /// The parameters and buffers, e.g. to save them with [`Weights::write_safetensors`].
    pub fn weights(&self) -> Weights {
        Weights { params: self.params.to_map(), buffers: BTreeMap::from([(Dit::BUFFER_NAMES[0].to_string(), self.pe.shallow_clone())]) }
    }

    fn attn(&self, prefix: &str, x: &Dual, kind: Attention) -> Result<Dual> {
        let (b, t) = (x.primal.size()[0], x.primal.size()[1]);
        let (d, h, hd) = (self.cfg.hidden_size, self.cfg.num_heads, self.cfg.head_dim());
        let proj = |name: &str| -> Result<Dual> {
            let k = self.params.p(&format!("{prefix}.{name}.kernel"))?.f_reshape([d, h * hd])?;
            let bias = self.params.p(&format!("{prefix}.{name}.bias"))?.f_reshape([h * hd])?;
            // [B, T, H*hd] -> [B, H, T, hd]
            tangent::linear(x, &k, Some(&bias))?.linear_map(|z| Ok(z.f_reshape([b, t, h, hd])?.f_transpose(1, 2)?))
        };
        let (q, k, v) = (proj("query")?, proj("key")?, proj("value")?);
        let o = common::attention(&q, &k, &v, kind, ScaleOn::Query)?;
        let o = o.linear_map(|z| Ok(z.f_transpose(1, 2)?.f_reshape([b, t, h * hd])?))?;
        let wo = self.params.p(&format!("{prefix}.out.kernel"))?.f_reshape([h * hd, d])?;
        tangent::linear(&o, &wo, Some(self.params.p(&format!("{prefix}.out.bias"))?))
    }

    fn mlp(&self, prefix: &str, x: &Dual) -> Result<Dual> {
        let h = tangent::gelu_tanh(&self.params.linear(&format!("{prefix}.linear1"), x)?)?;
        self.params.linear(&format!("{prefix}.linear2"), &h)
    }

    fn block(&self, i: i64, x: &Dual, silu_c: &Dual, kind: Attention) -> Result<Dual> {
        let pre = format!("blocks.{i}");
        let ln = |x: &Dual| common::layer_norm(x, self.layer_norm);
        let m = self.params.linear(&format!("{pre}.adaLN_mod.layers.1"), silu_c)?.chunk(6, -1)?;
        let a = self.attn(&format!("{pre}.attn"), &tangent::modulate(&ln(x)?, Some(&m[0]), &m[1])?, kind)?;
        let x = common::gated_residual(x, &m[2], &a)?;
        let h = self.mlp(&format!("{pre}.mlp"), &tangent::modulate(&ln(&x)?, Some(&m[3]), &m[4])?)?;
        common::gated_residual(&x, &m[5], &h)
    }

    /// The network on dual inputs: the plain forward on constants, the fused JVP with
    /// tangents on `x`, `t` and `dt`; the attention kernel `kind`. Returns the output and the
    /// block features (primals).
    fn run(&self, x: &Dual, t: &Dual, cond: Cond<'_>, dt_tangent: Option<&Tensor>, pass: Pass<'_>, kind: Attention) -> Result<(Dual, Vec<Tensor>)> {
        crate::validate::conditioning(&self.accepts(), &cond)?;
        let dropout = (pass.train && self.cfg.enable_dropout, "the DiT draws label dropout in train mode with enable_dropout");
        common::skeleton(
            &self.params,
            &self.cfg,
            &self.pe,
            (x, t),
            &cond,
            dt_tangent,
            pass.rngs,
            dropout,
            Absent::Fill,
            || Ok(()),
            |i, h, silu_c| self.block(i, h, silu_c, kind),
            |h| common::layer_norm(h, self.layer_norm),
        )
    }
}

impl Backbone for Dit {
    /// Takes labels, and `dt` / `gw` when built with `take_dt` / `take_gw`; no extra inputs.
    /// Shapes, dtypes and devices are checked; values are not (a label outside the class
    /// table reads NaN, quirk Q10), so the DiT makes no device-to-host read.
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, pass: Pass<'_>) -> Result<NetOutput> {
        let (x, t) = (Dual::constant(x.shallow_clone()), Dual::constant(t.shallow_clone()));
        let (out, features) = self.run(&x, &t, cond, None, pass, common::forward_attention(self.attention))?;
        Ok(NetOutput { out: out.primal, features })
    }

    fn fused_jvp(&self) -> Option<&dyn FusedJvp> {
        Some(self)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.params.list()
    }

    fn accepts(&self) -> Accepts<'_> {
        Accepts { labels: true, dt: self.cfg.take_dt, gw: self.cfg.take_gw, extra: &[] }
    }
}

impl FusedJvp for Dit {
    /// The DiT's forward with every layer's tangent computed beside it (the rules of
    /// [`tangent`]): the primal is the plain forward's bit for bit, on the network's own
    /// attention kernel ([`Attention::Fused`] stays fused: its tangent recomputes the softmax
    /// without a graph).
    fn forward_jvp(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, tangents: NetTangents<'_>, pass: Pass<'_>) -> Result<(NetOutput, Tensor)> {
        let x = Dual::new(x.shallow_clone(), Some(tangents.x.shallow_clone()));
        let t = Dual::new(t.shallow_clone(), Some(tangents.t.shallow_clone()));
        let (out, features) = self.run(&x, &t, cond, tangents.dt, pass, self.attention)?;
        let tangent = out.tangent_or_zeros()?;
        Ok((NetOutput { out: out.primal, features }, tangent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rngs;
    use tch::Kind;

    fn tiny() -> DitConfig {
        DitConfig {
            input_size: 4,
            patch_size: 2,
            in_channels: 3,
            hidden_size: 8,
            depth: 2,
            num_heads: 2,
            mlp_ratio: 1.5,
            freq_embed_size: 6,
            num_classes: 5,
            ..DitConfig::default()
        }
    }

    fn weights(cfg: &DitConfig) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) {
        let d = Dit::init(cfg.clone(), 0, Device::Cpu).unwrap();
        let w = d.weights();
        (w.params.into_iter().map(|(k, v)| (k, v.detach().copy())).collect(), w.buffers)
    }

    #[test]
    fn from_params_names_missing_extra_and_misshaped_parameters() {
        let cfg = tiny();
        let (params, buffers) = weights(&cfg);

        let mut p = params.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect::<BTreeMap<_, _>>();
        p.remove("blocks.1.attn.key.bias");
        let e = Dit::from_params(cfg.clone(), p, buffers.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "parameter blocks.1.attn.key.bias"), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");

        let mut p = params.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect::<BTreeMap<_, _>>();
        p.insert("blocks.2.attn.key.bias".into(), Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)));
        let e = Dit::from_params(cfg.clone(), p, buffers.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "parameter blocks.2.attn.key.bias"), "{e}");
        assert!(e.to_string().contains("extra"), "{e}");

        let mut p = params.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect::<BTreeMap<_, _>>();
        p.insert("x_proj.kernel".into(), Tensor::zeros([2, 2, 8, 3], (Kind::Float, Device::Cpu)));
        let e = Dit::from_params(cfg.clone(), p, buffers.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "parameter x_proj.kernel"), "{e}");
        assert!(e.to_string().contains("[2, 2, 3, 8]"), "{e}");

        let e = Dit::from_params(cfg.clone(), params, BTreeMap::new()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "buffer x_embedder.pe"), "{e}");
    }

    #[test]
    fn npy_dir_and_safetensors_round_trip_and_refuse_bad_files() {
        let cfg = tiny();
        let dit = Dit::init(cfg.clone(), 3, Device::Cpu).unwrap();
        let dir = std::env::temp_dir().join(format!("diffuse-spec-dit-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // safetensors round trip
        let st = dir.join("w.safetensors");
        dit.weights().write_safetensors(&st).unwrap();
        let back = Dit::load_safetensors(cfg.clone(), &st, Device::Cpu).unwrap();
        for ((k1, v1), (k2, v2)) in dit.parameters().iter().zip(back.parameters()) {
            assert_eq!(k1, &k2);
            assert!(v1.equal(&v2), "{k1}");
        }
        // a safetensors file with a parameter missing is refused, naming it
        let mut w = dit.weights();
        w.params.remove("final_layer.linear.bias");
        w.write_safetensors(&st).unwrap();
        let e = Dit::load_safetensors(cfg.clone(), &st, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("parameter final_layer.linear.bias") && e.contains("missing"), "{e}");
        // npy directory: write the arrays, read them back, then break one shape
        let write = |name: &str, t: &Tensor| {
            let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
            let v = Vec::<f32>::try_from(&t.detach().reshape([-1])).unwrap();
            crate::golden::Array::f32(shape, v).unwrap().write_npy(&dir.join(format!("{name}.npy"))).unwrap();
        };
        for (k, v) in dit.parameters() {
            write(&format!("param.{k}"), &v);
        }
        write("buffer.x_embedder.pe", dit.pos_embed());
        write("in.x", &Tensor::zeros([1], (Kind::Float, Device::Cpu)));
        let back = Dit::load_npy_dir(cfg.clone(), &dir, Device::Cpu).unwrap();
        assert!(back.pos_embed().equal(dit.pos_embed()));
        write("param.blocks.0.mlp.linear1.bias", &Tensor::zeros([13], (Kind::Float, Device::Cpu)));
        let e = Dit::load_npy_dir(cfg.clone(), &dir, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("parameter blocks.0.mlp.linear1.bias") && e.contains("[13]"), "{e}");
        write("param.blocks.0.mlp.linear1.bias", &Tensor::zeros([12], (Kind::Float, Device::Cpu)));
        write("param.blocks.0.mlp.extra", &Tensor::zeros([12], (Kind::Float, Device::Cpu)));
        let e = Dit::load_npy_dir(cfg, &dir, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("parameter blocks.0.mlp.extra") && e.contains("extra"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_validation_and_defaults() {
        let d = DitConfig::default();
        assert_eq!((d.hidden_size, d.depth, d.num_heads, d.patch_size, d.input_size), (1152, 28, 16, 2, 32));
        // DiT-XL/2 has about 675M parameters.
        let n = d.num_parameters();
        assert!((670_000_000..680_000_000).contains(&n), "{n}");
        assert!(DitConfig { hidden_size: 30, num_heads: 3, ..tiny() }.validated().is_err());
        assert!(DitConfig { input_size: 5, ..tiny() }.validated().is_err());
        assert!(DitConfig { class_dropout_prob: 1.5, ..tiny() }.validated().is_err());
        assert!(DitConfig { continuous_time_embed: true, freq_embed_size: 5, ..tiny() }.validated().is_err());
        let e: std::result::Result<DitConfig, _> = serde_json::from_str(r#"{"hidden": 3}"#);
        assert!(e.is_err());
    }

    #[test]
    fn forward_shapes_dropout_draws_and_math_equals_fused_attention() {
        let cfg = DitConfig { class_dropout_prob: 0.5, take_dt: true, ..tiny() };
        let (mut params, buffers) = weights(&cfg);
        // non-zero gates so that every block matters
        for (k, v) in params.iter_mut() {
            if k.contains("adaLN") || k.starts_with("final_layer") {
                *v = v.randn_like() * 0.1;
            }
        }
        let dit = Dit::from_params(cfg.clone(), params, buffers).unwrap();
        let x = Tensor::randn([3, 4, 4, 3], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0.1f32, 0.5, 0.9]);
        let y = Tensor::from_slice(&[0i64, 4, 5]);
        // train mode with dropout draws one count of label_dropout, and needs streams
        assert!(dit.forward(&x, &t, Cond::labels(Some(&y)), Pass::new(true, None)).is_err());
        let mut rngs = Rngs::new(&[("label_dropout", 1)]).unwrap();
        let o = dit.forward(&x, &t, Cond::labels(Some(&y)), Pass::train(&mut rngs)).unwrap();
        assert_eq!(rngs.counter("label_dropout").unwrap(), 1);
        assert_eq!(o.out.size(), [3, 4, 4, 3]);
        assert_eq!(o.features.len(), 2);
        assert_eq!(o.features[1].size(), [3, 4, 8]);
        let a = dit.forward(&x, &t, Cond::labels(Some(&y)), Pass::eval()).unwrap().out;
        let dit = dit.with_attention(Attention::Fused);
        let f = dit.forward(&x, &t, Cond::labels(Some(&y)), Pass::eval()).unwrap().out;
        // a gw to a DiT without take_gw is refused, naming it
        let e = dit.forward(&x, &t, Cond { gw: Some(&t), ..Cond::default() }, Pass::eval()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "gw"), "{e}");
        assert!(a.allclose(&f, 1e-5, 1e-6, false));
        // Q10: a label past the table reads NaN, only for that example
        let cfg0 = DitConfig { class_dropout_prob: 0.0, ..tiny() };
        let (p0, b0) = weights(&cfg0);
        let d0 = Dit::from_params(cfg0, p0, b0).unwrap();
        let o = d0.forward(&x, &t, Cond::labels(Some(&Tensor::from_slice(&[0i64, 5, -1]))), Pass::eval()).unwrap().out;
        let e = d0.forward(&x, &t, Cond { dt: Some(&t), ..Cond::default() }, Pass::eval()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "dt"), "{e}");
        let nan = o.isnan().any_dim(-1, false).any_dim(-1, false).any_dim(-1, false);
        assert_eq!(Vec::<bool>::try_from(&nan).unwrap(), vec![false, true, false]);
    }

    #[test]
    fn fused_layer_norm_matches_the_reference_arithmetic_and_supports_both_jvps() {
        let cfg = DitConfig { take_dt: true, ..tiny() };
        let (mut params, buffers) = weights(&cfg);
        for (k, v) in params.iter_mut() {
            if k.contains("adaLN") || k.starts_with("final_layer") {
                *v = v.randn_like() * 0.1;
            }
        }
        let mut dit = Dit::from_params(cfg, params, buffers).unwrap();
        assert_eq!(dit.layer_norm(), LayerNorm::FastVariance);
        let x = Tensor::randn([3, 4, 4, 3], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0.1f32, 0.5, 0.9]);
        let y = Tensor::from_slice(&[0i64, 4, 2]);
        let cond = Cond { y: Some(&y), dt: Some(&t), ..Cond::default() };
        let a = dit.forward(&x, &t, cond, Pass::eval()).unwrap().out;
        dit.set_layer_norm(LayerNorm::Fused);
        let f = dit.forward(&x, &t, cond, Pass::eval()).unwrap().out;
        assert!(a.allclose(&f, 1e-5, 1e-6, false));
        // Both JVP backends run through the fused LayerNorm and agree.
        let v = x.randn_like();
        let mut g = |p: &[Tensor]| -> Result<Tensor> { Ok(dit.forward(&p[0], &p[1], cond, Pass::eval())?.out) };
        let primals = [x.shallow_clone(), t.shallow_clone()];
        let tangents = [Some(v), Some(t.ones_like())];
        let (_, db) = crate::jvp::jvp(crate::jvp::JvpBackend::DoubleBackward, &mut g, &primals, &tangents).unwrap();
        let (_, fa) = crate::jvp::jvp(crate::jvp::JvpBackend::ForwardAd, &mut g, &primals, &tangents).unwrap();
        assert!(db.allclose(&fa, 1e-4, 1e-5, false));
    }

    #[test]
    fn math_attention_supports_double_backward() {
        let cfg = tiny();
        let (mut params, buffers) = weights(&cfg);
        for (k, v) in params.iter_mut() {
            if k.contains("adaLN") || k.starts_with("final_layer") {
                *v = v.randn_like() * 0.1;
            }
        }
        let dit = Dit::from_params(cfg, params, buffers).unwrap();
        let x = Tensor::randn([2, 4, 4, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let t = Tensor::from_slice(&[0.2f32, 0.7]);
        let o = dit.forward(&x, &t, Cond::default(), Pass::eval()).unwrap().out;
        let g = Tensor::run_backward(&[o.square().sum(Kind::Float)], &[&x], true, true).pop().unwrap();
        let gg = Tensor::run_backward(&[g.square().sum(Kind::Float)], &[&x], false, false).pop().unwrap();
        assert!(gg.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
