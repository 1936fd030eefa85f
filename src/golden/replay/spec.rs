//! Typed specs: every block of a `case.json` parsed once, into the library's own config
//! structs, before anything is built.
//!
//! [`CaseSpec::parse`] reads the kind's keys (`interface`, `network`, `sampler`, `repa`,
//! `rngs`, `shape`, `step`, `teacher`, `encoder`, ...), with the reference's defaults for
//! absent settings and an error naming the case, the block and the key for anything unknown
//! or malformed. The replay of every kind then takes the same three arguments — the case (for
//! its arrays), its spec and the [`ReplayOptions`] — and builds what it needs from the typed
//! spec ([`InterfaceSpec::build`], [`NetworkSpec::build`]). The JVP backend is part of the
//! spec: the case's own choice, or the one [`ReplayOptions::jvp`] asks for, resolved once here.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use tch::{Device, Tensor};

use super::ReplayOptions;
use crate::encoders::DinoConfig;
use crate::error::{Error, Result};
use crate::golden::{Case, CaseKind, InterfaceType, NetworkType};
use crate::interfaces::{AnyInterface, Edm, EdmConfig, LogVarHead, MeanFlow, MeanFlowConfig, Projector, RepaConfig, Scd, ScdConfig, Sct, SctConfig, SiT, SiTConfig, Teacher, TeacherConvention, PROJECTOR_PREFIX};
use crate::jvp::JvpBackend;
use crate::networks::{Backbone, Dit, DitConfig, LightningDit, LightningDitConfig, ProbeMlp, ProbeMlpConfig};
use crate::rng::Rngs;
use crate::samplers::AnySampler;

/// Keys of a settings block that are metadata, not settings (`docs/format.md`).
const METADATA_KEYS: [&str; 3] = ["type", "param_seed", "description"];

/// A case, parsed.
#[derive(Debug)]
pub struct CaseSpec {
    /// What the kind asks to compute.
    pub body: Spec,
}

/// The typed content of each kind.
#[derive(Debug)]
pub enum Spec {
    /// `rng`: the calls, as the rng replay reads them.
    Rng(super::rng::RngCase),
    /// `coefficients`.
    Coefficients(CoefficientsSpec),
    /// `loss` and `grad`.
    Loss(LossSpec),
    /// `pred`.
    Pred(PredSpec),
    /// `sampler`.
    Sampler(SamplerSpec),
    /// `network`.
    Network(NetworkSpec),
    /// `encoder`.
    Encoder(EncoderSpec),
}

/// A `coefficients` case.
#[derive(Debug)]
pub struct CoefficientsSpec {
    /// The interface whose preconditioning is evaluated.
    pub interface: InterfaceSpec,
    /// The shifts of `out.t_shift_<s>`.
    pub t_shifts: Vec<f64>,
}

/// A `pred` case.
#[derive(Debug)]
pub struct PredSpec {
    /// The interface.
    pub interface: InterfaceSpec,
    /// The backbone.
    pub network: NetworkSpec,
}

/// A `loss` / `grad` case.
#[derive(Debug)]
pub struct LossSpec {
    /// The interface (REPA's inner one when `repa` is set).
    pub interface: InterfaceSpec,
    /// The backbone.
    pub network: NetworkSpec,
    /// The `nnx.Rngs` seeds, by stream.
    pub rngs: BTreeMap<String, i64>,
    /// The shape of `in.x`.
    pub shape: Vec<usize>,
    /// REPA's settings, when the interface is wrapped.
    pub repa: Option<RepaConfig>,
    /// Whether gradients are expected (kind `grad`).
    pub grad: bool,
}

/// A `sampler` case.
#[derive(Debug)]
pub struct SamplerSpec {
    /// The sampler, built from its block (its settings validated).
    pub sampler: AnySampler,
    /// The interface.
    pub interface: InterfaceSpec,
    /// The backbone.
    pub network: NetworkSpec,
    /// The seed of the sampler's `nnx.Rngs(rng_seed)`.
    pub rng_seed: i64,
    /// The guidance scale.
    pub guidance_scale: f64,
}

/// An `interface` block.
#[derive(Debug, Clone)]
pub enum InterfaceSpec {
    /// `sit`.
    Sit(SiTConfig),
    /// `edm`.
    Edm(EdmConfig),
    /// `mean_flow` (its JVP backend resolved).
    MeanFlow(MeanFlowConfig),
    /// `sct` (its JVP backend resolved) at training step `step`.
    Sct {
        /// The settings.
        cfg: SctConfig,
        /// The warm-up step (top-level `step`, default 0).
        step: u64,
    },
    /// `scd` (its JVP backend resolved) at training step `step`, with its teacher.
    Scd {
        /// The settings.
        cfg: ScdConfig,
        /// The warm-up step.
        step: u64,
        /// The frozen teacher (`teacher` block; arrays `buffer.teacher.*`).
        teacher: TeacherSpec,
    },
}

/// An sCD teacher: its convention and its probe network.
#[derive(Debug, Clone)]
pub struct TeacherSpec {
    /// The teacher's interface.
    pub interface: TeacherInterfaceSpec,
    /// The teacher's network (a probe).
    pub network: ProbeMlpConfig,
}

/// The interface of an sCD teacher.
#[derive(Debug, Clone)]
pub enum TeacherInterfaceSpec {
    /// A SiT teacher.
    Sit(SiTConfig),
    /// An EDM teacher.
    Edm(EdmConfig),
    /// A MeanFlow teacher (its instantaneous velocity).
    MeanFlow(MeanFlowConfig),
    /// A TrigFlow diffusion model with its own `sigma_d` (setting `x_sigma`, default 0.5).
    TrigFlow {
        /// Its `sigma_d`.
        sigma_d: f64,
    },
}

/// A `network` block.
#[derive(Debug, Clone)]
pub enum NetworkSpec {
    /// `probe_mlp`.
    Probe(ProbeMlpConfig),
    /// `dit`.
    Dit(DitConfig),
    /// `lightning_dit`.
    LightningDit(LightningDitConfig),
}

/// An `encoder` block.
#[derive(Debug, Clone)]
pub enum EncoderSpec {
    /// `stage: preprocess`: the pixels alone.
    Preprocess,
    /// `stage: encode`: the ViT with these settings.
    Encode(DinoConfig),
}

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

/// The pieces of a case.json that a spec is made of, with errors naming the case.
struct Reader<'a> {
    case: &'a Case,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        self.case.error(Some("case.json"), msg)
    }

    /// The object at `path` (dot-separated, e.g. `teacher.interface`).
    fn object(&self, path: &str) -> Result<Map<String, Value>> {
        let mut v: Option<&Value> = None;
        let mut cur = &self.case.meta;
        for (i, part) in path.split('.').enumerate() {
            let next = cur.get(part).ok_or_else(|| self.err(format!("no `{path}`")))?;
            v = Some(next);
            if i + 1 < path.split('.').count() {
                cur = next.as_object().ok_or_else(|| self.err(format!("`{part}` is not an object")))?;
            }
        }
        match v {
            Some(Value::Object(o)) => Ok(o.clone()),
            _ => Err(self.err(format!("`{path}` is not an object"))),
        }
    }

    /// `(type, settings)` of the block at `path`, metadata keys removed.
    fn typed(&self, path: &str) -> Result<(String, Map<String, Value>)> {
        let obj = self.object(path)?;
        let ty = match obj.get("type") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(self.err(format!("`{path}.type` missing or not a string"))),
        };
        Ok((ty, obj.into_iter().filter(|(k, _)| !METADATA_KEYS.contains(&k.as_str())).collect()))
    }

    fn settings<T: DeserializeOwned>(&self, path: &str, s: Map<String, Value>) -> Result<T> {
        serde_json::from_value(Value::Object(s)).map_err(|e| self.err(format!("`{path}`: {e}")))
    }

    /// A top-level key deserialized, or `None` when absent.
    fn top<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.case.meta.get(key) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| self.err(format!("`{key}`: {e}"))),
        }
    }

    fn required<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        self.top(key)?.ok_or_else(|| self.err(format!("no `{key}`")))
    }

    fn unknown(&self, what: &str, name: &str, known: &str) -> Error {
        self.err(Error::Unknown { what: what.into(), name: name.into(), known: known.into() }.to_string())
    }

    fn interface(&self, jvp: Option<JvpBackend>) -> Result<InterfaceSpec> {
        // The header has already read (and checked) the block's type.
        let (_, s) = self.typed("interface")?;
        let ty = self.case.header.interface.ok_or_else(|| self.err("no `interface`"))?;
        let step: u64 = self.top("step")?.unwrap_or(0);
        Ok(match ty {
            InterfaceType::Sit => InterfaceSpec::Sit(self.settings("interface", s)?),
            InterfaceType::Edm => InterfaceSpec::Edm(self.settings("interface", s)?),
            InterfaceType::MeanFlow => {
                let mut cfg: MeanFlowConfig = self.settings("interface", s)?;
                cfg.jvp = jvp.unwrap_or(cfg.jvp);
                InterfaceSpec::MeanFlow(cfg)
            }
            InterfaceType::Sct => {
                let mut cfg: SctConfig = self.settings("interface", s)?;
                cfg.jvp = jvp.unwrap_or(cfg.jvp);
                InterfaceSpec::Sct { cfg, step }
            }
            InterfaceType::Scd => {
                let mut cfg: ScdConfig = self.settings("interface", s)?;
                cfg.sct.jvp = jvp.unwrap_or(cfg.sct.jvp);
                InterfaceSpec::Scd { cfg, step, teacher: self.teacher()? }
            }
        })
    }

    fn teacher(&self) -> Result<TeacherSpec> {
        let (ty, s) = self.typed("teacher.interface").map_err(|_| self.err("an scd case needs `teacher.interface` and `teacher.network`"))?;
        let block = "teacher.interface";
        let interface = match ty.as_str() {
            "sit" => TeacherInterfaceSpec::Sit(self.settings(block, s)?),
            "edm" => TeacherInterfaceSpec::Edm(self.settings(block, s)?),
            "mean_flow" => TeacherInterfaceSpec::MeanFlow(self.settings(block, s)?),
            "trigflow" => TeacherInterfaceSpec::TrigFlow { sigma_d: self.settings::<TrigFlowTeacherConfig>(block, s)?.x_sigma },
            other => return Err(self.unknown("teacher interface", other, "sit, edm, mean_flow, trigflow")),
        };
        let (ty, s) = self.typed("teacher.network")?;
        if ty != "probe_mlp" {
            return Err(self.unknown("teacher network", &ty, "probe_mlp"));
        }
        Ok(TeacherSpec { interface, network: self.settings("teacher.network", s)? })
    }

    fn network(&self) -> Result<NetworkSpec> {
        let (_, s) = self.typed("network")?;
        Ok(match self.case.header.network.ok_or_else(|| self.err("no `network`"))? {
            NetworkType::ProbeMlp => NetworkSpec::Probe(self.settings("network", s)?),
            NetworkType::Dit => NetworkSpec::Dit(self.settings("network", s)?),
            NetworkType::LightningDit => NetworkSpec::LightningDit(self.settings("network", s)?),
        })
    }

    fn shape(&self) -> Result<Vec<usize>> {
        let shape: Vec<i64> = self.required("shape")?;
        if shape.len() < 2 || shape.iter().any(|&d| d < 1) {
            return Err(self.err(format!("`shape` {shape:?}: expected [B, ..., C] with at least 2 positive dimensions")));
        }
        Ok(shape.iter().map(|&d| d as usize).collect())
    }

    fn encoder(&self) -> Result<EncoderSpec> {
        let (ty, mut s) = self.typed("encoder")?;
        if ty != "dino" {
            return Err(self.unknown("encoder", &ty, "dino"));
        }
        let stage = match s.remove("stage") {
            Some(Value::String(st)) => st,
            _ => return Err(self.err("`encoder.stage` missing or not a string")),
        };
        match stage.as_str() {
            "preprocess" => match s.keys().next() {
                Some(k) => Err(self.err(format!("`encoder.{k}`: no such setting for stage preprocess"))),
                None => Ok(EncoderSpec::Preprocess),
            },
            "encode" => {
                // transformers' Dinov2Config has no `intermediate_size`: the reference stores the
                // key and never reads it (the MLP is `hidden_size * mlp_ratio` wide), so do we.
                if let Some(v) = s.remove("intermediate_size") {
                    if !v.is_i64() {
                        return Err(self.err("`encoder.intermediate_size` is not an integer"));
                    }
                }
                Ok(EncoderSpec::Encode(self.settings("encoder", s)?))
            }
            other => Err(self.err(format!("`encoder.stage` `{other}`: expected preprocess or encode"))),
        }
    }
}

impl CaseSpec {
    /// Parses the case's settings for its kind; the JVP backend of a MeanFlow, sCT or sCD
    /// interface is `opts.jvp` when given, else the case's (else the default).
    pub fn parse(case: &Case, opts: &ReplayOptions) -> Result<CaseSpec> {
        let r = Reader { case };
        let body = match case.kind {
            CaseKind::Rng => Spec::Rng(case.settings()?),
            CaseKind::Coefficients => Spec::Coefficients(CoefficientsSpec { interface: r.interface(opts.jvp)?, t_shifts: r.required("t_shifts")? }),
            CaseKind::Loss | CaseKind::Grad => Spec::Loss(LossSpec {
                interface: r.interface(opts.jvp)?,
                network: r.network()?,
                rngs: r.required("rngs")?,
                shape: r.shape()?,
                repa: match case.meta.get("repa") {
                    Some(_) => Some(r.settings("repa", r.object("repa")?)?),
                    None => None,
                },
                grad: case.kind == CaseKind::Grad,
            }),
            CaseKind::Pred => Spec::Pred(PredSpec { interface: r.interface(opts.jvp)?, network: r.network()? }),
            CaseKind::Sampler => {
                let (ty, s) = r.typed("sampler")?;
                let sampler = AnySampler::from_settings(&ty, &s).map_err(|e| r.err(format!("`sampler`: {e}")))?;
                Spec::Sampler(SamplerSpec {
                    sampler,
                    interface: r.interface(opts.jvp)?,
                    network: r.network()?,
                    rng_seed: r.required("rng_seed")?,
                    guidance_scale: r.top("guidance_scale")?.unwrap_or(1.0),
                })
            }
            CaseKind::Network => Spec::Network(r.network()?),
            CaseKind::Encoder => Spec::Encoder(r.encoder()?),
        };
        Ok(CaseSpec { body })
    }
}

/// Reads the `param.*` files (without the prefix) whose path `keep` accepts.
pub fn params(case: &Case, device: Device, keep: impl Fn(&str) -> bool) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for stem in case.stems("param.") {
        let path = &stem["param.".len()..];
        if keep(path) {
            out.insert(path.to_string(), case.tensor(&stem, "<f4", None, device)?);
        }
    }
    Ok(out)
}

/// Reads every `buffer.*` file (without the prefix) whose path `keep` accepts.
fn buffers(case: &Case, device: Device, keep: impl Fn(&str) -> bool) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for stem in case.stems("buffer.") {
        let path = &stem["buffer.".len()..];
        if keep(path) {
            out.insert(path.to_string(), case.tensor(&stem, "<f4", None, device)?);
        }
    }
    Ok(out)
}

/// The arrays that belong to the backbone, not to an interface or a wrapper: REPA's
/// projector, sCT / sCD's log-variance head and sCD's teacher have their own prefixes.
fn backbone_path(path: &str) -> bool {
    !(path.starts_with(PROJECTOR_PREFIX) || path.starts_with("logvar.") || path.starts_with("teacher."))
}

fn in_case(case: &Case) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Case { .. } => e,
        other => case.error(None, other.to_string()),
    }
}

impl NetworkSpec {
    /// The width of the backbone's features (what a REPA projector takes).
    pub fn feature_width(&self) -> i64 {
        match self {
            NetworkSpec::Probe(c) => c.hidden,
            NetworkSpec::Dit(c) => c.hidden_size,
            NetworkSpec::LightningDit(c) => c.dit.hidden_size,
        }
    }

    /// Builds the backbone from the case's `param.*` / `buffer.*` files.
    pub fn build(&self, case: &Case, device: Device) -> Result<Box<dyn Backbone>> {
        Ok(match self {
            NetworkSpec::Probe(cfg) => {
                let freqs = case.tensor("buffer.freqs", "<f4", Some(&[cfg.freqs as usize]), device)?;
                Box::new(ProbeMlp::new(*cfg, params(case, device, backbone_path)?, freqs).map_err(in_case(case))?)
            }
            NetworkSpec::Dit(cfg) => {
                let (p, b) = (params(case, device, backbone_path)?, buffers(case, device, backbone_path)?);
                Box::new(Dit::from_params(cfg.clone(), p, b).map_err(in_case(case))?)
            }
            NetworkSpec::LightningDit(cfg) => {
                let (p, b) = (params(case, device, backbone_path)?, buffers(case, device, backbone_path)?);
                Box::new(LightningDit::from_params(cfg.clone(), p, b).map_err(in_case(case))?)
            }
        })
    }
}

fn head(case: &Case, device: Device) -> Result<LogVarHead> {
    let freqs = case.tensor("buffer.logvar.freqs", "<f4", None, device)?;
    let k = freqs.size().first().copied().unwrap_or(0) as usize;
    let w = case.tensor("param.logvar.W", "<f4", Some(&[2 * k, 1]), device)?;
    let b = case.tensor("param.logvar.b", "<f4", Some(&[1]), device)?;
    LogVarHead::new(w, b, freqs).map_err(in_case(case))
}

impl TeacherSpec {
    /// Builds the frozen teacher from `buffer.teacher.*`.
    fn build(&self, case: &Case, device: Device) -> Result<Teacher> {
        let cfg = self.network;
        let mut p = BTreeMap::new();
        for (name, shape) in cfg.parameter_shapes() {
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            p.insert(name.to_string(), case.tensor(&format!("buffer.teacher.{name}"), "<f4", Some(&shape), device)?);
        }
        let freqs = case.tensor("buffer.teacher.freqs", "<f4", Some(&[cfg.freqs as usize]), device)?;
        let net = ProbeMlp::new(cfg, p, freqs).map_err(in_case(case))?;
        let convention = match &self.interface {
            TeacherInterfaceSpec::Sit(c) => TeacherConvention::SiT(SiT::new(c.clone())?),
            TeacherInterfaceSpec::Edm(c) => TeacherConvention::Edm(Edm::new(c.clone())?),
            TeacherInterfaceSpec::MeanFlow(c) => TeacherConvention::MeanFlow(MeanFlow::new(c.clone())?),
            TeacherInterfaceSpec::TrigFlow { sigma_d } => TeacherConvention::TrigFlow { sigma_d: *sigma_d },
        };
        Teacher::new(convention, Box::new(net))
    }
}

impl InterfaceSpec {
    /// Builds the interface; sCT / sCD read their log-variance head (`param.logvar.*`,
    /// `buffer.logvar.freqs`) and sCD its teacher from the case, onto `device`.
    pub fn build(&self, case: &Case, device: Device) -> Result<AnyInterface> {
        Ok(match self {
            InterfaceSpec::Sit(c) => SiT::new(c.clone())?.into(),
            InterfaceSpec::Edm(c) => Edm::new(c.clone())?.into(),
            InterfaceSpec::MeanFlow(c) => MeanFlow::new(c.clone())?.into(),
            InterfaceSpec::Sct { cfg, step } => {
                let mut i = Sct::new(cfg.clone(), head(case, device)?)?;
                i.set_step(*step);
                i.into()
            }
            InterfaceSpec::Scd { cfg, step, teacher } => {
                let mut i = Scd::new(cfg.clone(), head(case, device)?, teacher.build(case, device)?)?;
                i.set_step(*step);
                i.into()
            }
        })
    }
}

impl LossSpec {
    /// The case's `nnx.Rngs(**rngs)`.
    pub fn rngs(&self) -> Result<Rngs> {
        let pairs: Vec<(&str, i64)> = self.rngs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        Ok(Rngs::new(&pairs)?)
    }

    /// REPA's projector from `param.projector.*`, for this case's backbone.
    pub fn projector(&self, case: &Case, cfg: &RepaConfig, device: Device) -> Result<Projector> {
        let p = params(case, device, |path| path.starts_with(PROJECTOR_PREFIX))?;
        Projector::from_params(cfg, self.network.feature_width(), p).map_err(in_case(case))
    }
}
