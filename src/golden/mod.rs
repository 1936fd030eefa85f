//! The golden harness: read cases (format v1), replay them with the library,
//! compare with tolerances, and report. The library below (`rng`, `networks`,
//! `interfaces`, `samplers`) knows nothing of this module.

mod array;
mod case;
mod manifest;
mod parse;
pub mod replay;
mod report;
mod tolerance;

use std::path::Path;

pub use array::{Array, ArrayData, MAX_NPY_BYTES};
pub use case::{discover, parse_case_json, Case, CaseJson, CaseKind, MAX_CASE_JSON_BYTES, ROLES};
pub use manifest::{find_manifest, verify_manifest, write_manifest, MANIFEST_NAME};
pub use crate::npy::MAX_NPY_HEADER_BYTES;
pub use replay::ReplayOptions;
pub use report::{table, Row, Status, Summary};
pub use tolerance::{compare, compare_scaled, max_abs, ulp_distance, Comparison, Scale, Tolerance};

use tch::Device;

use crate::error::Error;

fn whole_case_row(case: &str, kind: &str, status: Status, detail: String) -> Row {
    Row { case: case.into(), kind: kind.into(), quantity: "-".into(), worst_ulp: None, worst_rel: None, status, detail }
}

fn dir_name(dir: &Path) -> String {
    dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

/// The case's gradient scale: the largest finite magnitude over all its expected `grad.*`
/// arrays (`None` when it has none). Tolerances with [`Scale::CaseGradients`] (a gradient that
/// is zero in exact arithmetic, such as the DiT's attention key bias) take `atol` against it.
/// It reads the `grad.*` files again rather than keeping every expected array in memory for
/// the whole case (the comparison loops hold one at a time), and only for cases whose
/// tolerances ask for it.
fn case_grad_scale(case: &Case) -> Option<f64> {
    case.stems("grad.").iter().filter_map(|s| case.array(s).ok()).filter_map(|a| max_abs(&a)).reduce(f64::max)
}

/// Compares one quantity; `grad_scale` computes the case's gradient scale when the quantity's
/// tolerance asks for it (once per case).
fn compare_row(case: &Case, stem: &str, actual: &Array, expected: &Array, grad_scale: &mut Option<Option<f64>>) -> Row {
    let tol = replay::tolerance_for(case.kind, &case.meta, stem);
    let scale = match tol.scale {
        Scale::CaseGradients => *grad_scale.get_or_insert_with(|| case_grad_scale(case)),
        Scale::Own => None,
    };
    let c = compare_scaled(actual, expected, tol, scale);
    Row {
        case: case.name.clone(),
        kind: case.kind.to_string(),
        quantity: stem.to_string(),
        worst_ulp: Some(c.worst_ulp),
        worst_rel: Some(c.worst_rel),
        status: if c.passed { Status::Pass } else { Status::Fail },
        detail: match scale {
            Some(s) => format!("{} (tolerance {tol}, case gradient scale {s:.3e})", c.detail()),
            None => format!("{} (tolerance {tol})", c.detail()),
        },
    }
}

/// Replays the case in `dir` on `device` and compares every expected output.
///
/// Rows: one per expected quantity; or one whole-case row when the case is
/// malformed (`ERROR`), its kind is not implemented (`not implemented`), or the
/// replay failed (`ERROR`). A file that nothing read is an `ERROR` row.
pub fn check_case(dir: &Path, device: Device) -> Vec<Row> {
    check_case_with(dir, &ReplayOptions::on(device))
}

/// [`check_case`] with replay options (device, JVP backend override).
pub fn check_case_with(dir: &Path, opts: &ReplayOptions) -> Vec<Row> {
    check_case_dumping(dir, opts, None)
}

/// [`check_case_with`] that also writes every computed output, when `dump` is given, as
/// `dump/<case name>/<stem>.npy` — the candidate layout that `verify` reads, and what the
/// determinism tests compare byte for byte. A failed write is an `ERROR` row.
pub fn check_case_dumping(dir: &Path, opts: &ReplayOptions, dump: Option<&Path>) -> Vec<Row> {
    let case = match Case::open(dir) {
        Ok(c) => c,
        Err(e) => return vec![whole_case_row(&dir_name(dir), "?", Status::Error, e.to_string())],
    };
    let kind = case.kind.to_string();
    let computed = match replay::run(&case, opts) {
        Ok(c) => c,
        Err(Error::NotImplemented(what)) => return vec![whole_case_row(&case.name, &kind, Status::NotImplemented, what)],
        Err(e) => return vec![whole_case_row(&case.name, &kind, Status::Error, e.to_string())],
    };
    let mut rows = Vec::new();
    if let Some(root) = dump {
        if let Err(e) = dump_computed(&root.join(&case.name), &computed) {
            rows.push(whole_case_row(&case.name, &kind, Status::Error, format!("--dump: {e}")));
        }
    }
    let mut grad_scale = None;
    let mut expected_stems = case.stems("out.");
    expected_stems.extend(case.stems("grad."));
    for stem in expected_stems {
        let expected = match case.array(&stem) {
            Ok(a) => a,
            Err(e) => {
                rows.push(Row { quantity: stem.clone(), ..whole_case_row(&case.name, &kind, Status::Error, e.to_string()) });
                continue;
            }
        };
        match computed.get(&stem) {
            Some(actual) => rows.push(compare_row(&case, &stem, actual, &expected, &mut grad_scale)),
            None => rows.push(Row {
                quantity: stem.clone(),
                ..whole_case_row(&case.name, &kind, Status::Fail, "expected output that the replay does not produce".into())
            }),
        }
    }
    for stem in computed.keys() {
        if replay::required(stem) && !case.has(stem) {
            rows.push(Row {
                quantity: stem.clone(),
                ..whole_case_row(&case.name, &kind, Status::Error, "the case lacks this expected output file".into())
            });
        }
    }
    let unread = case.unread();
    if !unread.is_empty() {
        rows.push(whole_case_row(&case.name, &kind, Status::Error, format!("files nobody read: {}", unread.join(", "))));
    }
    if rows.is_empty() {
        rows.push(whole_case_row(&case.name, &kind, Status::Error, "the case has no expected output".into()));
    }
    rows
}

fn dump_computed(dir: &Path, computed: &replay::Computed) -> crate::Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    for (stem, a) in computed {
        a.write_npy(&dir.join(format!("{stem}.npy")))?;
    }
    Ok(())
}

/// Compares another implementation's outputs in `candidate_root/<case name>/` with the
/// golden case in `golden_dir`, quantity by quantity, with the tolerances of `check`.
/// The candidate directory holds the golden case's `out.*` / `grad.*` file names
/// (inputs and a `case.json` copy may be there too and are ignored).
pub fn verify_case(golden_dir: &Path, candidate_root: &Path) -> Vec<Row> {
    let case = match Case::open(golden_dir) {
        Ok(c) => c,
        Err(e) => return vec![whole_case_row(&dir_name(golden_dir), "?", Status::Error, e.to_string())],
    };
    let kind = case.kind.to_string();
    let cand_dir = candidate_root.join(&case.name);
    if !cand_dir.is_dir() {
        return vec![whole_case_row(&case.name, &kind, Status::Fail, format!("no candidate directory {}", cand_dir.display()))];
    }
    let mut rows = Vec::new();
    let mut grad_scale = None;
    let mut expected_stems = case.stems("out.");
    expected_stems.extend(case.stems("grad."));
    for stem in &expected_stems {
        let expected = match case.array(stem) {
            Ok(a) => a,
            Err(e) => {
                rows.push(Row { quantity: stem.clone(), ..whole_case_row(&case.name, &kind, Status::Error, e.to_string()) });
                continue;
            }
        };
        let path = cand_dir.join(format!("{stem}.npy"));
        if !path.exists() {
            rows.push(Row { quantity: stem.clone(), ..whole_case_row(&case.name, &kind, Status::Fail, format!("candidate lacks {}", path.display())) });
            continue;
        }
        match Array::read_npy(&path) {
            Ok(actual) => rows.push(compare_row(&case, stem, &actual, &expected, &mut grad_scale)),
            Err(e) => rows.push(Row { quantity: stem.clone(), ..whole_case_row(&case.name, &kind, Status::Error, format!("candidate: {e}")) }),
        }
    }
    if let Ok(entries) = std::fs::read_dir(&cand_dir) {
        for entry in entries.flatten() {
            let f = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = f.strip_suffix(".npy") else { continue };
            if (stem.starts_with("out.") || stem.starts_with("grad.")) && !expected_stems.iter().any(|s| s == stem) {
                rows.push(Row { quantity: stem.into(), ..whole_case_row(&case.name, &kind, Status::Error, "candidate output with no golden counterpart".into()) });
            }
        }
    }
    rows
}

/// Parses a device name: `cpu`, `cuda` or `cuda:N`. CUDA is refused with a clear error when
/// libtorch sees no GPU.
pub fn parse_device(s: &str) -> crate::Result<Device> {
    let cuda = |i: usize| {
        let n = tch::Cuda::device_count();
        if (i as i64) < n {
            Ok(Device::Cuda(i))
        } else {
            Err(Error::invalid("device", format!("a CUDA device index below {n} (libtorch sees {n} GPU(s))"), s))
        }
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => cuda(i),
            None => Err(Error::Unknown { what: "device".into(), name: s.into(), known: "cpu, cuda, cuda:N".into() }),
        },
    }
}
