//! The golden harness: read cases (format v1, `docs/format.md`), replay them with the
//! library (`check`, with the `torch` feature), compare another implementation's outputs with
//! them (`verify`, also without libtorch), and report. The library below (`rng`,
//! `networks`, `interfaces`, `samplers`) knows nothing of this module.

mod array;
mod case;
#[cfg(feature = "torch")]
mod check;
mod header;
mod manifest;
mod parse;
#[cfg(feature = "torch")]
pub mod replay;
mod report;
mod tolerance;
mod verify;

pub use crate::npy::MAX_NPY_HEADER_BYTES;
pub use array::{Array, ArrayData, MAX_NPY_BYTES};
pub use case::{discover, parse_case_json, Case, CaseJson, CaseKind, MAX_CASE_JSON_BYTES, ROLES};
#[cfg(feature = "torch")]
pub use check::{check_case, check_case_dumping, check_case_with, draw_array, draw_entry};
pub use header::{feeds, required, tolerance_for, CaseHeader, DrawEntry, DrawOp, InterfaceType, NetworkType, SamplerType};
pub use manifest::{find_manifest, verify_manifest, write_manifest, MANIFEST_NAME};
#[cfg(feature = "torch")]
pub use replay::ReplayOptions;
pub use report::{table, Num, Row, Status, Summary, ToleranceSpec};
pub use tolerance::{compare, compare_scaled, max_abs, ulp_distance, Comparison, Scale, Tolerance};
pub use verify::{orphan_candidates, selected_cases, unmatched_names, verify_case, verify_case_with, verify_roots, Selection, Skip};

/// Parses a device name: `cpu`, `cuda` or `cuda:N`. CUDA is refused with a clear error when
/// libtorch sees no GPU.
#[cfg(feature = "torch")]
pub fn parse_device(s: &str) -> crate::Result<tch::Device> {
    use crate::error::Error;
    let cuda = |i: usize| {
        let n = tch::Cuda::device_count();
        if (i as i64) < n {
            Ok(tch::Device::Cuda(i))
        } else {
            Err(Error::invalid("device", format!("a CUDA device index below {n} (libtorch sees {n} GPU(s))"), s))
        }
    };
    match s {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => cuda(i),
            None => Err(Error::Unknown { what: "device".into(), name: s.into(), known: "cpu, cuda, cuda:N".into() }),
        },
    }
}
