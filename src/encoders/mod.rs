//! Encoders: the frozen image feature detectors whose features REPA aligns a backbone to.
//!
//! REPA (Yu et al., ICLR 2025) trains a diffusion backbone so that a projection of one block's
//! tokens matches the patch features of a pretrained image encoder on the clean image. The
//! reference wraps any interface "with REPA auxiliary losses and feature detectors (DINOv2,
//! etc.)"; this module holds the detectors:
//!
//! - [`Dino`]: DINOv2 as the reference runs it (transformers' Flax model behind a JAX
//!   preprocess), with the Hugging Face PyTorch checkpoint layout converted
//!   ([`load_hf_safetensors`]) and torch's pipeline as a named option
//!   ([`DinoOptions::torch`]);
//! - [`resize`]: bicubic resizing as JAX computes it ([`BicubicResize::Jax`]) and as torch
//!   does ([`BicubicResize::Torch`]), reusable on its own.
//!
//! A detector is used through [`FeatureEncoder`]; [`crate::interfaces::Repa::loss_from_images`]
//! runs one under `no_grad` and feeds its features to the REPA loss.
//!
//! Conventions: images are channel-last `[B, H, W, 3]` float32, nominally in `[-1, 1]` (the
//! reference's data range); features are `[B, T, D]`, `T` patch tokens (no CLS token).

mod dino;
mod dino_weights;
pub mod resize;

pub use dino::{
    preprocess, resized_side, BatchedTable, Dino, DinoConfig, DinoOptions, DinoOutput, HiddenAct, InputCheck, TableResize, IMAGENET_MEAN,
    IMAGENET_STD,
};
pub use dino_weights::{flax_to_hf, hf_to_flax, load_hf_safetensors, write_hf_safetensors};
pub use resize::{jax_scale_bicubic, resize_bicubic, torch_bicubic, AxisWeights, BicubicResize};

use tch::Tensor;

use crate::error::Result;

/// A frozen image encoder that makes REPA's target features.
///
/// `encode` maps images `[B, H, W, 3]` (channel-last float32, nominally in `[-1, 1]`) to
/// features `[B, T, D]`; `D` is [`FeatureEncoder::feature_dim`] and `T` is
/// [`FeatureEncoder::num_tokens`] of the image size. Bad input is an error, never a panic.
pub trait FeatureEncoder {
    /// The features of `images`.
    fn encode(&self, images: &Tensor) -> Result<Tensor>;
    /// The feature width `D` (REPA's `feature_dim`).
    fn feature_dim(&self) -> i64;
    /// The number of feature tokens for an image of `height x width`, or the error `encode`
    /// would give for that size.
    fn num_tokens(&self, height: i64, width: i64) -> Result<i64>;
}
