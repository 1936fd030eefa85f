//! The typed view of a `case.json` that needs no libtorch: which interface, network and
//! sampler a case names, whether it wraps REPA, and the raw random draws it records.
//!
//! Both `check` (which replays) and `verify` (which only compares, and builds without
//! libtorch) choose each quantity's tolerance from this header ([`tolerance_for`]), so the
//! two judge a quantity the same way. The settings themselves are parsed once, into the
//! library's config structs, by the replay (`replay::spec`, with the `torch` feature).
//!
//! The format is documented for port authors in `docs/format.md`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::case::CaseKind;
pub use crate::kinds::{InterfaceType, NetworkType, SamplerType};
use super::tolerance::Tolerance;
use crate::error::{Error, Result};

/// The operation of a recorded draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrawOp {
    /// `jax.random.uniform`: the file holds the float32 draw in `[0, 1)`, before any
    /// scaling to `[minval, maxval)`.
    Uniform,
    /// `jax.random.normal`: the file holds the float32 standard normal, before any
    /// `* sigma + mu`.
    Normal,
    /// `jax.random.bits`: the file holds the uint32 bits.
    Bits,
}

impl DrawOp {
    /// The dtype of the draw's file.
    pub fn dtype(self) -> &'static str {
        match self {
            DrawOp::Uniform | DrawOp::Normal => "<f4",
            DrawOp::Bits => "<u4",
        }
    }

    /// The name written in `case.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            DrawOp::Uniform => "uniform",
            DrawOp::Normal => "normal",
            DrawOp::Bits => "bits",
        }
    }
}

/// One entry of a case's `draws` list: a raw random draw that the computation consumed,
/// stored as `<file>.npy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrawEntry {
    /// The file stem, `draw.<stream>.<counter>`.
    pub file: String,
    /// The stream that produced it (after nnx's fallback to `default` for an unknown name).
    pub stream: String,
    /// The stream's counter at the draw (the draw is `op(fold_in(key(seed), counter), shape)`).
    pub counter: u32,
    /// The operation.
    pub op: DrawOp,
    /// The shape drawn.
    pub shape: Vec<usize>,
    /// What the draw feeds (`t`, `r`, `n`, `cond_drop`, `label_dropout`, `step.<i>`, ...).
    pub feeds: String,
    /// For a uniform draw that the computation scaled to `[minval, maxval)`: the bounds
    /// (the file still holds the `[0, 1)` draw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minval: Option<f32>,
    /// See `minval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxval: Option<f32>,
}

impl DrawEntry {
    /// The file stem a draw of `stream` at `counter` is stored under.
    pub fn stem(stream: &str, counter: u32) -> String {
        format!("draw.{stream}.{counter}")
    }
}

/// What `check` and `verify` need to know of a case without building anything.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseHeader {
    /// The case's name.
    pub name: String,
    /// The kind.
    pub kind: CaseKind,
    /// `interface.type`, where the case has an interface.
    pub interface: Option<InterfaceType>,
    /// `network.type`, where the case has a network.
    pub network: Option<NetworkType>,
    /// `sampler.type`, for sampler cases.
    pub sampler: Option<SamplerType>,
    /// Whether the interface is wrapped by REPA (a `repa` block).
    pub repa: bool,
    /// The recorded draws (`draws`), in drawing order; `None` when the case lists none.
    pub draws: Option<Vec<DrawEntry>>,
}

fn block_type<'a>(name: &str, meta: &'a Map<String, Value>, block: &str) -> Result<Option<&'a str>> {
    match meta.get(block) {
        None => Ok(None),
        Some(Value::Object(o)) => match o.get("type") {
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            _ => Err(Error::case(name, Some("case.json"), format!("`{block}.type` missing or not a string"))),
        },
        Some(_) => Err(Error::case(name, Some("case.json"), format!("`{block}` is not an object"))),
    }
}

impl CaseHeader {
    /// Reads the header of a parsed `case.json`: the block types must be known, and a
    /// `draws` list must name each file once, as `draw.<stream>.<counter>`.
    pub fn from_meta(name: &str, kind: CaseKind, meta: &Map<String, Value>) -> Result<CaseHeader> {
        let wrap = |e: Error| match e {
            Error::Case { .. } => e,
            other => Error::case(name, Some("case.json"), other.to_string()),
        };
        let interface = block_type(name, meta, "interface")?.map(InterfaceType::parse).transpose().map_err(wrap)?;
        let network = block_type(name, meta, "network")?.map(NetworkType::parse).transpose().map_err(wrap)?;
        let sampler = block_type(name, meta, "sampler")?.map(SamplerType::parse).transpose().map_err(wrap)?;
        let draws = match meta.get("draws") {
            None => None,
            Some(v) => {
                let list: Vec<DrawEntry> =
                    serde_json::from_value(v.clone()).map_err(|e| Error::case(name, Some("case.json"), format!("`draws`: {e}")))?;
                let mut seen = BTreeSet::new();
                for (i, d) in list.iter().enumerate() {
                    let want = DrawEntry::stem(&d.stream, d.counter);
                    if d.file != want {
                        return Err(Error::case(name, Some("case.json"), format!("`draws[{i}].file` is `{}` where `{want}` is expected", d.file)));
                    }
                    if !seen.insert(d.file.clone()) {
                        return Err(Error::case(name, Some("case.json"), format!("`draws[{i}]`: {} listed twice", d.file)));
                    }
                    if (d.minval.is_some() || d.maxval.is_some()) && d.op != DrawOp::Uniform {
                        return Err(Error::case(name, Some("case.json"), format!("`draws[{i}]`: minval / maxval belong to uniform draws only")));
                    }
                }
                Some(list)
            }
        };
        Ok(CaseHeader { name: name.to_string(), kind, interface, network, sampler, repa: meta.contains_key("repa"), draws })
    }

    fn jvp_based(&self) -> bool {
        self.interface.is_some_and(InterfaceType::jvp_based)
    }
}

/// What each draw of a computation feeds, by position (the labels of a case's `draws`).
///
/// A `loss` / `grad` case's interface draws first, in a fixed order — SiT, EDM, sCT, sCD:
/// `t`, `n`; MeanFlow: `t`, `r` (its two time draws, before `t, r = max, min` and the
/// `fm_portion` prefix), `n`, `cond_drop` — and every later draw is the network's label
/// dropout (`label_dropout`). A `sampler` case's draws are the noise of each step that takes
/// one (`step.<i>` for the `i`-th draw: Euler-Maruyama draws once per step but the last).
/// Other kinds draw nothing (`rng` cases are the streams themselves).
pub fn feeds(header: &CaseHeader, n_draws: usize) -> Vec<String> {
    match header.kind {
        CaseKind::Sampler => (0..n_draws).map(|i| format!("step.{i}")).collect(),
        CaseKind::Loss | CaseKind::Grad => {
            let own: &[&str] = match header.interface {
                Some(InterfaceType::MeanFlow) => &["t", "r", "n", "cond_drop"],
                _ => &["t", "n"],
            };
            (0..n_draws).map(|i| own.get(i).copied().unwrap_or("label_dropout").to_string()).collect()
        }
        _ => (0..n_draws).map(|i| format!("draw.{i}")).collect(),
    }
}

/// Whether a computed output must have an expected file in the case: every output except
/// the loss intermediates (`out.t`, `out.r`, `out.n`, `out.x_t`, `out.target`,
/// `out.net_out`), which cases on a transformer (and REPA cases) leave out.
pub fn required(stem: &str) -> bool {
    !matches!(stem, "out.t" | "out.r" | "out.n" | "out.x_t" | "out.target" | "out.net_out")
}

/// Whether `stem` is a gradient that is zero in exact arithmetic: the attention key bias
/// (`grad.blocks.<i>.attn.key.bias`), since `softmax(q (k + b)^T) = softmax(q k^T + q b^T)`
/// and `q b^T` is constant along the softmax axis.
fn is_zero_gradient(stem: &str) -> bool {
    stem.starts_with("grad.") && stem.ends_with(".attn.key.bias")
}

/// The tolerance for quantity `stem` of a case, shared by `check` and `verify`
/// (docs/format.md carries this table for port authors).
///
/// | kind | quantity | tolerance | why |
/// |---|---|---|---|
/// | any | `draw.*` | exact | a raw draw is reproduced bit for bit |
/// | rng | all | exact | the streams are reproduced bit for bit |
/// | coefficients | all | 4 ulp (element-wise) | one to three roundings per element |
/// | loss, grad | `out.t`, `out.r`, `out.n`, `out.x_t` | 4 ulp of element or scale | element-wise; XLA may fuse an FMA |
/// | loss, grad | others (`loss`, `target`, `net_out`, `grad.*`, REPA parts) | rtol 1e-5, atol 1e-6 x scale | sums over the network |
/// | loss, grad (MeanFlow, sCT, sCD) | `target`, `net_out`, `loss`, `grad.*` | rtol 1e-4, atol 1e-5 x scale | JVP-based |
/// | loss, grad | `grad.*attn.key.bias` | as the other gradients, atol x the *case's* gradient scale | zero in exact arithmetic (softmax ignores a shift common to all keys): only rounding noise, judged against the largest gradient of the case, not its own |
/// | pred | `pred`, `score` | rtol 1e-5, atol 1e-6 x scale (MeanFlow 1e-4 / 1e-5) | one network forward |
/// | sampler | `timegrid` | 4 ulp | element-wise |
/// | sampler | `x_final` | rtol 1e-5, atol 1e-6 x scale (MeanFlow 1e-4 / 1e-5) | integrates many forwards |
/// | network | all | rtol 1e-5, atol 1e-6 x scale | sums over the network |
/// | encoder | `pixels` | 16 ulp of element or scale | a 4-tap resize per axis, reproduced bit for bit at 256 and within 2 ulp at 512 / 768 (measured); XLA's codegen (FMA or not, blocked sums) spans 14 ulp of scale, any other resize is 1e-4 (float64 positions) or 1e-3 to 1e-1 of scale (torch's) away |
/// | encoder | `features` | rtol 1e-5, atol 4e-6 x scale | a ViT of 1-4 layers: measured up to 7.6e-7 x scale, 4e-6 leaves room for other BLAS blockings; torch's pipeline is 5e-2 x scale away |
pub fn tolerance_for(header: &CaseHeader, stem: &str) -> Tolerance {
    let meanflow = header.interface == Some(InterfaceType::MeanFlow);
    if stem.starts_with("draw.") {
        return Tolerance::EXACT;
    }
    match header.kind {
        CaseKind::Rng => Tolerance::EXACT,
        CaseKind::Coefficients => Tolerance::elementwise(4),
        CaseKind::Loss | CaseKind::Grad => match stem {
            "out.t" | "out.r" | "out.n" | "out.x_t" => Tolerance::elementwise(4),
            _ if is_zero_gradient(stem) && header.jvp_based() => Tolerance::close(1e-4, 1e-5).against_case_gradients(),
            _ if is_zero_gradient(stem) => Tolerance::close(1e-5, 1e-6).against_case_gradients(),
            _ if header.jvp_based() => Tolerance::close(1e-4, 1e-5),
            _ => Tolerance::close(1e-5, 1e-6),
        },
        CaseKind::Pred if meanflow => Tolerance::close(1e-4, 1e-5),
        CaseKind::Pred => Tolerance::close(1e-5, 1e-6),
        CaseKind::Sampler => match stem {
            "out.timegrid" => Tolerance::elementwise(4),
            _ if meanflow => Tolerance::close(1e-4, 1e-5),
            _ => Tolerance::close(1e-5, 1e-6),
        },
        CaseKind::Network => Tolerance::close(1e-5, 1e-6),
        CaseKind::Encoder => match stem {
            "out.pixels" => Tolerance::elementwise(16),
            _ => Tolerance::close(1e-5, 4e-6),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(o) => o,
            _ => unreachable!(),
        }
    }

    #[test]
    fn block_types_are_typed_and_unknown_ones_named() {
        let h = CaseHeader::from_meta("c", CaseKind::Loss, &meta(r#"{"interface": {"type": "mean_flow"}, "network": {"type": "dit"}}"#)).unwrap();
        assert_eq!((h.interface, h.network, h.sampler, h.repa), (Some(InterfaceType::MeanFlow), Some(NetworkType::Dit), None, false));
        let e = CaseHeader::from_meta("c", CaseKind::Loss, &meta(r#"{"interface": {"type": "sitt"}}"#)).unwrap_err().to_string();
        assert!(e.contains("unknown interface `sitt`") && e.contains("mean_flow"), "{e}");
        let e = CaseHeader::from_meta("c", CaseKind::Loss, &meta(r#"{"network": []}"#)).unwrap_err().to_string();
        assert!(e.contains("`network` is not an object"), "{e}");
    }

    #[test]
    fn draws_must_name_their_files_once_and_consistently() {
        let ok = r#"{"draws": [{"file": "draw.time.0", "stream": "time", "counter": 0, "op": "uniform", "shape": [4], "feeds": "t"}]}"#;
        let h = CaseHeader::from_meta("c", CaseKind::Loss, &meta(ok)).unwrap();
        assert_eq!(h.draws.unwrap()[0].op, DrawOp::Uniform);
        for (json, needle) in [
            (r#"{"draws": [{"file": "draw.time.1", "stream": "time", "counter": 0, "op": "uniform", "shape": [4], "feeds": "t"}]}"#, "where `draw.time.0`"),
            (r#"{"draws": [{"file": "draw.time.0", "stream": "time", "counter": 0, "op": "uniform", "shape": [4], "feeds": "t"}, {"file": "draw.time.0", "stream": "time", "counter": 0, "op": "uniform", "shape": [4], "feeds": "t"}]}"#, "listed twice"),
            (r#"{"draws": [{"file": "draw.time.0", "stream": "time", "counter": 0, "op": "gauss", "shape": [4], "feeds": "t"}]}"#, "unknown variant"),
            (r#"{"draws": [{"file": "draw.time.0", "stream": "time", "counter": 0, "op": "uniform", "shape": [4], "feeds": "t", "x": 1}]}"#, "unknown field"),
            (r#"{"draws": [{"file": "draw.time.0", "stream": "time", "counter": 0, "op": "normal", "shape": [4], "feeds": "t", "minval": 1}]}"#, "uniform draws only"),
        ] {
            let e = CaseHeader::from_meta("c", CaseKind::Loss, &meta(json)).unwrap_err().to_string();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn tolerances_follow_the_typed_header() {
        let h = |kind, json: &str| CaseHeader::from_meta("c", kind, &meta(json)).unwrap();
        let sit = h(CaseKind::Grad, r#"{"interface": {"type": "sit"}, "network": {"type": "dit"}}"#);
        let mf = h(CaseKind::Grad, r#"{"interface": {"type": "mean_flow"}, "network": {"type": "probe_mlp"}}"#);
        assert_eq!(tolerance_for(&sit, "out.loss"), Tolerance::close(1e-5, 1e-6));
        assert_eq!(tolerance_for(&mf, "out.loss"), Tolerance::close(1e-4, 1e-5));
        assert_eq!(tolerance_for(&sit, "out.t"), Tolerance::elementwise(4));
        assert_eq!(tolerance_for(&sit, "draw.time.0"), Tolerance::EXACT);
        assert_eq!(tolerance_for(&sit, "grad.blocks.0.attn.key.bias"), Tolerance::close(1e-5, 1e-6).against_case_gradients());
        assert!(!required("out.t") && required("out.loss") && tolerance_for(&mf, "out.t") == Tolerance::elementwise(4));
    }
}
