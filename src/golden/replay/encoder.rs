//! Replay of kind `encoder`: a REPA feature detector alone (`encoder.type` `dino`).
//!
//! Stage `preprocess`: `out.pixels = preprocess(in.x)` (no other setting, no parameters).
//! Stage `encode`: build [`Dino`] from the ViT settings and the `param.*` files (Flax paths),
//! then `out.pixels` and `out.features` of `in.x`, with the reference's pipeline options
//! ([`crate::encoders::DinoOptions`] defaults). The block's `intermediate_size` is read and
//! not used: transformers' `Dinov2Config` has no such setting (an `intermediate_size` handed
//! to it is stored and never read), so the reference's MLP is `hidden_size * mlp_ratio` wide
//! whatever it says (`mlp_ratio` default 4), and the weights follow that width.

use super::spec::{params, EncoderSpec};
use super::{Computed, ReplayOptions, Replayed};
use crate::encoders::{preprocess, BicubicResize, Dino, InputCheck};
use crate::error::{Error, Result};
use crate::golden::{Array, Case};

/// Replays the case.
pub fn run(case: &Case, encoder: &EncoderSpec, opts: &ReplayOptions) -> Result<Replayed> {
    let device = opts.device;
    let x = case.tensor("in.x", "<f4", None, device)?;
    let mut out = Computed::new();
    let wrap = |e: Error| match e {
        Error::Case { .. } => e,
        other => case.error(None, other.to_string()),
    };
    match encoder {
        EncoderSpec::Preprocess => {
            let p = preprocess(&x, BicubicResize::Jax, InputCheck::Finite).map_err(wrap)?;
            out.insert("out.pixels".into(), Array::from_tensor(&p)?);
        }
        EncoderSpec::Encode(cfg) => {
            let dino = Dino::from_params(cfg.clone(), params(case, device, |_| true)?).map_err(wrap)?;
            let o = dino.encode_with_pixels(&x).map_err(wrap)?;
            out.insert("out.pixels".into(), Array::from_tensor(&o.pixels)?);
            out.insert("out.features".into(), Array::from_tensor(&o.features)?);
        }
    }
    Ok(out.into())
}
