//! DINOv2 weights in the two layouts people have: the Flax paths of transformers'
//! `FlaxDinov2Model` (what the reference runs and the `encoder` golden cases store) and the
//! Hugging Face PyTorch checkpoint (`model.safetensors` of `facebook/dinov2-*`, i.e. the
//! state dict of transformers' `Dinov2Model`).
//!
//! | Flax path (shape) | PyTorch key (shape) |
//! |---|---|
//! | `embeddings.cls_token` `[1, 1, D]`, `.mask_token` `[1, D]`, `.position_embeddings` `[1, N, D]` | same names and shapes |
//! | `embeddings.patch_embeddings.projection.kernel` `[14, 14, 3, D]` | `...projection.weight` `[D, 3, 14, 14]` (axes 3, 2, 0, 1) |
//! | `<dense>.kernel` `[in, out]` (q, k, v, `attention.output.dense`, `mlp.fc1`, `mlp.fc2`) | `<dense>.weight` `[out, in]` (transposed) |
//! | `<norm>.scale` (`encoder.layer.i.norm1`, `.norm2`, `layernorm`) | `<norm>.weight` |
//! | `*.bias`, `encoder.layer.i.layer_scale{1,2}.lambda1` | same |
//!
//! A PyTorch key may carry the `dinov2.` prefix of the task models (`Dinov2ForImageClassification`);
//! any other key (a classifier head, a `pooler`) is refused by name. Half-precision
//! checkpoints are read as float32.
//!
//! The checkpoint's position table has `37 x 37 + 1` rows (`image_size` 518). The reference
//! builds the model for 224 and swaps in its own `16 x 16 + 1` table (quirk Q19):
//! [`load_hf_safetensors`] takes that table, or, without one, wants a configuration whose
//! `image_size` matches the checkpoint's table (then the table is resized at every forward,
//! as `FlaxDinov2Model.from_pretrained` would do).

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::dino::{Dino, DinoConfig, HiddenAct};
use crate::error::{Error, Result};

const CONV: &str = "embeddings.patch_embeddings.projection";
const NORMS: [&str; 3] = ["norm1", "norm2", "layernorm"];

fn is_norm(prefix: &str) -> bool {
    NORMS.iter().any(|n| prefix == *n || prefix.ends_with(&format!(".{n}")))
}

/// Converts a Flax-path state (the crate's, [`Dino::params`]) to the Hugging Face PyTorch
/// layout (see the module table). Every path must be one a DINOv2 has.
pub fn flax_to_hf(flax: &BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (path, t) in flax {
        let (key, v) = if let Some(prefix) = path.strip_suffix(".kernel") {
            let v = if prefix == CONV { t.f_permute([3, 2, 0, 1])? } else { t.f_transpose(0, 1)? };
            (format!("{prefix}.weight"), v)
        } else if let Some(prefix) = path.strip_suffix(".scale").filter(|p| is_norm(p)) {
            (format!("{prefix}.weight"), t.shallow_clone())
        } else if path.ends_with(".bias") || path.ends_with(".lambda1") || path.starts_with("embeddings.") {
            (path.clone(), t.shallow_clone())
        } else {
            return Err(Error::invalid(format!("parameter {path}"), "a DINOv2 parameter path", "an unknown path"));
        };
        out.insert(key, v.f_contiguous()?);
    }
    Ok(out)
}

/// Converts a Hugging Face PyTorch state dict (keys as in `model.safetensors`, an optional
/// `dinov2.` prefix) to Flax paths and layouts, as float32.
pub fn hf_to_flax(hf: BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (key, t) in hf {
        let k = key.strip_prefix("dinov2.").unwrap_or(&key);
        let known = k.starts_with("embeddings.") || k.starts_with("encoder.layer.") || k.starts_with("layernorm.");
        if !known {
            return Err(Error::invalid(format!("checkpoint key {key}"), "a key of transformers' Dinov2Model", "a key of another module"));
        }
        let t = t.f_to_kind(Kind::Float)?;
        let (path, v) = if let Some(prefix) = k.strip_suffix(".weight") {
            if prefix == CONV {
                (format!("{prefix}.kernel"), t.f_permute([2, 3, 1, 0])?)
            } else if is_norm(prefix) {
                (format!("{prefix}.scale"), t)
            } else if t.dim() == 2 {
                (format!("{prefix}.kernel"), t.f_transpose(0, 1)?)
            } else {
                return Err(Error::invalid(format!("checkpoint key {key}"), "a 2-D linear weight", format!("shape {:?}", t.size())));
            }
        } else {
            (k.to_string(), t)
        };
        if out.insert(path.clone(), v.f_contiguous()?).is_some() {
            return Err(Error::invalid(format!("checkpoint key {key}"), "each parameter once", format!("a second {path}")));
        }
    }
    Ok(out)
}

/// Reads a Hugging Face DINOv2 checkpoint (`model.safetensors`) onto `device` as a [`Dino`]
/// of settings `cfg`. `position_table` (`[1, N, D]` or `[N, D]`), when given, replaces the
/// checkpoint's (the reference's `pos_embed_base.npy`, quirk Q19). Without it, the
/// checkpoint's table must fit `cfg.image_size`; the error says what to do when it does not.
pub fn load_hf_safetensors(cfg: DinoConfig, path: &Path, device: Device, position_table: Option<&Tensor>) -> Result<Dino> {
    let named = Tensor::read_safetensors(path)?;
    let mut hf = BTreeMap::new();
    for (k, t) in named {
        hf.insert(k, t.f_to_device(device)?);
    }
    let flax = hf_to_flax(hf)?;
    let pos = "embeddings.position_embeddings";
    match position_table {
        Some(table) => {
            // build with the checkpoint's own table, then swap (the grid follows the new table)
            let rows = flax.get(pos).map(|t| t.size()[1]).unwrap_or(0);
            let g = ((rows - 1).max(0) as f64).sqrt().round() as i64;
            let own = DinoConfig { image_size: g * cfg.patch_size, ..cfg };
            Dino::from_params(own, flax)?.with_position_table(table)
        }
        None => {
            let want = cfg.table_grid().pow(2) + 1;
            if let Some(t) = flax.get(pos) {
                let rows = t.size().get(1).copied().unwrap_or(0);
                if rows != want {
                    return Err(Error::invalid(
                        format!("{}: {pos}", path.display()),
                        format!(
                            "{want} rows for image_size {} (patch {}); pass the reference's replacement table (pos_embed_base.npy, 16 x 16 + 1 rows, quirk Q19), or set image_size to {} (the checkpoint's)",
                            cfg.image_size,
                            cfg.patch_size,
                            (((rows - 1).max(0) as f64).sqrt().round() as i64) * cfg.patch_size
                        ),
                        format!("{rows} rows"),
                    ));
                }
            }
            Dino::from_params(cfg, flax)
        }
    }
}

/// Writes the model in the Hugging Face layout (`model.safetensors` keys, float32, no prefix).
pub fn write_hf_safetensors(dino: &Dino, path: &Path) -> Result<()> {
    let hf = flax_to_hf(dino.params())?;
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (k, v) in hf {
        named.push((k, v.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?));
    }
    Ok(Tensor::write_safetensors(&named, path)?)
}

fn json_int(v: &serde_json::Value, key: &str) -> Result<Option<i64>> {
    match v.get(key) {
        None => Ok(None),
        Some(x) => match (x.as_i64(), x.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(Some(f as i64)),
            _ => Err(Error::invalid(format!("config.json `{key}`"), "an integer", x)),
        },
    }
}

impl DinoConfig {
    /// The settings of a Hugging Face `config.json` (transformers' `Dinov2Config`): the keys
    /// named as in [`DinoConfig`] are read, absent ones take transformers' defaults where they
    /// equal this crate's, and other keys are ignored. `num_channels` must be 3 and
    /// `model_type`, when present, `dinov2`. Note `facebook/dinov2-*` say `image_size` 518.
    pub fn from_hf_config_json(text: &str) -> Result<DinoConfig> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::invalid("config.json", "a JSON object", e))?;
        if !v.is_object() {
            return Err(Error::invalid("config.json", "a JSON object", "another JSON value"));
        }
        if let Some(m) = v.get("model_type") {
            if m.as_str() != Some("dinov2") {
                return Err(Error::invalid("config.json `model_type`", "dinov2", m));
            }
        }
        if let Some(c) = json_int(&v, "num_channels")? {
            if c != 3 {
                return Err(Error::invalid("config.json `num_channels`", "3", c));
            }
        }
        let d = DinoConfig::default();
        let int = |key: &str, default: i64| -> Result<i64> { Ok(json_int(&v, key)?.unwrap_or(default)) };
        let flag = |key: &str, default: bool| -> Result<bool> {
            match v.get(key) {
                None => Ok(default),
                Some(x) => x.as_bool().ok_or_else(|| Error::invalid(format!("config.json `{key}`"), "true or false", x)),
            }
        };
        let float = |key: &str, default: f64| -> Result<f64> {
            match v.get(key) {
                None => Ok(default),
                Some(x) => x.as_f64().ok_or_else(|| Error::invalid(format!("config.json `{key}`"), "a number", x)),
            }
        };
        let act = match v.get("hidden_act") {
            None => HiddenAct::Gelu,
            Some(a) if a.as_str() == Some("gelu") => HiddenAct::Gelu,
            Some(a) => {
                let name = a.as_str().map(str::to_string).unwrap_or_else(|| a.to_string());
                return Err(Error::Unknown { what: "hidden_act".into(), name, known: "gelu".into() });
            }
        };
        DinoConfig {
            hidden_size: int("hidden_size", d.hidden_size)?,
            num_hidden_layers: int("num_hidden_layers", d.num_hidden_layers)?,
            num_attention_heads: int("num_attention_heads", d.num_attention_heads)?,
            mlp_ratio: int("mlp_ratio", d.mlp_ratio)?,
            patch_size: int("patch_size", 16)?,
            image_size: int("image_size", d.image_size)?,
            layer_norm_eps: float("layer_norm_eps", d.layer_norm_eps)?,
            layerscale_value: float("layerscale_value", d.layerscale_value)?,
            hidden_act: act,
            use_swiglu_ffn: flag("use_swiglu_ffn", false)?,
            qkv_bias: flag("qkv_bias", true)?,
        }
        .validated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> DinoConfig {
        DinoConfig { hidden_size: 8, num_hidden_layers: 2, num_attention_heads: 2, mlp_ratio: 3, ..DinoConfig::default() }
    }

    #[test]
    fn a_random_model_converts_both_ways() {
        let d = Dino::init(tiny(), 7, Device::Cpu).unwrap();
        let hf = flax_to_hf(d.params()).unwrap();
        assert_eq!(hf["embeddings.patch_embeddings.projection.weight"].size(), [8, 3, 14, 14]);
        assert_eq!(hf["encoder.layer.1.mlp.fc1.weight"].size(), [24, 8]);
        assert!(hf.contains_key("encoder.layer.0.norm1.weight") && hf.contains_key("layernorm.weight"));
        // the PyTorch conv weight [o, c, y, x] is the Flax kernel [y, x, c, o]
        let k = &d.params()["embeddings.patch_embeddings.projection.kernel"];
        let w = &hf["embeddings.patch_embeddings.projection.weight"];
        assert_eq!(w.double_value(&[5, 2, 3, 11]), k.double_value(&[3, 11, 2, 5]));
        let q = &d.params()["encoder.layer.0.attention.attention.query.kernel"];
        assert_eq!(hf["encoder.layer.0.attention.attention.query.weight"].double_value(&[1, 6]), q.double_value(&[6, 1]));
        let back = hf_to_flax(hf).unwrap();
        assert_eq!(back.len(), d.params().len());
        for (k, v) in d.params() {
            assert!(back[k].equal(v), "{k}");
        }
        // with a prefix, as task models save it
        let pre: BTreeMap<String, Tensor> = flax_to_hf(d.params()).unwrap().into_iter().map(|(k, v)| (format!("dinov2.{k}"), v)).collect();
        assert_eq!(hf_to_flax(pre).unwrap().len(), d.params().len());
    }

    #[test]
    fn safetensors_round_trip_and_position_table_rules() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("model.safetensors");
        let big = Dino::init(DinoConfig { image_size: 518, ..tiny() }, 1, Device::Cpu).unwrap();
        write_hf_safetensors(&big, &f).unwrap();
        // the checkpoint's own table at image_size 518
        let a = load_hf_safetensors(DinoConfig { image_size: 518, ..tiny() }, &f, Device::Cpu, None).unwrap();
        for (k, v) in big.params() {
            assert!(a.params()[k].equal(v), "{k}");
        }
        // the reference's configuration (224) without a replacement table: a clear error
        let e = load_hf_safetensors(tiny(), &f, Device::Cpu, None).unwrap_err().to_string();
        assert!(e.contains("1370 rows") && e.contains("pos_embed_base.npy") && e.contains("518"), "{e}");
        // with one: the table is swapped and the grid follows it
        let table = Tensor::ones([1, 257, 8], (Kind::Float, Device::Cpu));
        let b = load_hf_safetensors(tiny(), &f, Device::Cpu, Some(&table)).unwrap();
        assert_eq!(b.config().image_size, 224);
        assert!(b.params()["embeddings.position_embeddings"].equal(&table));
        // a foreign key is named
        let mut hf = flax_to_hf(big.params()).unwrap();
        hf.insert("classifier.weight".into(), Tensor::zeros([2, 16], (Kind::Float, Device::Cpu)));
        assert!(hf_to_flax(hf).unwrap_err().to_string().contains("classifier.weight"));
    }

    #[test]
    fn hf_config_json() {
        // the fields of facebook/dinov2-base's config.json
        let base = r#"{"architectures": ["Dinov2Model"], "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": 768, "image_size": 518,
            "initializer_range": 0.02, "layer_norm_eps": 1e-06, "layerscale_value": 1.0, "mlp_ratio": 4,
            "model_type": "dinov2", "num_attention_heads": 12, "num_channels": 3, "num_hidden_layers": 12,
            "patch_size": 14, "qkv_bias": true, "torch_dtype": "float32", "use_swiglu_ffn": false}"#;
        let c = DinoConfig::from_hf_config_json(base).unwrap();
        assert_eq!(c, DinoConfig { image_size: 518, ..DinoConfig::default() });
        assert!(DinoConfig::from_hf_config_json(r#"{"model_type": "vit"}"#).is_err());
        assert!(DinoConfig::from_hf_config_json(r#"{"patch_size": 14, "hidden_act": "relu"}"#).is_err());
        assert!(DinoConfig::from_hf_config_json(r#"{"patch_size": 14, "use_swiglu_ffn": true}"#).is_err());
        assert!(DinoConfig::from_hf_config_json(r#"{"patch_size": 14, "num_channels": 1}"#).is_err());
        assert!(DinoConfig::from_hf_config_json("[1]").is_err());
        assert_eq!(DinoConfig::from_hf_config_json(r#"{"patch_size": 14, "mlp_ratio": 4.0}"#).unwrap().mlp_ratio, 4);
    }
}
