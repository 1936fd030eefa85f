//! Replay of kind `encoder`: a REPA feature detector alone (`encoder.type` `dino`).
//!
//! Stage `preprocess`: `out.pixels = preprocess(in.x)` (no other setting, no parameters).
//! Stage `encode`: build [`Dino`] from the ViT settings and the `param.*` files (Flax paths),
//! then `out.pixels` and `out.features` of `in.x`, with the reference's pipeline options
//! ([`crate::encoders::DinoOptions`] defaults). The block's `intermediate_size` is read and
//! not used: transformers' `Dinov2Config` has no such setting (an `intermediate_size` handed
//! to it is stored and never read), so the reference's MLP is `hidden_size * mlp_ratio` wide
//! whatever it says (`mlp_ratio` default 4), and the weights follow that width.

use serde_json::Value;
use tch::Device;

use super::{build, Computed};
use crate::encoders::{preprocess, BicubicResize, Dino, DinoConfig, InputCheck};
use crate::error::{Error, Result};
use crate::golden::{Array, Case};

/// Replays the case.
pub fn run(case: &Case, device: Device) -> Result<Computed> {
    let (ty, mut s) = build::typed_block(case, "encoder")?;
    if ty != "dino" {
        let e = Error::Unknown { what: "encoder".into(), name: ty, known: "dino".into() };
        return Err(case.error(Some("case.json"), e.to_string()));
    }
    let stage = match s.remove("stage") {
        Some(Value::String(st)) => st,
        _ => return Err(case.error(Some("case.json"), "`encoder.stage` missing or not a string")),
    };
    let x = case.tensor("in.x", "<f4", None, device)?;
    let mut out = Computed::new();
    let wrap = |e: Error| match e {
        Error::Case { .. } => e,
        other => case.error(None, other.to_string()),
    };
    match stage.as_str() {
        "preprocess" => {
            if let Some(k) = s.keys().next() {
                return Err(case.error(Some("case.json"), format!("`encoder.{k}`: no such setting for stage preprocess")));
            }
            let p = preprocess(&x, BicubicResize::Jax, InputCheck::Finite).map_err(wrap)?;
            out.insert("out.pixels".into(), Array::from_tensor(&p)?);
        }
        "encode" => {
            if let Some(v) = s.remove("intermediate_size") {
                if !v.is_i64() {
                    return Err(case.error(Some("case.json"), "`encoder.intermediate_size` is not an integer"));
                }
            }
            let cfg: DinoConfig = build::settings(case, "encoder", s)?;
            let dino = Dino::from_params(cfg, build::params(case, device)?).map_err(wrap)?;
            let o = dino.encode_with_pixels(&x).map_err(wrap)?;
            out.insert("out.pixels".into(), Array::from_tensor(&o.pixels)?);
            out.insert("out.features".into(), Array::from_tensor(&o.features)?);
        }
        other => return Err(case.error(Some("case.json"), format!("`encoder.stage` `{other}`: expected preprocess or encode"))),
    }
    Ok(out)
}
