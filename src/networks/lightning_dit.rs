//! `lightning_dit`: the reference's LightningDiT (diffuse_nnx
//! `networks/transformers/lightning_dit_nnx.py`; the architecture of Yao et al., "Reconstruction
//! vs. Generation: Taming Optimization Dilemma in Latent Diffusion Models", CVPR 2025), the
//! backbone its shipped ImageNet configurations train (with `swiglu`, `use_rope`, `rms_norm`
//! and `adaln_shift` on).
//!
//! The DiT with five switches (all off by default). The patch embedding and `pe`, the `t` /
//! `dt` / `gw` embedders, the class table with its label dropout, the final layer and the
//! unpatchify are the DiT's, shared through `common.rs`. With hidden size `D`, `heads` heads
//! of width `hd`, `T` tokens on an `S x S` grid:
//!
//! ```text
//! c    = t_embedder(t) + y_embedder(y) (+ dt_embedder(dt)) (+ gw_embedder(gw))        as the DiT
//!        train mode, class_dropout_prob > 0: y = K where uniform([B]) < class_dropout_prob  (Q17)
//! N(x) = rms_norm ? x * rsqrt(mean(x^2, -1) + 1e-6) * rms_weight : LN(x) (the DiT's)
//! block(x, c), adaln_shift:    (sh1, sc1, g1, sh2, sc2, g2) = split(Linear(D, 6D)(silu(c)), 6)
//!      x = x + g1 * attn(N1(x) * (1 + sc1) + sh1);  x = x + g2 * mlp(N2(x) * (1 + sc2) + sh2)
//! block(x, c), no adaln_shift: (sc1, g1, sc2, g2) = split(Linear(D, 4D)(silu(c)), 4)
//!      x = x + g1 * attn(N1(x) * (1 + sc1));         x = x + g2 * mlp(N2(x) * (1 + sc2))
//! attn: [q | k | v] = x @ to_qkv [D, 3D] + b, read as [B, T, 3, heads, hd] -> q, k, v [B, heads, T, hd]
//!       qk_norm: q = QK(q), k = QK(k): one LayerNorm over hd with scale and bias (Q18)
//!       use_rope: q = rope(q), k = rope(k);  o = softmax(q @ (k^T / sqrt(hd))) @ v
//!       o -> [B, T, D] (heads major) @ out [D, D] + b
//! rope(z) = z * cos + rotate_half(z) * sin, rotate_half: (z_2m, z_2m+1) -> (-z_2m+1, z_2m)
//!       cos, sin = buffers feat_rope.freqs_{cos,sin} [T, hd] (see [`rope_tables`])
//! mlp:  swiglu ? linear3(silu(a) * b), (a, b) = split(linear12(x), 2), width int(2/3 int(D mlp_ratio))
//!              : linear2(gelu_tanh(linear1(x))), width int(D mlp_ratio)
//! final: (sh, sc) = split(Linear(D, 2D)(silu(c)), 2);  Linear(D, p*p*C)(N_f(x) * (1 + sc) + sh)
//! ```
//!
//! The forward returns the output `[B, H, W, C]` and each block's tokens `[B, T, D]` (after
//! both residuals): the features REPA aligns.
//!
//! Quirks, each faithful by default:
//! - **Q15.** Built with `take_dt` (`take_gw`) and called without `dt` (`gw`), the reference
//!   crashes: its fallback `zeros_like(t)` (`ones_like(t)`) is taken after `t` became its
//!   `[B, D]` embedding. The crate refuses such a call before drawing anything;
//!   [`AbsentDtGw::Fill`] (`absent_dt_gw: fill`) uses the intended `dt = zeros([B])`,
//!   `gw = ones([B])`. MeanFlow always passes `dt`; SiT / EDM on such a network need `fill`.
//! - **Q16.** `qk_norm` with `attn_norm_layer: rms_norm` cannot be built in the reference
//!   (its RMSNorm takes no `rngs`): refused by [`LightningDitConfig::validate`];
//!   [`RmsQkNorm::Build`] (`rms_qk_norm: build`) builds the RMSNorm q/k norm the settings
//!   describe, `attn.k_norm.rms_weight` `[hd]`, shared by q and k as Q18 says.
//! - **Q17.** `enable_dropout` is not passed on to the class embedder: in train mode labels
//!   are dropped whenever `class_dropout_prob > 0`. `honor_enable_dropout: true` makes
//!   `enable_dropout: false` switch label dropout off, as in the DiT.
//! - **Q18.** The q-norm and the k-norm are one module: one `scale` and one `bias`, stored as
//!   `attn.k_norm.*`, normalise both q and k.
//! - `rope_init_theta` / `rope_init_scale` of the reference do nothing (the learned rotary
//!   embedder is commented out), so they are not settings here.
//!
//! Conventions: attention runs on the math path by default ([`Attention::Math`]; always
//! inside a JVP), LayerNorms with the reference's fast variance ([`LayerNorm::FastVariance`];
//! the q/k LayerNorm too); RMSNorms are plain elementwise ops. Every op has forward-AD and
//! double-backward formulas, so MeanFlow's JVP runs with both backends. As in the DiT, a `dt`
//! or `gw` given to a network that does not take it is refused, and labels outside the class
//! table read NaN (Q10).
//!
//! Loading and training (the settings as the reference's config names them; a checkpoint by
//! reference path, in `.safetensors` or a directory of `param.<path>.npy`):
//!
//! ```
//! # fn main() -> diffuse_spec::Result<()> {
//! use diffuse_spec::interfaces::{Interface, MeanFlow, MeanFlowConfig};
//! use diffuse_spec::networks::{Cond, LightningDit, LightningDitConfig};
//! use diffuse_spec::rng::Rngs;
//! use tch::{Device, Kind};
//!
//! let cfg: LightningDitConfig = serde_json::from_str(r#"{
//!     "input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 64, "depth": 2, "num_heads": 4,
//!     "swiglu": true, "use_rope": true, "rms_norm": true, "adaln_shift": true, "take_dt": true}"#).unwrap();
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("lightning.safetensors");
//! # LightningDit::init(cfg.clone(), 0, Device::Cpu)?.weights().write_safetensors(&path)?;
//! let net = LightningDit::load_safetensors(cfg, &path, Device::Cpu)?; // buffers computed if absent
//! let mf = MeanFlow::new(MeanFlowConfig::default())?;
//! let mut rngs = Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)])?;
//! let x = rngs.normal("noise", &[2, 8, 8, 4], Device::Cpu)?;
//! let out = mf.loss(&net, &x, Cond::labels(Some(&tch::Tensor::from_slice(&[3i64, 7]))), &mut rngs)?;
//! out.loss.mean(Kind::Float).backward();
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer};
use tch::{Device, Kind, Tensor};

use super::common::{self, Absent, Attention, LayerNorm, ParamTable, ScaleOn, LN_EPS};
use super::dit::DitConfig;
use super::weights::{check_names_and_shapes, Weights};
use super::tangent::{self, Dual};
use super::{Accepts, Backbone, Cond, FusedJvp, NetOutput, Pass};
use crate::jvp::NetTangents;
use crate::error::{Error, Result};
use crate::interfaces::flat_settings;

/// The norm layer of `qk_norm` (the reference's `attn_norm_layer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormLayer {
    /// LayerNorm over the head width, with scale and bias (eps 1e-6). The default.
    #[default]
    LayerNorm,
    /// RMSNorm over the head width: the reference cannot build it (Q16); see [`RmsQkNorm`].
    RmsNorm,
}

/// Crate option for quirk Q15: what a call without `dt` (`gw`) to a network built with
/// `take_dt` (`take_gw`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbsentDtGw {
    /// An error, as the reference cannot run the call (it crashes). The default.
    #[default]
    Refuse,
    /// The intended defaults: `dt = zeros([B])`, `gw = ones([B])`.
    Fill,
}

/// Crate option for quirk Q16: `qk_norm` with `attn_norm_layer: rms_norm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RmsQkNorm {
    /// Refuse the settings, as the reference cannot build them. The default.
    #[default]
    Refuse,
    /// Build an RMSNorm over the head width (`attn.k_norm.rms_weight` `[hd]`, eps 1e-6),
    /// one for q and k (Q18).
    Build,
}

/// Settings of [`LightningDit`], with the reference's names, read from one flat object (the
/// DiT's keys and these; an unknown key is refused by name). The shared settings and their
/// defaults are [`DitConfig`]'s (DiT-XL/2 sizes); every switch is off by default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LightningDitConfig {
    /// The settings shared with the DiT. `enable_dropout` is accepted and ignored (Q17) unless
    /// `honor_enable_dropout`.
    pub dit: DitConfig,
    /// Normalise q and k over the head width (one norm for both, Q18).
    pub qk_norm: bool,
    /// The norm of `qk_norm`.
    pub attn_norm_layer: NormLayer,
    /// 2-D rotary position embedding of q and k (the `pe` table is added all the same).
    pub use_rope: bool,
    /// SwiGLU MLP (`linear12`, `linear3`) instead of the DiT's GELU MLP.
    pub swiglu: bool,
    /// adaLN modulation with a shift (6 chunks); without it, scale and gate only (4 chunks).
    pub adaln_shift: bool,
    /// RMSNorm (with a learned weight) for the block and final norms instead of LayerNorm.
    pub rms_norm: bool,
    /// Crate option, quirk Q15 (default `refuse`).
    pub absent_dt_gw: AbsentDtGw,
    /// Crate option, quirk Q16 (default `refuse`).
    pub rms_qk_norm: RmsQkNorm,
    /// Crate option, quirk Q17: `true` lets `enable_dropout: false` switch label dropout off
    /// (default `false`: the reference ignores `enable_dropout`).
    pub honor_enable_dropout: bool,
}

impl<'de> Deserialize<'de> for LightningDitConfig {
    /// From one flat object: the DiT's keys and LightningDiT's.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        flat_settings(d, LightningDitConfig::default(), |c, f| {
            c.dit.read(f)?;
            f.take("qk_norm", &mut c.qk_norm)?;
            f.take("attn_norm_layer", &mut c.attn_norm_layer)?;
            f.take("use_rope", &mut c.use_rope)?;
            f.take("swiglu", &mut c.swiglu)?;
            f.take("adaln_shift", &mut c.adaln_shift)?;
            f.take("rms_norm", &mut c.rms_norm)?;
            f.take("absent_dt_gw", &mut c.absent_dt_gw)?;
            f.take("rms_qk_norm", &mut c.rms_qk_norm)?;
            f.take("honor_enable_dropout", &mut c.honor_enable_dropout)
        })
    }
}

impl LightningDitConfig {
    /// The switches of the reference's shipped ImageNet configurations on top of `dit`:
    /// SwiGLU, RoPE, RMSNorm and adaLN with shift.
    pub fn imagenet_switches(dit: DitConfig) -> LightningDitConfig {
        LightningDitConfig { dit, swiglu: true, use_rope: true, rms_norm: true, adaln_shift: true, ..LightningDitConfig::default() }
    }

    /// Returns the settings if they describe a buildable LightningDiT (see
    /// [`LightningDitConfig::validate`]).
    pub fn validated(self) -> Result<LightningDitConfig> {
        self.validate()?;
        Ok(self)
    }

    /// Checks the settings: the DiT's checks ([`DitConfig::validate`]); with `use_rope` a head
    /// width that is a multiple of 4 (rotated pairs, row and column halves); with `swiglu` a
    /// hidden width `int(2/3 int(D mlp_ratio))` of at least 1; and quirk Q16 (`qk_norm` over
    /// `rms_norm` refused unless `rms_qk_norm: build`).
    pub fn validate(&self) -> Result<()> {
        self.dit.validate()?;
        if self.use_rope && self.dit.head_dim() % 4 != 0 {
            return Err(Error::invalid("hidden_size", format!("a head width (hidden_size / num_heads) that is a multiple of 4 for use_rope, num_heads {}", self.dit.num_heads), self.dit.hidden_size));
        }
        if self.mlp_hidden() < 1 {
            return Err(Error::invalid("mlp_ratio", "a ratio giving a SwiGLU width int(2/3 * int(D * mlp_ratio)) of at least 1", self.dit.mlp_ratio));
        }
        if self.qk_norm && self.attn_norm_layer == NormLayer::RmsNorm && self.rms_qk_norm == RmsQkNorm::Refuse {
            return Err(Error::Unsupported {
                what: "LightningDiT with qk_norm and attn_norm_layer = rms_norm".into(),
                why: "quirk Q16: the reference cannot build it (its RMSNorm takes no rngs); rms_qk_norm: build gives RMSNorm q/k norms".into(),
            });
        }
        Ok(())
    }

    /// Width of the MLP's hidden layer: `int(D * mlp_ratio)`, and with `swiglu`
    /// `int(2/3 * int(D * mlp_ratio))` (Python's float and truncation).
    pub fn mlp_hidden(&self) -> i64 {
        let m = self.dit.mlp_hidden();
        if self.swiglu {
            (2.0 / 3.0 * m as f64) as i64
        } else {
            m
        }
    }

    /// Whether the q/k norm is an RMSNorm (Q16 corrected).
    fn rms_qk(&self) -> bool {
        self.qk_norm && self.attn_norm_layer == NormLayer::RmsNorm
    }

    /// Every trainable parameter's reference path and shape, sorted by path.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let d = self.dit.hidden_size;
        let (hd, m) = (self.dit.head_dim(), self.mlp_hidden());
        let chunks = if self.adaln_shift { 6 } else { 4 };
        let mut s = self.dit.shared_shapes();
        for i in 0..self.dit.depth {
            let b = format!("blocks.{i}");
            s.push((format!("{b}.adaLN_mod.layers.1.kernel"), vec![d, chunks * d]));
            s.push((format!("{b}.adaLN_mod.layers.1.bias"), vec![chunks * d]));
            if self.rms_norm {
                s.push((format!("{b}.norm1.rms_weight"), vec![d]));
                s.push((format!("{b}.norm2.rms_weight"), vec![d]));
            }
            s.push((format!("{b}.attn.to_qkv.kernel"), vec![d, 3 * d]));
            s.push((format!("{b}.attn.to_qkv.bias"), vec![3 * d]));
            if self.rms_qk() {
                s.push((format!("{b}.attn.k_norm.rms_weight"), vec![hd]));
            } else if self.qk_norm {
                s.push((format!("{b}.attn.k_norm.scale"), vec![hd]));
                s.push((format!("{b}.attn.k_norm.bias"), vec![hd]));
            }
            s.push((format!("{b}.attn.out.kernel"), vec![d, d]));
            s.push((format!("{b}.attn.out.bias"), vec![d]));
            let (l1, l2, w1) = if self.swiglu { ("linear12", "linear3", 2 * m) } else { ("linear1", "linear2", m) };
            s.push((format!("{b}.mlp.{l1}.kernel"), vec![d, w1]));
            s.push((format!("{b}.mlp.{l1}.bias"), vec![w1]));
            s.push((format!("{b}.mlp.{l2}.kernel"), vec![m, d]));
            s.push((format!("{b}.mlp.{l2}.bias"), vec![d]));
        }
        if self.rms_norm {
            s.push(("final_layer.norm.rms_weight".into(), vec![d]));
        }
        s.sort();
        s
    }

    /// Every buffer's path and shape: `x_embedder.pe` `[1, T, D]`, and with `use_rope`
    /// `feat_rope.freqs_cos` / `feat_rope.freqs_sin` `[T, hd]`.
    pub fn buffer_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let mut s = vec![(LightningDit::BUFFER_NAMES[0].to_string(), vec![1, self.dit.tokens(), self.dit.hidden_size])];
        if self.use_rope {
            for name in &LightningDit::BUFFER_NAMES[1..] {
                s.push((name.to_string(), vec![self.dit.tokens(), self.dit.head_dim()]));
            }
        }
        s
    }

    /// The number of trainable scalars.
    pub fn num_parameters(&self) -> i64 {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<i64>()).sum()
    }
}

/// The rotary tables `(cos, sin)`, each `[grid^2, head_dim]` row-major in float32, as the
/// reference computes them: with `h = head_dim / 2`, `f_k = 1 / 10000^(2k / h)` for
/// `k < h / 2` (float32), each frequency twice, `g = [f_0, f_0, f_1, f_1, ...]` (`h`
/// values); the token at grid row `i`, column `j` (index `i * grid + j`) has the angles
/// `[i g, j g]`: the row in the first half, the column in the second (integer positions).
/// `head_dim` must be a positive multiple of 4.
pub fn rope_tables(head_dim: i64, grid: i64) -> Result<(Vec<f32>, Vec<f32>)> {
    if head_dim <= 0 || head_dim % 4 != 0 {
        return Err(Error::invalid("head_dim", "a positive multiple of 4", head_dim));
    }
    if grid <= 0 {
        return Err(Error::invalid("grid", "a positive size", grid));
    }
    let h = head_dim / 2;
    let g: Vec<f32> = (0..h / 2)
        .map(|k| 1.0f32 / 10000f32.powf((2 * k) as f32 / h as f32))
        .flat_map(|f| [f, f])
        .collect();
    let n = (grid * grid * head_dim) as usize;
    let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..grid {
        for j in 0..grid {
            for pos in [i as f32, j as f32] {
                for &f in &g {
                    let a = pos * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
    }
    Ok((cos, sin))
}

/// The LightningDiT; parameters are leaf tensors that require gradients.
#[derive(Debug)]
pub struct LightningDit {
    cfg: LightningDitConfig,
    params: ParamTable,
    pe: Tensor,
    rope: Option<(Tensor, Tensor)>,
    attention: Attention,
    layer_norm: LayerNorm,
}

impl LightningDit {
    /// Paths of the buffers (not trained, no gradient); the rotary tables only with `use_rope`.
    pub const BUFFER_NAMES: [&'static str; 3] = ["x_embedder.pe", "feat_rope.freqs_cos", "feat_rope.freqs_sin"];

    /// Builds the network from parameters and buffers keyed by reference path (see
    /// [`LightningDitConfig::parameter_shapes`] and [`LightningDitConfig::buffer_shapes`]).
    /// A missing, extra or mis-shaped array is an [`Error::InvalidArgument`] naming its path;
    /// unbuildable settings (Q16) are [`Error::Unsupported`]. Parameters become float32
    /// leaves that require gradients; attention runs on [`Attention::Math`], LayerNorms with
    /// the reference's arithmetic.
    pub fn from_params(cfg: LightningDitConfig, params: BTreeMap<String, Tensor>, buffers: BTreeMap<String, Tensor>) -> Result<LightningDit> {
        cfg.validate()?;
        let params = ParamTable::new(&cfg.parameter_shapes(), params, "x_proj.kernel")?;
        check_names_and_shapes("buffer", &cfg.buffer_shapes(), &buffers)?;
        let dev = params.device();
        let buf = |name: &str| -> Result<Tensor> { Ok(buffers[name].f_to_kind(Kind::Float)?.f_to_device(dev)?.f_detach()?) };
        let pe = buf(Self::BUFFER_NAMES[0])?;
        let rope = if cfg.use_rope { Some((buf(Self::BUFFER_NAMES[1])?, buf(Self::BUFFER_NAMES[2])?)) } else { None };
        Ok(LightningDit { cfg, params, pe, rope, attention: Attention::Math, layer_norm: LayerNorm::FastVariance })
    }

    /// Builds the network from [`Weights`] (see [`LightningDit::from_params`]).
    pub fn from_weights(cfg: LightningDitConfig, w: Weights) -> Result<LightningDit> {
        LightningDit::from_params(cfg, w.params, w.buffers)
    }

    /// Loads a directory of `param.<path>.npy` / `buffer.<path>.npy` files onto `device`.
    pub fn load_npy_dir(cfg: LightningDitConfig, dir: &Path, device: Device) -> Result<LightningDit> {
        LightningDit::from_weights(cfg, Weights::from_npy_dir(dir, device)?)
    }

    /// Loads one `.safetensors` file onto `device` (keys `param.<path>` / `buffer.<path>`, or
    /// bare paths, [`LightningDit::BUFFER_NAMES`] being the buffers). Buffers the file does
    /// not hold are computed ([`LightningDit::default_buffers`]): they are fixed by the settings.
    pub fn load_safetensors(cfg: LightningDitConfig, path: &Path, device: Device) -> Result<LightningDit> {
        let mut w = Weights::from_safetensors(path, &Self::BUFFER_NAMES, device)?;
        for (name, t) in LightningDit::default_buffers(&cfg, device)? {
            w.buffers.entry(name).or_insert(t);
        }
        LightningDit::from_weights(cfg, w)
    }

    /// The buffers a fresh model uses: `x_embedder.pe` (the DiT's sin-cos table, `[1, T, D]`)
    /// and, with `use_rope`, the tables of [`rope_tables`].
    pub fn default_buffers(cfg: &LightningDitConfig, device: Device) -> Result<BTreeMap<String, Tensor>> {
        cfg.validate()?;
        let mut b = BTreeMap::from([(Self::BUFFER_NAMES[0].to_string(), common::pos_embed_buffer(&cfg.dit, device)?)]);
        if cfg.use_rope {
            let (t, hd) = (cfg.dit.tokens(), cfg.dit.head_dim());
            let (cos, sin) = rope_tables(hd, cfg.dit.grid())?;
            b.insert(Self::BUFFER_NAMES[1].to_string(), Tensor::f_from_slice(&cos)?.f_reshape([t, hd])?.f_to_device(device)?);
            b.insert(Self::BUFFER_NAMES[2].to_string(), Tensor::f_from_slice(&sin)?.f_reshape([t, hd])?.f_to_device(device)?);
        }
        Ok(b)
    }

    /// A freshly initialised model (torch's global generator seeded with `seed`) with the
    /// DiT's adaLN-Zero initialisation (zero modulations, final layer and biases; Xavier
    /// kernels; `N(0, 0.02^2)` class table and time MLPs) and unit norm weights and q/k-norm
    /// scales (diffuse_nnx's own initialisers are not pinned by any golden case).
    pub fn init(cfg: LightningDitConfig, seed: i64, device: Device) -> Result<LightningDit> {
        cfg.validate()?;
        tch::manual_seed(seed);
        let mut params = BTreeMap::new();
        for (name, shape) in cfg.parameter_shapes() {
            let t = common::init_param(&name, &shape, device)?;
            params.insert(name, t);
        }
        let buffers = LightningDit::default_buffers(&cfg, device)?;
        LightningDit::from_params(cfg, params, buffers)
    }

    /// A float64 copy (parameters and buffers converted, new leaves), for numerical checks:
    /// finite differences of the network or of a loss at double precision. It takes float64
    /// `x`; the reference, the golden cases and [`LightningDit::from_params`] are float32.
    pub fn to_double(&self) -> Result<LightningDit> {
        let d = |t: &Tensor| -> Result<Tensor> { Ok(t.f_detach()?.f_to_kind(Kind::Double)?) };
        let rope = match &self.rope {
            Some((c, s)) => Some((d(c)?, d(s)?)),
            None => None,
        };
        Ok(LightningDit { cfg: self.cfg.clone(), params: self.params.to_kind(Kind::Double)?, pe: d(&self.pe)?, rope, attention: self.attention, layer_norm: self.layer_norm })
    }

    /// The settings.
    pub fn config(&self) -> &LightningDitConfig {
        &self.cfg
    }

    /// The position table `x_embedder.pe` `[1, T, D]`.
    pub fn pos_embed(&self) -> &Tensor {
        &self.pe
    }

    /// The rotary tables `(cos, sin)` `[T, hd]`, with `use_rope`.
    pub fn rope(&self) -> Option<(&Tensor, &Tensor)> {
        self.rope.as_ref().map(|(c, s)| (c, s))
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
    pub fn with_attention(mut self, a: Attention) -> LightningDit {
        self.attention = a;
        self
    }

    /// How the LayerNorms (block, final and q/k) are computed.
    pub fn layer_norm(&self) -> LayerNorm {
        self.layer_norm
    }

    /// Switches the LayerNorm implementation (see [`LayerNorm`]); RMSNorms are unaffected.
    pub fn set_layer_norm(&mut self, n: LayerNorm) {
        self.layer_norm = n;
    }

    /// This network with another LayerNorm implementation.
    pub fn with_layer_norm(mut self, n: LayerNorm) -> LightningDit {
        self.layer_norm = n;
        self
    }

    /// The parameters and buffers, e.g. to save them with [`Weights::write_safetensors`].
    pub fn weights(&self) -> Weights {
        let mut buffers = BTreeMap::from([(Self::BUFFER_NAMES[0].to_string(), self.pe.shallow_clone())]);
        if let Some((c, s)) = &self.rope {
            buffers.insert(Self::BUFFER_NAMES[1].to_string(), c.shallow_clone());
            buffers.insert(Self::BUFFER_NAMES[2].to_string(), s.shallow_clone());
        }
        Weights { params: self.params.to_map(), buffers }
    }

    /// `N(x)` of the block or final norm `prefix`: RMSNorm with `<prefix>.rms_weight`
    /// (`x * rsqrt(mean(x^2) + 1e-6) * weight`), or the DiT's LayerNorm.
    fn norm(&self, prefix: &str, x: &Dual) -> Result<Dual> {
        if self.cfg.rms_norm {
            tangent::rms_norm(x, self.params.p(&format!("{prefix}.rms_weight"))?, LN_EPS)
        } else {
            common::layer_norm(x, self.layer_norm)
        }
    }

    /// The q/k norm (one module for both, Q18).
    fn qk_norm(&self, prefix: &str, z: &Dual) -> Result<Dual> {
        if self.cfg.rms_qk() {
            return tangent::rms_norm(z, self.params.p(&format!("{prefix}.k_norm.rms_weight"))?, LN_EPS);
        }
        let (scale, bias) = (self.params.p(&format!("{prefix}.k_norm.scale"))?, self.params.p(&format!("{prefix}.k_norm.bias"))?);
        match self.layer_norm {
            LayerNorm::FastVariance => tangent::layer_norm_affine(z, scale, bias, LN_EPS),
            LayerNorm::Fused => tangent::layer_norm_two_pass_affine(z, scale, bias, LN_EPS),
        }
    }

    fn attn(&self, prefix: &str, x: &Dual, kind: Attention) -> Result<Dual> {
        let (b, t) = (x.primal.size()[0], x.primal.size()[1]);
        let (d, h, hd) = (self.cfg.dit.hidden_size, self.cfg.dit.num_heads, self.cfg.dit.head_dim());
        // [B, T, 3D] -> [B, T, 3, H, hd] -> [3, B, H, T, hd]
        let qkv = self.params.linear(&format!("{prefix}.to_qkv"), x)?.linear_map(|z| Ok(z.f_reshape([b, t, 3, h, hd])?.f_permute([2, 0, 3, 1, 4])?))?;
        let pick = |i: i64| qkv.linear_map(|z| Ok(z.f_select(0, i)?));
        let (mut q, mut k, v) = (pick(0)?, pick(1)?, pick(2)?);
        if self.cfg.qk_norm {
            q = self.qk_norm(prefix, &q)?;
            k = self.qk_norm(prefix, &k)?;
        }
        if let Some((cos, sin)) = &self.rope {
            q = tangent::rope(&q, cos, sin)?;
            k = tangent::rope(&k, cos, sin)?;
        }
        let o = common::attention(&q, &k, &v, kind, ScaleOn::KeyT)?;
        let o = o.linear_map(|z| Ok(z.f_transpose(1, 2)?.f_reshape([b, t, d])?))?;
        self.params.linear(&format!("{prefix}.out"), &o)
    }

    fn mlp(&self, prefix: &str, x: &Dual) -> Result<Dual> {
        if self.cfg.swiglu {
            let g = tangent::swiglu(&self.params.linear(&format!("{prefix}.linear12"), x)?)?;
            self.params.linear(&format!("{prefix}.linear3"), &g)
        } else {
            let h = tangent::gelu_tanh(&self.params.linear(&format!("{prefix}.linear1"), x)?)?;
            self.params.linear(&format!("{prefix}.linear2"), &h)
        }
    }

    fn block(&self, i: i64, x: &Dual, silu_c: &Dual, kind: Attention) -> Result<Dual> {
        let pre = format!("blocks.{i}");
        let shift = self.cfg.adaln_shift;
        let m = self.params.linear(&format!("{pre}.adaLN_mod.layers.1"), silu_c)?.chunk(if shift { 6 } else { 4 }, -1)?;
        // (shift, scale, gate) of the attention and of the MLP
        let (s1, c1, g1, s2, c2, g2) = if shift { (Some(&m[0]), &m[1], &m[2], Some(&m[3]), &m[4], &m[5]) } else { (None, &m[0], &m[1], None, &m[2], &m[3]) };
        let a = self.attn(&format!("{pre}.attn"), &tangent::modulate(&self.norm(&format!("{pre}.norm1"), x)?, s1, c1)?, kind)?;
        let x = common::gated_residual(x, g1, &a)?;
        let h = self.mlp(&format!("{pre}.mlp"), &tangent::modulate(&self.norm(&format!("{pre}.norm2"), &x)?, s2, c2)?)?;
        common::gated_residual(&x, g2, &h)
    }

    /// The network on dual inputs: the plain forward on constants, the fused JVP with
    /// tangents on `x`, `t` and `dt`; the attention kernel `kind`. Returns the output and the
    /// block features (primals).
    fn run(&self, x: &Dual, t: &Dual, cond: Cond<'_>, dt_tangent: Option<&Tensor>, pass: Pass<'_>, kind: Attention) -> Result<(Dual, Vec<Tensor>)> {
        crate::validate::conditioning(&self.accepts(), &cond)?;
        let active = pass.train && (self.cfg.dit.enable_dropout || !self.cfg.honor_enable_dropout);
        let dropout = (active, "LightningDiT draws label dropout in train mode, whatever enable_dropout says (Q17)");
        let absent = if self.cfg.absent_dt_gw == AbsentDtGw::Fill { Absent::Fill } else { Absent::Refuse };
        common::skeleton(
            &self.params,
            &self.cfg.dit,
            &self.pe,
            (x, t),
            &cond,
            dt_tangent,
            pass.rngs,
            dropout,
            absent,
            || self.check_absent(&cond),
            |i, h, silu_c| self.block(i, h, silu_c, kind),
            |h| self.norm("final_layer.norm", h),
        )
    }

    /// Quirk Q15: a call without the `dt` / `gw` the network takes.
    fn check_absent(&self, cond: &Cond<'_>) -> Result<()> {
        if self.cfg.absent_dt_gw == AbsentDtGw::Fill {
            return Ok(());
        }
        for (taken, name, given) in [(self.cfg.dit.take_dt, "dt", cond.dt.is_some()), (self.cfg.dit.take_gw, "gw", cond.gw.is_some())] {
            if taken && !given {
                return Err(Error::Unsupported {
                    what: format!("a call without `{name}` to a LightningDiT built with take_{name}"),
                    why: format!(
                        "quirk Q15: the reference cannot run it (its default is built from the [B, D] time embedding and crashes); \
                         absent_dt_gw: fill uses {name} = {}([B])",
                        if name == "dt" { "zeros" } else { "ones" }
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Backbone for LightningDit {
    /// Takes labels, and `dt` / `gw` when built with `take_dt` / `take_gw` (then required,
    /// Q15, unless `absent_dt_gw: fill`); no extra inputs. Shapes, dtypes and devices are
    /// checked; values are not, so the network makes no device-to-host read.
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
        Accepts { labels: true, dt: self.cfg.dit.take_dt, gw: self.cfg.dit.take_gw, extra: &[] }
    }
}

impl FusedJvp for LightningDit {
    /// The LightningDiT's forward with every layer's tangent beside it (RMSNorm, SwiGLU, RoPE,
    /// the q/k norm and attention by the rules of [`tangent`]): the primal is the plain
    /// forward's bit for bit, on the network's own attention kernel.
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

    fn tiny(take_dt: bool, take_gw: bool) -> LightningDitConfig {
        let dit = DitConfig {
            input_size: 4,
            patch_size: 2,
            in_channels: 3,
            hidden_size: 16,
            depth: 2,
            num_heads: 2,
            mlp_ratio: 1.5,
            freq_embed_size: 6,
            num_classes: 5,
            class_dropout_prob: 0.5,
            take_dt,
            take_gw,
            ..DitConfig::default()
        };
        LightningDitConfig { qk_norm: true, ..LightningDitConfig::imagenet_switches(dit) }
    }

    /// Non-zero gates and final layer, so that every block shows in the output.
    fn net(cfg: &LightningDitConfig) -> LightningDit {
        let d = LightningDit::init(cfg.clone(), 0, Device::Cpu).unwrap();
        let mut w = d.weights();
        for (k, v) in w.params.iter_mut() {
            *v = if k.contains("adaLN") || k.starts_with("final_layer.linear") { v.randn_like() * 0.1 } else { v.detach().copy() };
        }
        LightningDit::from_weights(cfg.clone(), w).unwrap()
    }

    fn inputs() -> (Tensor, Tensor, Tensor) {
        tch::manual_seed(1);
        (Tensor::randn([3, 4, 4, 3], (Kind::Float, Device::Cpu)), Tensor::from_slice(&[0.1f32, 0.5, 0.9]), Tensor::from_slice(&[0i64, 4, 5]))
    }

    #[test]
    fn defaults_flat_settings_and_validation() {
        let d = LightningDitConfig::default();
        assert_eq!(d.dit, DitConfig::default());
        assert!(!(d.qk_norm || d.use_rope || d.swiglu || d.adaln_shift || d.rms_norm || d.honor_enable_dropout));
        assert_eq!((d.attn_norm_layer, d.absent_dt_gw, d.rms_qk_norm), (NormLayer::LayerNorm, AbsentDtGw::Refuse, RmsQkNorm::Refuse));
        let c: LightningDitConfig = serde_json::from_str(r#"{"hidden_size": 64, "num_heads": 4, "use_rope": true, "attn_norm_layer": "rms_norm", "absent_dt_gw": "fill"}"#).unwrap();
        assert_eq!((c.dit.hidden_size, c.dit.depth, c.use_rope, c.attn_norm_layer, c.absent_dt_gw), (64, 28, true, NormLayer::RmsNorm, AbsentDtGw::Fill));
        let e = serde_json::from_str::<LightningDitConfig>(r#"{"rope_init_theta": 10000}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `rope_init_theta`") && e.contains("`swiglu`") && e.contains("`hidden_size`"), "{e}");
        // SwiGLU width: int(2/3 * int(D * mlp_ratio)), as Python computes it
        assert_eq!(LightningDitConfig { swiglu: true, dit: DitConfig { hidden_size: 32, mlp_ratio: 4.0, ..DitConfig::default() }, ..d.clone() }.mlp_hidden(), 85);
        assert_eq!(LightningDitConfig { swiglu: true, ..d.clone() }.mlp_hidden(), 3072);
        // RoPE needs a head width that is a multiple of 4
        let odd = LightningDitConfig { use_rope: true, dit: DitConfig { hidden_size: 24, num_heads: 4, ..DitConfig::default() }, ..d.clone() };
        assert!(matches!(odd.validated(), Err(Error::InvalidArgument { name, .. }) if name == "hidden_size"));
        // DiT-XL/2 sizes with the ImageNet switches: fewer MLP parameters than the DiT (SwiGLU
        // at 2/3 width), 4 adaLN chunks fewer than 6 only without shift
        let n = LightningDitConfig::imagenet_switches(DitConfig::default()).num_parameters();
        assert!((600_000_000..700_000_000).contains(&n), "{n}");
    }

    /// Q16: qk_norm over rms_norm is refused unless `rms_qk_norm: build`, which gives one
    /// RMSNorm weight per block under the k name (shared, Q18).
    #[test]
    fn q16_rms_qk_norm_is_refused_by_default_and_built_on_request() {
        let cfg = LightningDitConfig { attn_norm_layer: NormLayer::RmsNorm, ..tiny(false, false) };
        let e = cfg.clone().validated().unwrap_err().to_string();
        assert!(e.contains("Q16") && e.contains("rms_qk_norm: build"), "{e}");
        assert!(LightningDit::init(cfg.clone(), 0, Device::Cpu).is_err());
        let built = LightningDitConfig { rms_qk_norm: RmsQkNorm::Build, ..cfg };
        let names: Vec<String> = built.parameter_shapes().into_iter().map(|(n, _)| n).filter(|n| n.contains("_norm")).collect();
        assert_eq!(names, ["blocks.0.attn.k_norm.rms_weight", "blocks.1.attn.k_norm.rms_weight"]);
        let n = net(&built);
        let (x, t, y) = inputs();
        let a = n.forward(&x, &t, Cond::labels(Some(&y)), Pass::eval()).unwrap().out;
        // the RMSNorm q/k norm is not the LayerNorm one
        let ln = net(&tiny(false, false));
        let b = ln.forward(&x, &t, Cond::labels(Some(&y)), Pass::eval()).unwrap().out;
        assert!(a.isfinite().all().int64_value(&[]) == 1 && !a.allclose(&b, 1e-3, 1e-4, false));
    }

    /// Q18: one q/k norm per block, stored as `attn.k_norm.{scale, bias}`, and it matters.
    #[test]
    fn q18_one_norm_for_q_and_k() {
        let cfg = tiny(false, false);
        let names: Vec<String> = cfg.parameter_shapes().into_iter().map(|(n, _)| n).filter(|n| n.contains("_norm")).collect();
        assert_eq!(names, ["blocks.0.attn.k_norm.bias", "blocks.0.attn.k_norm.scale", "blocks.1.attn.k_norm.bias", "blocks.1.attn.k_norm.scale"]);
        let n = net(&cfg);
        let (x, t, y) = inputs();
        let a = n.forward(&x, &t, Cond::labels(Some(&y)), Pass::eval()).unwrap().out;
        let mut w = n.weights();
        let s = w.params.get_mut("blocks.0.attn.k_norm.scale").unwrap();
        *s = s.detach() * 3.0;
        let b = LightningDit::from_weights(cfg, w).unwrap().forward(&x, &t, Cond::labels(Some(&y)), Pass::eval()).unwrap().out;
        assert!(!a.allclose(&b, 1e-3, 1e-4, false));
    }

    /// Q15: without the dt / gw it takes, the call is refused before anything is drawn;
    /// `absent_dt_gw: fill` equals passing zeros / ones of shape [B] explicitly.
    #[test]
    fn q15_absent_dt_or_gw_is_refused_by_default_and_filled_on_request() {
        let (x, t, y) = inputs();
        for (dt, gw) in [(true, false), (false, true), (true, true)] {
            let cfg = tiny(dt, gw);
            let n = net(&cfg);
            let mut rngs = Rngs::new(&[("label_dropout", 3)]).unwrap();
            let e = n.forward(&x, &t, Cond::labels(Some(&y)), Pass::train(&mut rngs)).unwrap_err().to_string();
            assert!(e.contains("Q15") && e.contains("absent_dt_gw: fill"), "{e}");
            assert_eq!(rngs.counter("label_dropout").unwrap(), 0, "nothing drawn before the refusal");
            let filled = LightningDit::from_weights(LightningDitConfig { absent_dt_gw: AbsentDtGw::Fill, ..cfg }, n.weights()).unwrap();
            let a = filled.forward(&x, &t, Cond::labels(Some(&y)), Pass::eval()).unwrap().out;
            let (zeros, ones) = (t.zeros_like(), t.ones_like());
            let explicit = Cond { y: Some(&y), dt: dt.then_some(&zeros), gw: gw.then_some(&ones), ..Cond::default() };
            let b = n.forward(&x, &t, explicit, Pass::eval()).unwrap().out;
            assert!(a.equal(&b), "fill must equal explicit zeros / ones");
            // and a gw never differs from another gw silently: 2.0 moves the output
            if gw {
                let two = t.ones_like() * 2.0;
                let c = n.forward(&x, &t, Cond { gw: Some(&two), ..explicit }, Pass::eval()).unwrap().out;
                assert!(!c.allclose(&b, 1e-4, 1e-5, false));
            }
        }
    }

    /// Q17: labels are dropped in train mode whatever `enable_dropout` says (one draw of
    /// `label_dropout`); `honor_enable_dropout` restores the DiT's rule. Eval mode draws nothing.
    #[test]
    fn q17_label_dropout_ignores_enable_dropout() {
        let (x, t, y) = inputs();
        let mut cfg = tiny(false, false);
        cfg.dit.enable_dropout = false;
        let n = net(&cfg);
        let mut rngs = Rngs::new(&[("label_dropout", 3)]).unwrap();
        let dropped = n.forward(&x, &t, Cond::labels(Some(&y)), Pass::train(&mut rngs)).unwrap().out;
        assert_eq!(rngs.counter("label_dropout").unwrap(), 1);
        assert!(n.forward(&x, &t, Cond::labels(Some(&y)), Pass::new(true, None)).unwrap_err().to_string().contains("Q17"));
        // the draw: where u < 0.5 the label became the null class K = 5
        let u = Rngs::new(&[("label_dropout", 3)]).unwrap().uniform("label_dropout", &[3], 0.0, 1.0, Device::Cpu).unwrap();
        let expect_y = y.masked_fill(&u.lt(0.5), 5);
        let by_hand = n.forward(&x, &t, Cond::labels(Some(&expect_y)), Pass::eval()).unwrap().out;
        assert!(dropped.equal(&by_hand));
        let honoring = LightningDit::from_weights(LightningDitConfig { honor_enable_dropout: true, ..cfg }, n.weights()).unwrap();
        let mut rngs = Rngs::new(&[("label_dropout", 3)]).unwrap();
        let kept = honoring.forward(&x, &t, Cond::labels(Some(&y)), Pass::train(&mut rngs)).unwrap().out;
        assert_eq!(rngs.counter("label_dropout").unwrap(), 0);
        assert!(kept.equal(&n.forward(&x, &t, Cond::labels(Some(&y)), Pass::eval()).unwrap().out));
    }

    #[test]
    fn shapes_features_refusals_and_fused_kernels() {
        let cfg = tiny(true, false);
        let mut n = net(&cfg);
        let (x, t, y) = inputs();
        let cond = Cond { y: Some(&y), dt: Some(&t), ..Cond::default() };
        let o = n.forward(&x, &t, cond, Pass::eval()).unwrap();
        assert_eq!(o.out.size(), [3, 4, 4, 3]);
        assert_eq!(o.features.len(), 2);
        assert_eq!(o.features[1].size(), [3, 4, 16]);
        let e = n.forward(&x, &t, Cond { gw: Some(&t), ..cond }, Pass::eval()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "gw"), "{e}");
        let e = n.forward(&x.to_kind(Kind::Double), &t, cond, Pass::eval()).unwrap_err();
        assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "x"), "{e}");
        n.set_attention(Attention::Fused);
        n.set_layer_norm(LayerNorm::Fused);
        let f = n.forward(&x, &t, cond, Pass::eval()).unwrap().out;
        assert!(o.out.allclose(&f, 1e-5, 1e-6, false));
        // the float64 copy computes the same function
        let d = n.to_double().unwrap().forward(&x.to_kind(Kind::Double), &t.to_kind(Kind::Double), Cond { dt: Some(&t.to_kind(Kind::Double)), ..cond }, Pass::eval()).unwrap().out;
        assert!(d.to_kind(Kind::Float).allclose(&o.out, 1e-4, 1e-5, false));
    }

    #[test]
    fn rotate_half_pairs_and_rope_tables() {
        let z = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6., 7., 8.]).reshape([1, 8]);
        let r = tangent::rotate_half(&z).unwrap();
        assert_eq!(Vec::<f32>::try_from(&r.reshape([-1])).unwrap(), vec![-2., 1., -4., 3., -6., 5., -8., 7.]);
        let (cos, sin) = rope_tables(8, 2).unwrap();
        // head width 8: h = 4, f = [1, 1/100] each twice; token (1, 0) (index 2): angles [g, 0]
        let row = &cos[2 * 8..3 * 8];
        assert_eq!(row[4..], [1.0; 4]);
        assert_eq!(row[0], 1f32.cos());
        assert_eq!(row[2], 0.01f32.cos());
        assert_eq!(sin[8 + 4], 1f32.sin()); // token (0, 1): the column half
        assert!(rope_tables(6, 2).is_err());
    }
}
