//! `dino`: the DINOv2 ViT (Oquab et al., "DINOv2: Learning Robust Visual Features without
//! Supervision", 2023) as REPA's feature detector, computed as the reference does it:
//! diffuse_nnx's `networks/encoders/dino.py`, which runs transformers' `FlaxDinov2Model`
//! (4.46.3) behind a preprocess.
//!
//! Images are channel-last `x: [B, H, W, 3]`, float32, nominally in `[-1, 1]`. With hidden
//! size `D`, `h` heads of width `hd = D / h`, patch size 14 and a position table of
//! `G x G + 1` rows (`G = image_size / 14`, 16 for the reference's 224):
//!
//! ```text
//! preprocess(x): x = (x + 1) / 2;  x = (x - mean) / std   per channel, float32,
//!                    mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
//!                x = resize(x, h x h), h = 224 * (H // 256)   JAX's bicubic (see resize.rs)
//!                pixels = x as [B, 3, h, h] (NCHW)
//! embed:   tokens = conv(pixels, patch kernel [14, 14, 3, D], stride 14, VALID) + bias  [B, S*S, D]
//!          x = [cls_token; tokens] + P,  P = position_embeddings [1, G*G + 1, D] when S = G,
//!          else its class row followed by its G x G patch rows resized to S x S by JAX's
//!          bicubic with s = float32((S + 0.1) / G) on both axes (transformers' interpolation)
//! layer:   x = x + lambda1' * attn(LN1(x));  x = x + lambda2' * mlp(LN2(x))
//!          lambda' = (layerscale_value * lambda1) * layerscale_value
//! LN(x)  = (x - E[x]) * (rsqrt(var + eps) * scale) + bias,  var = max(0, E[x^2] - E[x]^2)
//! attn(x): q, k, v = x W + b   ([D, D] kernels, bias unless qkv_bias is off), as [B, h, T, hd]
//!          softmax((q / sqrt(hd)) k^T) v  -> [B, T, D],  then the output dense layer
//! mlp(x) = fc2(gelu(fc1(x))),  gelu exact (erf),  fc1 of width D * mlp_ratio
//! out:     x = LN(x) with layernorm.{scale, bias};  features = x[:, 1:]   (CLS dropped) [B, S*S, D]
//! ```
//!
//! Quirks (Q19 of docs/reference.md and what transformers' Flax model adds):
//! - Q19: the resize target is `224 * (H // 256)`: an image below 256 would become 0 pixels
//!   and the reference fails — refused here with [`Error::InvalidArgument`]; other sizes are
//!   floored (288 and 511 give 224, 512 gives 448). Only the height is read: a non-square
//!   image is resized to `h x h`, its aspect squashed, as the reference does.
//! - Q19: the reference accepts only the `base` checkpoint and replaces its position table
//!   by a precomputed `16 x 16 + 1` one (`pos_embed_base.npy`): see
//!   [`Dino::with_position_table`].
//! - The table resize uses `(S + 0.1) / G`, not `S / G` (a `+ 0.1` inherited from DINO's
//!   torch code to dodge a rounding problem of `scale_factor`).
//! - When the table is resized (`S != G`), transformers' Flax model fails for a batch of more
//!   than one image (it reshapes the resized table to `[B, -1, D]` and concatenates a
//!   `[1, 1, D]` class row). Refused by default ([`BatchedTable::Refuse`]);
//!   [`BatchedTable::Broadcast`] adds the one table to every image, which is what each image
//!   of a batch gets when encoded alone.
//! - `layerscale_value` multiplies the stored `lambda1` twice (once at build, once in
//!   `setup`); the PyTorch model uses it once, as an initial value only. Equal for the base
//!   checkpoint (1.0).
//! - transformers' `Dinov2Config` has no `intermediate_size`: the MLP is `D * mlp_ratio` wide.
//! - `use_swiglu_ffn = true` cannot be built by the Flax model (its SwiGLU reads an attribute
//!   it never sets): refused ([`Error::Unsupported`]). Registers (DINOv2 "with registers")
//!   are not in transformers' `Dinov2Model` either. Both may come later.
//! - Values outside `[-1, 1]` are processed as given (the reference neither clamps nor
//!   checks); [`InputCheck::UnitRange`] refuses them. NaN or infinity is always refused.
//!
//! Torch's pipeline — `F.interpolate(x, 224 * (H // 256), mode="bicubic")` for the resize and
//! transformers' PyTorch `Dinov2Model`, which resizes the table with `F.interpolate(size=(S,
//! S), mode="bicubic")` — lands elsewhere; [`DinoOptions::torch`] selects both
//! ([`BicubicResize::Torch`], [`TableResize::Torch`]), and `docs/dino.md` measures the gap.
//!
//! Arithmetic follows Flax: LayerNorm with the fast variance and the scale folded into the
//! `rsqrt` factor, the query divided by `sqrt(hd)` before the product. The patch embedding
//! is a matmul of the flattened patches (the same sum as the VALID conv; cuDNN's conv would
//! default to TF32 on CUDA). Parameters are kept
//! under their Flax paths and layouts (docs/format.md, kind `encoder`); the Hugging Face
//! PyTorch layout is converted in `dino_weights.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::resize::{jax_scale_bicubic, resize_bicubic, torch_bicubic, BicubicResize};
use super::FeatureEncoder;
use crate::error::{Error, Result};
use crate::networks::weights::check_names_and_shapes;

/// ImageNet channel means of the preprocess (float32).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations of the preprocess (float32).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The side a preprocessed image gets: `224 * (size / 256)` (floor), quirk Q19. Errors below 256.
pub fn resized_side(size: i64) -> Result<i64> {
    if size < 256 {
        return Err(Error::invalid(
            "image height",
            "at least 256 (quirk Q19: the reference resizes to 224 * (H // 256), 0 pixels below 256, and fails)",
            size,
        ));
    }
    Ok(224 * (size / 256))
}

/// The reference's preprocess: `[B, H, W, 3]` images -> `[B, 3, h, h]` pixels,
/// `h = 224 * (H // 256)`: `(x + 1) / 2`, then `(x - mean) / std` per channel, then the
/// bicubic `resize` to `h x h`, then NCHW (module docs; quirk Q19 for the sizes). Errors on
/// a shape other than `[B >= 1, H >= 256, W >= 1, 3]`, a dtype other than float32, and values
/// that `check` refuses.
pub fn preprocess(images: &Tensor, resize: BicubicResize, check: InputCheck) -> Result<Tensor> {
    let s = images.size();
    if s.len() != 4 || s[3] != 3 || s[0] < 1 || s[2] < 1 {
        return Err(Error::invalid("images", "shape [B, H, W, 3] (channel-last RGB) with B, W >= 1", format!("{s:?}")));
    }
    if images.kind() != Kind::Float {
        return Err(Error::invalid("images", "dtype float32", format!("{:?}", images.kind())));
    }
    let h = resized_side(s[1])?;
    if images.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
        return Err(Error::invalid("images", "finite values", "NaN or infinity"));
    }
    if check == InputCheck::UnitRange {
        let (lo, hi) = (images.f_min()?.f_double_value(&[])?, images.f_max()?.f_double_value(&[])?);
        if lo < -1.0 || hi > 1.0 {
            return Err(Error::invalid("images", "values in [-1, 1] (InputCheck::UnitRange)", format!("values in [{lo}, {hi}]")));
        }
    }
    let dev = images.device();
    let mean = Tensor::f_from_slice(&IMAGENET_MEAN)?.f_to_device(dev)?;
    let std = Tensor::f_from_slice(&IMAGENET_STD)?.f_to_device(dev)?;
    let x = images.f_add_scalar(1.0)?.f_div_scalar(2.0)?.f_sub(&mean)?.f_div(&std)?;
    let x = resize_bicubic(&x, h, h, resize)?;
    Ok(x.f_permute([0, 3, 1, 2])?.f_contiguous()?)
}

/// The activation of the MLP (`hidden_act`): only `gelu` (exact, erf) is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenAct {
    /// `x * (1 + erf(x / sqrt(2))) / 2`.
    #[default]
    Gelu,
}

/// Settings of [`Dino`], with transformers' `Dinov2Config` names. The default is
/// `facebook/dinov2-base` as the reference builds it: 768 wide, 12 layers of 12 heads, MLP
/// ratio 4, patch 14, LayerNorm eps 1e-6, layer scale 1, q/k/v biases, and `image_size` 224
/// (a `16 x 16 + 1` position table: the reference's replacement table, Q19; the checkpoint's
/// own `config.json` says 518, a `37 x 37` table).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DinoConfig {
    /// Hidden size `D`.
    pub hidden_size: i64,
    /// Number of transformer layers.
    pub num_hidden_layers: i64,
    /// Attention heads (`D` must be a multiple).
    pub num_attention_heads: i64,
    /// MLP width as a multiple of `D` (an integer in transformers).
    pub mlp_ratio: i64,
    /// Patch size (the patch embedding's kernel and stride).
    pub patch_size: i64,
    /// The image size the position table was made for: `G = image_size / patch_size` rows per side.
    pub image_size: i64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Layer-scale value (applied twice to the stored `lambda1`, see the module docs).
    pub layerscale_value: f64,
    /// The MLP activation.
    pub hidden_act: HiddenAct,
    /// SwiGLU FFN instead of the MLP (refused: the Flax model cannot build it).
    pub use_swiglu_ffn: bool,
    /// Whether q, k and v have biases.
    pub qkv_bias: bool,
}

impl Default for DinoConfig {
    fn default() -> Self {
        DinoConfig {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            mlp_ratio: 4,
            patch_size: 14,
            image_size: 224,
            layer_norm_eps: 1e-6,
            layerscale_value: 1.0,
            hidden_act: HiddenAct::Gelu,
            use_swiglu_ffn: false,
            qkv_bias: true,
        }
    }
}

impl DinoConfig {
    /// Checks the settings: positive sizes, `D` a multiple of the heads, `image_size` at least
    /// one patch, a finite positive eps, a finite layer scale, and no SwiGLU.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("mlp_ratio", self.mlp_ratio),
            ("patch_size", self.patch_size),
            ("image_size", self.image_size),
        ] {
            if v <= 0 {
                return Err(Error::invalid(name, "a positive size", v));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::invalid("hidden_size", format!("a multiple of num_attention_heads {}", self.num_attention_heads), self.hidden_size));
        }
        if self.image_size < self.patch_size {
            return Err(Error::invalid("image_size", format!("at least patch_size {}", self.patch_size), self.image_size));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(Error::invalid("layer_norm_eps", "a finite positive epsilon", self.layer_norm_eps));
        }
        if !self.layerscale_value.is_finite() {
            return Err(Error::invalid("layerscale_value", "a finite value", self.layerscale_value));
        }
        if self.use_swiglu_ffn {
            return Err(Error::Unsupported {
                what: "use_swiglu_ffn = true".into(),
                why: "transformers 4.46.3's Flax DINOv2 cannot build its SwiGLU FFN (it reads an attribute it never sets), so the reference has none to reproduce; not built yet".into(),
            });
        }
        Ok(())
    }

    /// Returns the settings if valid (see [`DinoConfig::validate`]).
    pub fn validated(self) -> Result<DinoConfig> {
        self.validate()?;
        Ok(self)
    }

    /// Rows per side of the position table, `G = image_size / patch_size` (floor).
    pub fn table_grid(&self) -> i64 {
        self.image_size / self.patch_size
    }

    /// Head width `D / heads`.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// MLP width `D * mlp_ratio`.
    pub fn intermediate_size(&self) -> i64 {
        self.hidden_size * self.mlp_ratio
    }

    /// Every parameter's Flax path and shape, sorted by path (the `encoder` case files'
    /// names without `param.`).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let (d, p, g, m) = (self.hidden_size, self.patch_size, self.table_grid(), self.intermediate_size());
        let mut s: Vec<(String, Vec<i64>)> = vec![
            ("embeddings.cls_token".into(), vec![1, 1, d]),
            ("embeddings.mask_token".into(), vec![1, d]),
            ("embeddings.position_embeddings".into(), vec![1, g * g + 1, d]),
            ("embeddings.patch_embeddings.projection.kernel".into(), vec![p, p, 3, d]),
            ("embeddings.patch_embeddings.projection.bias".into(), vec![d]),
            ("layernorm.scale".into(), vec![d]),
            ("layernorm.bias".into(), vec![d]),
        ];
        for i in 0..self.num_hidden_layers {
            let l = format!("encoder.layer.{i}");
            for n in ["norm1", "norm2"] {
                s.push((format!("{l}.{n}.scale"), vec![d]));
                s.push((format!("{l}.{n}.bias"), vec![d]));
            }
            for q in ["query", "key", "value"] {
                s.push((format!("{l}.attention.attention.{q}.kernel"), vec![d, d]));
                if self.qkv_bias {
                    s.push((format!("{l}.attention.attention.{q}.bias"), vec![d]));
                }
            }
            s.push((format!("{l}.attention.output.dense.kernel"), vec![d, d]));
            s.push((format!("{l}.attention.output.dense.bias"), vec![d]));
            s.push((format!("{l}.layer_scale1.lambda1"), vec![d]));
            s.push((format!("{l}.layer_scale2.lambda1"), vec![d]));
            s.push((format!("{l}.mlp.fc1.kernel"), vec![d, m]));
            s.push((format!("{l}.mlp.fc1.bias"), vec![m]));
            s.push((format!("{l}.mlp.fc2.kernel"), vec![m, d]));
            s.push((format!("{l}.mlp.fc2.bias"), vec![d]));
        }
        s.sort();
        s
    }

    /// The tokens `S x S` (side `S`) of an image of height `height` after the preprocess.
    pub fn token_side(&self, height: i64) -> Result<i64> {
        Ok(resized_side(height)? / self.patch_size)
    }
}

/// How the position table is resized to the token grid when they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableResize {
    /// transformers' Flax model: JAX's bicubic with `s = float32((S + 0.1) / G)`. The reference's; the default.
    #[default]
    Flax,
    /// transformers' PyTorch model: `F.interpolate(size=(S, S), mode="bicubic", align_corners=False)`.
    Torch,
}

/// What to do with a batch of more than one image when the position table is resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchedTable {
    /// Refuse with [`Error::Unsupported`]: the reference fails there. The default.
    #[default]
    Refuse,
    /// Add the one resized table to every image (each image as if encoded alone).
    Broadcast,
}

/// What the input check accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputCheck {
    /// Finite values, used as given (the reference neither clamps nor checks). The default.
    #[default]
    Finite,
    /// Finite values within `[-1, 1]` (catches `[0, 255]` or `[0, 1]` images passed by mistake).
    UnitRange,
}

/// Implementation choices of the pipeline (not settings of the ViT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DinoOptions {
    /// The preprocess resize ([`BicubicResize::Jax`] is the reference's).
    pub resize: BicubicResize,
    /// The position-table resize ([`TableResize::Flax`] is the reference's).
    pub table_resize: TableResize,
    /// Batches when the table is resized ([`BatchedTable::Refuse`]: the reference fails).
    pub batched_table: BatchedTable,
    /// The input check.
    pub input_check: InputCheck,
}

impl DinoOptions {
    /// Torch's pipeline: `F.interpolate` bicubic for the resize and transformers' PyTorch
    /// table interpolation (which handles batches).
    pub fn torch() -> DinoOptions {
        DinoOptions { resize: BicubicResize::Torch, table_resize: TableResize::Torch, batched_table: BatchedTable::Broadcast, input_check: InputCheck::Finite }
    }
}

/// What [`Dino::encode_with_pixels`] computed.
#[derive(Debug)]
pub struct DinoOutput {
    /// The preprocessed images `[B, 3, h, h]`.
    pub pixels: Tensor,
    /// The patch features `[B, S*S, D]` (CLS dropped).
    pub features: Tensor,
}

/// The DINOv2 feature detector; parameters (Flax paths) are frozen tensors.
#[derive(Debug)]
pub struct Dino {
    cfg: DinoConfig,
    opts: DinoOptions,
    params: BTreeMap<String, Tensor>,
    device: Device,
}

impl Dino {
    /// Builds the model from parameters keyed by Flax path (see
    /// [`DinoConfig::parameter_shapes`]), all on one device. A missing, extra or mis-shaped
    /// array is an [`Error::InvalidArgument`] naming its path. Parameters become float32,
    /// detached (the detector is frozen). Options start at their defaults (the reference's).
    pub fn from_params(cfg: DinoConfig, params: BTreeMap<String, Tensor>) -> Result<Dino> {
        cfg.validate()?;
        check_names_and_shapes("parameter", &cfg.parameter_shapes(), &params)?;
        let device = params.get("embeddings.cls_token").map(|t| t.device()).unwrap_or(Device::Cpu);
        let mut out = BTreeMap::new();
        for (name, p) in params {
            if p.device() != device {
                return Err(Error::invalid(format!("parameter {name}"), format!("device {device:?} (that of embeddings.cls_token)"), format!("{:?}", p.device())));
            }
            out.insert(name, p.f_to_kind(Kind::Float)?.f_detach()?.f_contiguous()?);
        }
        Ok(Dino { cfg, opts: DinoOptions::default(), params: out, device })
    }

    /// Loads a directory of `param.<flax path>.npy` files (an `encoder` case directory, for
    /// instance) onto `device`.
    pub fn load_npy_dir(cfg: DinoConfig, dir: &Path, device: Device) -> Result<Dino> {
        Dino::from_params(cfg, crate::networks::Weights::from_npy_dir(dir, device)?.params)
    }

    /// A model with random weights (torch's generator seeded with `seed`) of the size the
    /// golden cases use: kernels and biases `N(0, 0.08^2)`, the CLS / mask tokens and the
    /// position table `N(0, 0.5^2)`, LayerNorm scales and layer scales `1 + N(0, 0.1^2)`.
    /// For tests and examples: not DINOv2's training initialisation.
    pub fn init(cfg: DinoConfig, seed: i64, device: Device) -> Result<Dino> {
        cfg.validate()?;
        tch::manual_seed(seed);
        let opts = (Kind::Float, device);
        let mut params = BTreeMap::new();
        for (name, shape) in cfg.parameter_shapes() {
            let n = Tensor::f_randn(&shape, opts)?;
            let leaf = name.rsplit('.').next().unwrap_or("");
            let t = match leaf {
                "cls_token" | "mask_token" | "position_embeddings" => n.f_mul_scalar(0.5)?,
                "scale" | "lambda1" => n.f_mul_scalar(0.1)?.f_add_scalar(1.0)?,
                _ => n.f_mul_scalar(0.08)?,
            };
            params.insert(name, t);
        }
        Dino::from_params(cfg, params)
    }

    /// The same model with other pipeline options.
    pub fn with_options(mut self, opts: DinoOptions) -> Dino {
        self.opts = opts;
        self
    }

    /// The pipeline options.
    pub fn options(&self) -> DinoOptions {
        self.opts
    }

    /// The settings.
    pub fn config(&self) -> &DinoConfig {
        &self.cfg
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The parameters by Flax path.
    pub fn params(&self) -> &BTreeMap<String, Tensor> {
        &self.params
    }

    /// Replaces the position table (quirk Q19: the reference swaps the checkpoint's table for
    /// a precomputed `pos_embed_base.npy` of `16 x 16 + 1` rows). `table` is `[1, N, D]` or
    /// `[N, D]` with `N = G^2 + 1` for some `G >= 1`; the configuration's `image_size` becomes
    /// `G * patch_size`, so the table is used as is at that size and resized elsewhere.
    pub fn with_position_table(mut self, table: &Tensor) -> Result<Dino> {
        let d = self.cfg.hidden_size;
        let t = match table.size().as_slice() {
            [n, dd] if *dd == d => table.f_reshape([1, *n, d])?,
            [1, _, dd] if *dd == d => table.shallow_clone(),
            s => return Err(Error::invalid("position table", format!("shape [1, G*G + 1, {d}] or [G*G + 1, {d}]"), format!("{s:?}"))),
        };
        let n = t.size()[1] - 1;
        let g = (n as f64).sqrt().round() as i64;
        if n < 1 || g * g != n {
            return Err(Error::invalid("position table", "G*G + 1 rows for some G >= 1 (a class row and a square grid)", n + 1));
        }
        self.cfg.image_size = g * self.cfg.patch_size;
        let t = t.f_to_kind(Kind::Float)?.f_to_device(self.device)?.f_detach()?.f_contiguous()?;
        self.params.insert("embeddings.position_embeddings".into(), t);
        Ok(self)
    }

    /// Reads a position table from a float32 `.npy` file and replaces the model's
    /// ([`Dino::with_position_table`]).
    pub fn with_position_table_npy(self, path: &Path) -> Result<Dino> {
        let t = crate::networks::weights::read_npy_f32(path, self.device)?;
        self.with_position_table(&t)
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        self.params.get(name).ok_or_else(|| Error::invalid("parameter", "a parameter of this configuration", name))
    }

    fn dense(&self, prefix: &str, x: &Tensor) -> Result<Tensor> {
        let y = x.f_matmul(self.p(&format!("{prefix}.kernel"))?)?;
        match self.params.get(&format!("{prefix}.bias")) {
            Some(b) => Ok(y.f_add(b)?),
            None => Ok(y),
        }
    }

    /// Flax's LayerNorm: `(x - mu) * (rsqrt(max(0, E[x^2] - mu^2) + eps) * scale) + bias`.
    fn ln(&self, prefix: &str, x: &Tensor) -> Result<Tensor> {
        let mu = x.f_mean_dim(-1, true, Kind::Float)?;
        let mu2 = x.f_square()?.f_mean_dim(-1, true, Kind::Float)?;
        let var = mu2.f_sub(&mu.f_square()?)?.f_clamp_min(0.0)?;
        let mul = var.f_add_scalar(self.cfg.layer_norm_eps)?.f_rsqrt()?.f_mul(self.p(&format!("{prefix}.scale"))?)?;
        Ok(x.f_sub(&mu)?.f_mul(&mul)?.f_add(self.p(&format!("{prefix}.bias"))?)?)
    }

    fn attn(&self, prefix: &str, x: &Tensor) -> Result<Tensor> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let (d, h, hd) = (self.cfg.hidden_size, self.cfg.num_attention_heads, self.cfg.head_dim());
        let heads = |name: &str| -> Result<Tensor> {
            Ok(self.dense(&format!("{prefix}.attention.{name}"), x)?.f_reshape([b, t, h, hd])?.f_transpose(1, 2)?)
        };
        let (q, k, v) = (heads("query")?, heads("key")?, heads("value")?);
        let sqrt_hd = (hd as f32).sqrt() as f64;
        let w = q.f_div_scalar(sqrt_hd)?.f_matmul(&k.f_transpose(-2, -1)?)?.f_softmax(-1, Kind::Float)?;
        let o = w.f_matmul(&v)?.f_transpose(1, 2)?.f_reshape([b, t, d])?;
        self.dense(&format!("{prefix}.output.dense"), &o)
    }

    fn layer_scale(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let v = self.cfg.layerscale_value;
        let lambda = self.p(name)?.f_mul_scalar(v)?.f_mul_scalar(v)?;
        Ok(lambda.f_mul(x)?)
    }

    fn layer(&self, i: i64, x: &Tensor) -> Result<Tensor> {
        let l = format!("encoder.layer.{i}");
        let a = self.attn(&format!("{l}.attention"), &self.ln(&format!("{l}.norm1"), x)?)?;
        let x = self.layer_scale(&format!("{l}.layer_scale1.lambda1"), &a)?.f_add(x)?;
        let m = self.dense(&format!("{l}.mlp.fc1"), &self.ln(&format!("{l}.norm2"), &x)?)?.f_gelu("none")?;
        let m = self.dense(&format!("{l}.mlp.fc2"), &m)?;
        Ok(self.layer_scale(&format!("{l}.layer_scale2.lambda1"), &m)?.f_add(&x)?)
    }

    fn check_device(&self, x: &Tensor) -> Result<()> {
        if x.device() != self.device {
            return Err(Error::invalid("images", format!("device {:?} (that of the parameters)", self.device), format!("{:?}", x.device())));
        }
        Ok(())
    }

    /// The reference's preprocess ([`preprocess`]) with this model's options, on its device.
    pub fn preprocess(&self, images: &Tensor) -> Result<Tensor> {
        self.check_device(images)?;
        preprocess(images, self.opts.resize, self.opts.input_check)
    }

    /// The position table for an `sh x sw` token grid, `[1, sh*sw + 1, D]`: the stored table
    /// when the grid is the table's own (and square), else resized ([`TableResize`]).
    pub fn position_table(&self, sh: i64, sw: i64) -> Result<Tensor> {
        let table = self.p("embeddings.position_embeddings")?;
        let (d, g) = (self.cfg.hidden_size, self.cfg.table_grid());
        if sh * sw == g * g && sh == sw {
            return Ok(table.shallow_clone());
        }
        if sh < 1 || sw < 1 {
            return Err(Error::invalid("token grid", "at least 1 x 1", format!("{sh} x {sw}")));
        }
        let cls = table.f_narrow(1, 0, 1)?;
        let grid = table.f_narrow(1, 1, g * g)?.f_reshape([1, g, g, d])?;
        let resized = match self.opts.table_resize {
            TableResize::Flax => {
                // transformers: float32((S + 0.1) / sqrt(N)) with Python floats
                let scale = |s: i64| ((s as f64 + 0.1) / g as f64) as f32;
                jax_scale_bicubic(&grid, sh, sw, scale(sh), scale(sw))?
            }
            TableResize::Torch => torch_bicubic(&grid, sh, sw, None)?,
        };
        Ok(Tensor::f_cat(&[cls, resized.f_reshape([1, sh * sw, d])?], 1)?)
    }

    /// The last hidden state `[B, 1 + S*S, D]` (after the final LayerNorm, CLS first) of
    /// preprocessed `pixels` `[B, 3, h, w]` (NCHW, as [`Dino::preprocess`] returns them).
    pub fn hidden_states(&self, pixels: &Tensor) -> Result<Tensor> {
        let s = pixels.size();
        let p = self.cfg.patch_size;
        if s.len() != 4 || s[1] != 3 || s[0] < 1 || s[2] < p || s[3] < p {
            return Err(Error::invalid("pixels", format!("shape [B, 3, h, w] with B >= 1 and h, w >= {p}"), format!("{s:?}")));
        }
        if pixels.kind() != Kind::Float || pixels.device() != self.device {
            return Err(Error::invalid("pixels", format!("float32 on {:?}", self.device), format!("{:?} on {:?}", pixels.kind(), pixels.device())));
        }
        let (b, d) = (s[0], self.cfg.hidden_size);
        let (sh, sw) = (s[2] / p, s[3] / p);
        let pos = self.position_table(sh, sw)?;
        if b > 1 && pos.size()[1] != self.cfg.table_grid().pow(2) + 1 && self.opts.batched_table == BatchedTable::Refuse {
            return Err(Error::Unsupported {
                what: format!("a batch of {b} images with the position table resized ({g} x {g} -> {sh} x {sw})", g = self.cfg.table_grid()),
                why: "the reference fails there (transformers' Flax DINOv2 reshapes the resized table to [B, -1, D]); encode one image at a time, or set DinoOptions::batched_table = Broadcast".into(),
            });
        }
        // VALID conv with stride p as patches @ kernel: [B, 3, Sh p, Sw p] -> [B, Sh, Sw, p, p, 3]
        // -> [B, T, p p 3] @ [p p 3, D] (the Flax kernel [p, p, 3, D] flattened). A matmul, not
        // cuDNN's conv, which defaults to TF32 on CUDA.
        let patches = pixels
            .f_narrow(2, 0, sh * p)?
            .f_narrow(3, 0, sw * p)?
            .f_reshape([b, 3, sh, p, sw, p])?
            .f_permute([0, 2, 4, 3, 5, 1])?
            .f_reshape([b, sh * sw, p * p * 3])?;
        let w = self.p("embeddings.patch_embeddings.projection.kernel")?.f_reshape([p * p * 3, d])?;
        let tokens = patches.f_matmul(&w)?.f_add(self.p("embeddings.patch_embeddings.projection.bias")?)?;
        let cls = self.p("embeddings.cls_token")?.f_expand([b, 1, d], false)?;
        let mut x = Tensor::f_cat(&[cls, tokens], 1)?.f_add(&pos)?;
        for i in 0..self.cfg.num_hidden_layers {
            x = self.layer(i, &x)?;
        }
        self.ln("layernorm", &x)
    }

    /// Preprocess and features: `(pixels [B, 3, h, h], features [B, S*S, D])`.
    pub fn encode_with_pixels(&self, images: &Tensor) -> Result<DinoOutput> {
        let pixels = self.preprocess(images)?;
        let h = self.hidden_states(&pixels)?;
        let t = h.size()[1];
        let features = h.f_narrow(1, 1, t - 1)?;
        Ok(DinoOutput { pixels, features })
    }
}

impl FeatureEncoder for Dino {
    fn encode(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.encode_with_pixels(images)?.features)
    }

    fn feature_dim(&self) -> i64 {
        self.cfg.hidden_size
    }

    fn num_tokens(&self, height: i64, width: i64) -> Result<i64> {
        if width < 1 {
            return Err(Error::invalid("image width", "at least 1", width));
        }
        let s = self.cfg.token_side(height)?;
        Ok(s * s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny() -> DinoConfig {
        DinoConfig { hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, mlp_ratio: 2, ..DinoConfig::default() }
    }

    fn images(b: i64, h: i64, w: i64) -> Tensor {
        tch::manual_seed(3);
        Tensor::rand([b, h, w, 3], (Kind::Float, Device::Cpu)) * 2.0 - 1.0
    }

    #[test]
    fn config_checks_and_shapes() {
        assert!(DinoConfig::default().validate().is_ok());
        assert_eq!(DinoConfig::default().parameter_shapes().len(), 7 + 12 * 18);
        let nb = DinoConfig { qkv_bias: false, ..tiny() };
        assert_eq!(nb.parameter_shapes().len(), 7 + 15);
        assert!(DinoConfig { num_attention_heads: 3, ..tiny() }.validate().is_err());
        let e = DinoConfig { use_swiglu_ffn: true, ..tiny() }.validate().unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        assert!(DinoConfig { layer_norm_eps: 0.0, ..tiny() }.validate().is_err());
        assert!(serde_json::from_str::<DinoConfig>(r#"{"hidden_act": "relu"}"#).is_err());
        assert!(serde_json::from_str::<DinoConfig>(r#"{"intermediate_size": 3}"#).is_err());
    }

    #[test]
    fn sizes_below_256_are_refused_and_others_floored() {
        assert!(resized_side(255).is_err());
        assert_eq!(resized_side(256).unwrap(), 224);
        assert_eq!(resized_side(511).unwrap(), 224);
        assert_eq!(resized_side(512).unwrap(), 448);
        let d = Dino::init(tiny(), 0, Device::Cpu).unwrap();
        let e = d.encode(&images(1, 255, 255)).unwrap_err().to_string();
        assert!(e.contains("Q19"), "{e}");
        assert_eq!(d.num_tokens(300, 300).unwrap(), 256);
        assert!(d.num_tokens(100, 300).is_err());
    }

    #[test]
    fn bad_images_are_errors_not_panics() {
        let d = Dino::init(tiny(), 0, Device::Cpu).unwrap();
        assert!(d.encode(&Tensor::zeros([1, 256, 256], (Kind::Float, Device::Cpu))).is_err());
        assert!(d.encode(&Tensor::zeros([1, 256, 256, 4], (Kind::Float, Device::Cpu))).is_err());
        assert!(d.encode(&Tensor::zeros([0, 256, 256, 3], (Kind::Float, Device::Cpu))).is_err());
        assert!(d.encode(&Tensor::zeros([1, 256, 256, 3], (Kind::Double, Device::Cpu))).is_err());
        let nan = Tensor::full([1, 256, 256, 3], f64::NAN, (Kind::Float, Device::Cpu));
        assert!(d.encode(&nan).unwrap_err().to_string().contains("finite"));
        // outside [-1, 1]: used as given by default, refused with UnitRange
        let big = images(1, 256, 256) * 100.0;
        assert!(d.encode(&big).is_ok());
        let strict = Dino::init(tiny(), 0, Device::Cpu).unwrap().with_options(DinoOptions { input_check: InputCheck::UnitRange, ..DinoOptions::default() });
        assert!(strict.encode(&big).unwrap_err().to_string().contains("[-1, 1]"));
        assert!(strict.encode(&images(1, 256, 256)).is_ok());
    }

    #[test]
    fn non_square_images_are_squashed_to_square_as_the_reference_does() {
        let d = Dino::init(tiny(), 0, Device::Cpu).unwrap();
        let p = d.preprocess(&images(1, 256, 320)).unwrap();
        assert_eq!(p.size(), [1, 3, 224, 224]);
        assert_eq!(d.encode(&images(1, 300, 200)).unwrap().size(), [1, 256, 8]);
    }

    #[test]
    fn batches_with_a_resized_table_are_refused_unless_broadcast() {
        let d = Dino::init(tiny(), 1, Device::Cpu).unwrap();
        let x = images(2, 512, 512);
        let e = d.encode(&x).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let d = d.with_options(DinoOptions { batched_table: BatchedTable::Broadcast, ..DinoOptions::default() });
        let both = d.encode(&x).unwrap();
        assert_eq!(both.size(), [2, 1024, 8]);
        // broadcast = each image alone
        let one = d.encode(&x.narrow(0, 1, 1)).unwrap();
        let diff = (both.narrow(0, 1, 1) - one).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{diff}");
        // at 256 no table resize: batches are fine by default
        let d = Dino::init(tiny(), 1, Device::Cpu).unwrap();
        assert_eq!(d.encode(&images(3, 256, 256)).unwrap().size(), [3, 256, 8]);
    }

    #[test]
    fn replacement_position_table_sets_the_grid() {
        let d = Dino::init(DinoConfig { image_size: 518, ..tiny() }, 0, Device::Cpu).unwrap();
        assert_eq!(d.params()["embeddings.position_embeddings"].size(), [1, 37 * 37 + 1, 8]);
        let t = Tensor::zeros([257, 8], (Kind::Float, Device::Cpu));
        let d = d.with_position_table(&t).unwrap();
        assert_eq!(d.config().image_size, 224);
        assert_eq!(d.config().table_grid(), 16);
        assert!(d.position_table(16, 16).unwrap().equal(&t.unsqueeze(0)));
        let d = Dino::init(tiny(), 0, Device::Cpu).unwrap();
        assert!(d.with_position_table(&Tensor::zeros([1, 258, 8], (Kind::Float, Device::Cpu))).is_err());
        let d = Dino::init(tiny(), 0, Device::Cpu).unwrap();
        assert!(d.with_position_table(&Tensor::zeros([1, 257, 9], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn layer_scale_value_is_applied_twice() {
        // lambda' = value^2 * lambda: a model with value 0.5 equals one with value 1 whose
        // lambdas are quartered
        let cfg = DinoConfig { layerscale_value: 0.5, ..tiny() };
        let a = Dino::init(cfg.clone(), 4, Device::Cpu).unwrap();
        let mut params: BTreeMap<String, Tensor> = a.params().iter().map(|(k, v)| (k.clone(), v.copy())).collect();
        for (k, v) in params.iter_mut() {
            if k.ends_with("lambda1") {
                *v = &*v * 0.25;
            }
        }
        let b = Dino::from_params(DinoConfig { layerscale_value: 1.0, ..cfg }, params).unwrap();
        let x = images(1, 256, 256);
        let d = (a.encode(&x).unwrap() - b.encode(&x).unwrap()).abs().max().double_value(&[]);
        assert!(d < 1e-6, "{d}");
    }
}
