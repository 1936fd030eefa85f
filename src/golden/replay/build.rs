//! Building library objects (interfaces, networks, random streams) from a case's settings.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::jvp::JvpBackend;
use crate::golden::Case;
use crate::interfaces::{AnyInterface, Edm, EdmConfig, MeanFlow, MeanFlowConfig, Projector, RepaConfig, SiT, SiTConfig, PROJECTOR_PREFIX};
use crate::networks::{Backbone, Dit, DitConfig, LightningDit, LightningDitConfig, ProbeMlp, ProbeMlpConfig};
use crate::rng::Rngs;

/// Keys of a settings block that are metadata, not settings (golden-format.md).
const METADATA_KEYS: [&str; 3] = ["type", "param_seed", "description"];

/// Splits a settings object (`interface`, `network`, `sampler`) into its `type` and its settings
/// (metadata keys removed), naming the case and block in errors.
pub fn typed_block(case: &Case, block: &str) -> Result<(String, Map<String, Value>)> {
    let obj = match case.meta.get(block) {
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(case.error(Some("case.json"), format!("`{block}` is not an object"))),
        None => return Err(case.error(Some("case.json"), format!("no `{block}`"))),
    };
    let ty = match obj.get("type") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(case.error(Some("case.json"), format!("`{block}.type` missing or not a string"))),
    };
    let settings = obj.into_iter().filter(|(k, _)| !METADATA_KEYS.contains(&k.as_str())).collect();
    Ok((ty, settings))
}

/// Deserializes a settings object, naming the case and block in errors.
pub fn settings<T: DeserializeOwned>(case: &Case, block: &str, s: Map<String, Value>) -> Result<T> {
    serde_json::from_value(Value::Object(s)).map_err(|e| case.error(Some("case.json"), format!("`{block}`: {e}")))
}

/// The interface of a case, or `NotImplemented` for interfaces not built yet.
pub fn interface(case: &Case) -> Result<AnyInterface> {
    interface_with(case, None)
}

/// Like [`interface`], with MeanFlow's JVP backend overridden when `jvp` is given.
pub fn interface_with(case: &Case, jvp: Option<JvpBackend>) -> Result<AnyInterface> {
    interface_on(case, jvp, Device::Cpu)
}

/// Like [`interface_with`], with the arrays an interface owns (sCT / sCD's log-variance
/// head, sCD's teacher) placed on `device`.
pub fn interface_on(case: &Case, jvp: Option<JvpBackend>, device: Device) -> Result<AnyInterface> {
    let (ty, s) = typed_block(case, "interface")?;
    Ok(match ty.as_str() {
        "sct" | "scd" => super::consistency::interface(case, &ty, s, jvp, device)?,
        "sit" => SiT::new(settings::<SiTConfig>(case, "interface", s)?)?.into(),
        "edm" => Edm::new(settings::<EdmConfig>(case, "interface", s)?)?.into(),
        "mean_flow" => {
            let mut cfg = settings::<MeanFlowConfig>(case, "interface", s)?;
            if let Some(b) = jvp {
                cfg.jvp = b;
            }
            MeanFlow::new(cfg)?.into()
        }
        other => {
            return Err(case.error(
                Some("case.json"),
                Error::Unknown { what: "interface".into(), name: other.into(), known: "sit, edm, mean_flow, sct, scd".into() }.to_string(),
            ))
        }
    })
}

/// Reads the network's `param.*` files as tensors keyed by path (without the `param.`
/// prefix). In a case with a `repa` block, `param.projector.*` belong to the REPA projector
/// ([`projector`]) and are left out.
pub fn params(case: &Case, device: Device) -> Result<BTreeMap<String, Tensor>> {
    let repa = case.meta.contains_key("repa");
    let mut out = BTreeMap::new();
    for stem in case.stems("param.") {
        let path = &stem["param.".len()..];
        if repa && path.starts_with(PROJECTOR_PREFIX) {
            continue;
        }
        let t = case.tensor(&stem, "<f4", None, device)?;
        out.insert(path.to_string(), t);
    }
    Ok(out)
}

/// Reads every `buffer.*` file of a case as tensors keyed by path (without the prefix).
pub fn buffers(case: &Case, device: Device) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for stem in case.stems("buffer.") {
        let t = case.tensor(&stem, "<f4", None, device)?;
        out.insert(stem["buffer.".len()..].to_string(), t);
    }
    Ok(out)
}

/// The `dit` network of a case (settings from `network`, arrays from `param.*` / `buffer.*`).
pub fn dit(case: &Case, device: Device) -> Result<Dit> {
    let (ty, s) = typed_block(case, "network")?;
    if ty != "dit" {
        return Err(case.error(Some("case.json"), format!("`network.type` is `{ty}` where `dit` is expected")));
    }
    let cfg: DitConfig = settings(case, "network", s)?;
    let (params, buffers) = (params(case, device)?, buffers(case, device)?);
    Dit::from_params(cfg, params, buffers).map_err(|e| case.error(None, e.to_string()))
}

/// The `lightning_dit` network of a case (settings from `network`, arrays from `param.*` /
/// `buffer.*`).
pub fn lightning_dit(case: &Case, device: Device) -> Result<LightningDit> {
    let (_, s) = typed_block(case, "network")?;
    let cfg: LightningDitConfig = settings(case, "network", s)?;
    let (params, buffers) = (params(case, device)?, buffers(case, device)?);
    LightningDit::from_params(cfg, params, buffers).map_err(|e| case.error(None, e.to_string()))
}

/// The REPA settings (`repa` block) and projector (`param.projector.*`) of a case, for
/// features of width `hidden`.
pub fn projector(case: &Case, hidden: i64, device: Device) -> Result<(RepaConfig, Projector)> {
    let s = match case.meta.get("repa") {
        Some(Value::Object(o)) => o.clone(),
        _ => return Err(case.error(Some("case.json"), "`repa` missing or not an object")),
    };
    let cfg: RepaConfig = settings(case, "repa", s)?;
    let mut params = BTreeMap::new();
    for stem in case.stems(&format!("param.{PROJECTOR_PREFIX}")) {
        params.insert(stem["param.".len()..].to_string(), case.tensor(&stem, "<f4", None, device)?);
    }
    let p = Projector::from_params(&cfg, hidden, params).map_err(|e| case.error(None, e.to_string()))?;
    Ok((cfg, p))
}

/// The width of the network's features (what a REPA projector takes): `hidden` for
/// `probe_mlp`, `hidden_size` for `dit` and `lightning_dit`.
pub fn feature_width(case: &Case) -> Result<i64> {
    let (ty, s) = typed_block(case, "network")?;
    let key = match ty.as_str() {
        "probe_mlp" => "hidden",
        "dit" | "lightning_dit" => "hidden_size",
        other => return Err(case.error(Some("case.json"), format!("no known feature width for network `{other}`"))),
    };
    s.get(key).and_then(Value::as_i64).ok_or_else(|| case.error(Some("case.json"), format!("`network.{key}` missing or not an integer")))
}

/// The backbone of a case, built from its files.
pub fn network(case: &Case, device: Device) -> Result<Box<dyn Backbone>> {
    let (ty, s) = typed_block(case, "network")?;
    match ty.as_str() {
        "probe_mlp" => {
            let cfg: ProbeMlpConfig = settings(case, "network", s)?;
            let freqs = case.tensor("buffer.freqs", "<f4", Some(&[cfg.freqs as usize]), device)?;
            // `param.logvar.*` belong to the interface (sCT / sCD), not to the backbone
            let params = params(case, device)?.into_iter().filter(|(k, _)| !k.starts_with("logvar.")).collect();
            Ok(Box::new(ProbeMlp::new(cfg, params, freqs).map_err(|e| case.error(None, e.to_string()))?))
        }
        "dit" => Ok(Box::new(dit(case, device)?)),
        "lightning_dit" => Ok(Box::new(lightning_dit(case, device)?)),
        other => Err(case.error(
            Some("case.json"),
            Error::Unknown { what: "network".into(), name: other.into(), known: "probe_mlp, dit, lightning_dit".into() }.to_string(),
        )),
    }
}

/// The `nnx.Rngs` of a case from its `{stream: seed}` object under `key`.
pub fn rngs(case: &Case, key: &str) -> Result<Rngs> {
    let map: BTreeMap<String, i64> = match case.meta.get(key) {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| case.error(Some("case.json"), format!("`{key}`: {e}")))?,
        None => return Err(case.error(Some("case.json"), format!("no `{key}`"))),
    };
    let pairs: Vec<(&str, i64)> = map.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    Ok(Rngs::new(&pairs)?)
}
