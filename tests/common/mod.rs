//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use diffuse_spec::golden::{self, Row, Status};
use tch::Device;

/// `../shared/golden/v1`, the reference's own golden cases, when present.
pub fn shared_golden() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/v1");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} does not exist here, so the reference's golden cases were not replayed", p.display());
        None
    }
}

/// The project's own fixtures (written by spec/'s exporter).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1")
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
    assert_eq!(summary.passed + summary.failed + summary.not_implemented, n_cases, "every case must be accounted for");
}
