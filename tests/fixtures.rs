//! Replays the project's own fixtures (`fixtures/v1`, written by the exporter in `spec/`).

mod common;

/// Fixture areas whose math is not in the crate yet.
const NOT_YET: &[&str] = &[];

#[test]
fn project_fixtures_replay_without_failure() {
    let root = common::fixtures();
    assert!(root.is_dir(), "fixtures/v1 is part of the repository");
    let (rows, n) = common::check_all(&root);
    assert!(n >= 10, "fixtures/v1 should hold the exporter's cases, found {n}");
    common::assert_conformance(&rows, n, |r| NOT_YET.iter().any(|p| r.case.contains(p)));
}
