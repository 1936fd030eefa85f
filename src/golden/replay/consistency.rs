//! Building sCT / sCD from a case (the crate's own case layout for them; the reference has
//! none):
//!
//! - `interface`: `{type: "sct" | "scd", ...}` with the settings of [`SctConfig`] /
//!   [`ScdConfig`] (absent keys take their defaults);
//! - `step` (top level, optional, default 0): the training step of the tangent warm-up;
//! - `param.logvar.W` `[2K, 1]`, `param.logvar.b` `[1]`, `buffer.logvar.freqs` `[K]`: the
//!   interface's log-variance head (its gradients are `grad.logvar.*`);
//! - sCD only: `teacher: {interface: {type: "sit" | "edm" | "mean_flow" | "trigflow", ...},
//!   network: {type: "probe_mlp", ...}}` and the teacher's arrays as `buffer.teacher.<path>`
//!   (parameters and buffers alike: the teacher is frozen). A `trigflow` teacher's only
//!   setting is `x_sigma` (its `sigma_d`, default 0.5).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use tch::Device;

use super::build::settings;
use crate::error::{Error, Result};
use crate::golden::Case;
use crate::interfaces::{AnyInterface, Edm, EdmConfig, LogVarHead, MeanFlow, MeanFlowConfig, Scd, ScdConfig, Sct, SctConfig, SiT, SiTConfig, Teacher, TeacherConvention};
use crate::jvp::JvpBackend;
use crate::networks::{Backbone, ProbeMlp, ProbeMlpConfig};

const METADATA_KEYS: [&str; 3] = ["type", "param_seed", "description"];

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TrigFlowTeacherConfig {
    x_sigma: f64,
}

impl Default for TrigFlowTeacherConfig {
    fn default() -> Self {
        TrigFlowTeacherConfig { x_sigma: 0.5 }
    }
}

fn head(case: &Case, device: Device) -> Result<LogVarHead> {
    let freqs = case.tensor("buffer.logvar.freqs", "<f4", None, device)?;
    let k = freqs.size().first().copied().unwrap_or(0) as usize;
    let w = case.tensor("param.logvar.W", "<f4", Some(&[2 * k, 1]), device)?;
    let b = case.tensor("param.logvar.b", "<f4", Some(&[1]), device)?;
    LogVarHead::new(w, b, freqs).map_err(|e| case.error(None, e.to_string()))
}

fn step(case: &Case) -> Result<u64> {
    match case.meta.get("step") {
        None => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| case.error(Some("case.json"), format!("`step` must be a non-negative integer, got {v}"))),
    }
}

/// `(type, settings)` of `teacher.<block>`.
fn teacher_block(case: &Case, block: &str) -> Result<(String, Map<String, Value>)> {
    let where_ = format!("teacher.{block}");
    let obj = match case.meta.get("teacher").and_then(|t| t.get(block)) {
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(case.error(Some("case.json"), format!("`{where_}` is not an object"))),
        None => return Err(case.error(Some("case.json"), format!("an scd case needs `{where_}`"))),
    };
    let ty = match obj.get("type") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(case.error(Some("case.json"), format!("`{where_}.type` missing or not a string"))),
    };
    Ok((ty, obj.into_iter().filter(|(k, _)| !METADATA_KEYS.contains(&k.as_str())).collect()))
}

fn teacher_network(case: &Case, device: Device) -> Result<Box<dyn Backbone>> {
    let (ty, s) = teacher_block(case, "network")?;
    if ty != "probe_mlp" {
        return Err(case.error(Some("case.json"), Error::Unknown { what: "teacher network".into(), name: ty, known: "probe_mlp".into() }.to_string()));
    }
    let cfg: ProbeMlpConfig = settings(case, "teacher.network", s)?;
    let mut params = BTreeMap::new();
    for (name, shape) in cfg.parameter_shapes() {
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        params.insert(name.to_string(), case.tensor(&format!("buffer.teacher.{name}"), "<f4", Some(&shape), device)?);
    }
    let freqs = case.tensor("buffer.teacher.freqs", "<f4", Some(&[cfg.freqs as usize]), device)?;
    Ok(Box::new(ProbeMlp::new(cfg, params, freqs).map_err(|e| case.error(None, e.to_string()))?))
}

fn teacher(case: &Case, device: Device) -> Result<Teacher> {
    let (ty, s) = teacher_block(case, "interface")?;
    let block = "teacher.interface";
    let convention = match ty.as_str() {
        "sit" => TeacherConvention::SiT(SiT::new(settings::<SiTConfig>(case, block, s)?)?),
        "edm" => TeacherConvention::Edm(Edm::new(settings::<EdmConfig>(case, block, s)?)?),
        "mean_flow" => TeacherConvention::MeanFlow(MeanFlow::new(settings::<MeanFlowConfig>(case, block, s)?)?),
        "trigflow" => TeacherConvention::TrigFlow { sigma_d: settings::<TrigFlowTeacherConfig>(case, block, s)?.x_sigma },
        other => {
            return Err(case.error(
                Some("case.json"),
                Error::Unknown { what: "teacher interface".into(), name: other.into(), known: "sit, edm, mean_flow, trigflow".into() }.to_string(),
            ))
        }
    };
    Teacher::new(convention, teacher_network(case, device)?)
}

/// The sCT / sCD interface of a case (`ty` is `sct` or `scd`, `s` its settings).
pub fn interface(case: &Case, ty: &str, s: Map<String, Value>, jvp: Option<JvpBackend>, device: Device) -> Result<AnyInterface> {
    let step = step(case)?;
    if ty == "sct" {
        let mut cfg: SctConfig = settings(case, "interface", s)?;
        if let Some(b) = jvp {
            cfg.jvp = b;
        }
        let mut i = Sct::new(cfg, head(case, device)?)?;
        i.set_step(step);
        Ok(i.into())
    } else {
        let mut cfg: ScdConfig = settings(case, "interface", s)?;
        if let Some(b) = jvp {
            cfg.sct.jvp = b;
        }
        let mut i = Scd::new(cfg, head(case, device)?, teacher(case, device)?)?;
        i.set_step(step);
        Ok(i.into())
    }
}
