//! Building library objects (interfaces, networks, random streams) from a case's settings.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
use crate::jvp::JvpBackend;
use crate::golden::Case;
use crate::interfaces::{Edm, EdmConfig, Interface, MeanFlow, MeanFlowConfig, SiT, SiTConfig};
use crate::networks::{Backbone, ProbeMlp, ProbeMlpConfig};
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
pub fn interface(case: &Case) -> Result<Box<dyn Interface>> {
    interface_with(case, None)
}

/// Like [`interface`], with MeanFlow's JVP backend overridden when `jvp` is given.
pub fn interface_with(case: &Case, jvp: Option<JvpBackend>) -> Result<Box<dyn Interface>> {
    interface_on(case, jvp, Device::Cpu)
}

/// Like [`interface_with`], with the arrays an interface owns (sCT / sCD's log-variance
/// head, sCD's teacher) placed on `device`.
pub fn interface_on(case: &Case, jvp: Option<JvpBackend>, device: Device) -> Result<Box<dyn Interface>> {
    let (ty, s) = typed_block(case, "interface")?;
    Ok(match ty.as_str() {
        "sct" | "scd" => super::consistency::interface(case, &ty, s, jvp, device)?,
        "sit" => Box::new(SiT::new(settings::<SiTConfig>(case, "interface", s)?)?),
        "edm" => Box::new(Edm::new(settings::<EdmConfig>(case, "interface", s)?)?),
        "mean_flow" => {
            let mut cfg = settings::<MeanFlowConfig>(case, "interface", s)?;
            if let Some(b) = jvp {
                cfg.jvp = b;
            }
            Box::new(MeanFlow::new(cfg)?)
        }
        other => {
            return Err(case.error(
                Some("case.json"),
                Error::Unknown { what: "interface".into(), name: other.into(), known: "sit, edm, mean_flow, sct, scd".into() }.to_string(),
            ))
        }
    })
}

/// Reads every `param.*` file of a case as tensors keyed by path (without the `param.` prefix).
pub fn params(case: &Case, device: Device) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for stem in case.stems("param.") {
        let t = case.tensor(&stem, "<f4", None, device)?;
        out.insert(stem["param.".len()..].to_string(), t);
    }
    Ok(out)
}

/// The backbone of a case, built from its files, in train mode.
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
        "dit" => Err(Error::NotImplemented("the DiT backbone".into())),
        other => Err(case.error(
            Some("case.json"),
            Error::Unknown { what: "network".into(), name: other.into(), known: "probe_mlp, dit".into() }.to_string(),
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
