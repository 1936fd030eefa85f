//! Replays `../shared/golden/v1` (computed by the reference itself) and asserts that
//! nothing fails, every case is accounted for, and only the areas not built yet say
//! "not implemented". Skipped, with a message, where that folder does not exist.

mod common;

/// Cases whose math is not in the crate yet (each later issue shrinks this list).
const NOT_YET: &[&str] = &["meanflow_", "pred_mean_flow", "eulerjump_", "dit_forward", "sit_dit_", "repa_"];

#[test]
fn shared_golden_cases_replay_without_failure() {
    let Some(root) = common::shared_golden() else { return };
    let (rows, n) = common::check_all(&root);
    assert_eq!(n, 38, "golden/v1 holds 38 cases");
    common::assert_conformance(&rows, n, |r| NOT_YET.iter().any(|p| r.case.starts_with(p)));
}
