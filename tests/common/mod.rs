//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use diffuse_spec::golden::{self, Row, Status};
use tch::Device;

/// The checkout the tests read: `DIFFUSE_SPEC_ROOT` when set (test binaries built here and
/// run in a copy of the tree elsewhere, e.g. the GPU kit of `make gpu-kit`), else the crate's
/// directory at build time.
pub fn root() -> PathBuf {
    match std::env::var_os("DIFFUSE_SPEC_ROOT") {
        Some(r) => PathBuf::from(r),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// `../shared/golden/v1`, the reference's own golden cases, when present.
pub fn shared_golden() -> Option<PathBuf> {
    let p = root().join("../shared/golden/v1");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} does not exist here, so the reference's golden cases were not replayed", p.display());
        None
    }
}

/// `../shared/golden/<set>` (e.g. `lightning`), when present.
pub fn shared_set(set: &str) -> Option<PathBuf> {
    let p = root().join("../shared/golden").join(set);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} does not exist here, so the reference's `{set}` cases were not replayed", p.display());
        None
    }
}

/// The project's own fixtures (written by spec/'s exporter).
pub fn fixtures() -> PathBuf {
    root().join("fixtures/v1")
}

/// Replays every case under `root` on the CPU and returns the rows with the number of cases.
pub fn check_all(root: &Path) -> (Vec<Row>, usize) {
    let cases = golden::discover(root).expect("discover cases");
    let rows: Vec<Row> = cases.iter().flat_map(|c| golden::check_case(c, Device::Cpu)).collect();
    (rows, cases.len())
}

/// Asserts the outcome of a replay: no failure or error anywhere, every case accounted for,
/// and "not implemented" only for the cases that `may_be_unimplemented` allows.
pub fn assert_conformance(rows: &[Row], n_cases: usize, may_be_unimplemented: impl Fn(&Row) -> bool) {
    print!("{}", golden::table(rows));
    let summary = golden::Summary::of(rows);
    println!("{}", summary.line());
    let bad: Vec<&Row> = rows.iter().filter(|r| matches!(r.status, Status::Fail | Status::Error)).collect();
    assert!(bad.is_empty(), "failures:\n{}", golden::table(&bad.into_iter().cloned().collect::<Vec<_>>()));
    let unexpected: Vec<&Row> = rows.iter().filter(|r| r.status == Status::NotImplemented && !may_be_unimplemented(r)).collect();
    assert!(unexpected.is_empty(), "cases that should be implemented but are not: {:?}", unexpected.iter().map(|r| &r.case).collect::<Vec<_>>());
    assert_eq!(summary.skipped, 0, "check skips nothing");
    assert_eq!(summary.passed + summary.failed + summary.not_implemented, n_cases, "every case must be accounted for");
}

/// A prerequisite that `make test` provides (the spec environment, the libtorch-free
/// binary) is missing: under `make test` (which sets `DIFFUSE_SPEC_STRICT=1`) that is a
/// failure, so CI cannot pass by skipping; under a plain `cargo test` the test is skipped
/// with this message.
pub fn missing(what: &str) {
    if std::env::var_os("DIFFUSE_SPEC_STRICT").is_some() {
        panic!("{what} is missing, and DIFFUSE_SPEC_STRICT says this run must have it (make test provides it)");
    }
    eprintln!("SKIPPED: {what} is missing; `make test` provides it");
}

/// The spec environment's python (jax 0.5.1, jsonschema), when present.
pub fn spec_python() -> Option<PathBuf> {
    let p = std::env::var_os("DIFFUSE_SPEC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/diffuse-spec/jax-0.5.1/bin/python"));
    if p.exists() {
        Some(p)
    } else {
        missing(&format!("the spec environment ({})", p.display()));
        None
    }
}

/// The `diffuse-spec` built without the `torch` feature (`DIFFUSE_SPEC_NOTORCH_BIN`, which
/// `make test` builds), when present.
pub fn notorch_bin() -> Option<PathBuf> {
    match std::env::var_os("DIFFUSE_SPEC_NOTORCH_BIN").map(PathBuf::from) {
        Some(p) if p.exists() => Some(p),
        other => {
            missing(&format!("the libtorch-free diffuse-spec ({})", other.map(|p| p.display().to_string()).unwrap_or_else(|| "DIFFUSE_SPEC_NOTORCH_BIN unset".into())));
            None
        }
    }
}

/// Every parameter of `shapes` random and non-zero (the reference's own init zeroes the gates
/// and the final layer, which would hide most of a network from a derivative check), drawn
/// from a stream of its own (torch's global generator is shared by tests running in
/// parallel): norm weights `1 + 0.1 z`, biases `0.05 z`, tables `0.5 z`, the Gaussian basis
/// `z`, kernels `z / sqrt(fan_in)`.
pub fn random_params(shapes: Vec<(String, Vec<i64>)>, seed: i64) -> std::collections::BTreeMap<String, tch::Tensor> {
    let mut rngs = diffuse_spec::rng::Rngs::new(&[("params", seed)]).unwrap();
    let mut params = std::collections::BTreeMap::new();
    for (name, shape) in shapes {
        let z = rngs.normal("params", &shape, Device::Cpu).unwrap();
        let t = if name.ends_with("rms_weight") || name.ends_with("norm.scale") {
            z * 0.1 + 1.0
        } else if name.ends_with(".bias") {
            z * 0.05
        } else if name.ends_with("embedding") {
            z * 0.5
        } else if name.ends_with("gaussian_basis") {
            z
        } else {
            let fan_in: i64 = shape[..shape.len() - 1].iter().product();
            z / (fan_in as f64).sqrt()
        };
        params.insert(name, t);
    }
    params
}
