//! The conformance summary as an insta snapshot: one line per (case, quantity) — the
//! gradients of a case folded into one `grad.*` line — with the status and the worst-ulp
//! bucket. When a change moves the numerics, `cargo insta review` shows which quantities
//! moved and by how much (README, "Reviewing a numeric drift"); a quantity that fails shows
//! up as such, and the test then fails.
//!
//! Buckets are powers of 16 (`0`, `<=4`, `<=16`, `<=256`, `<=4096`, `>4096` ulp, `-` where no
//! ulp distance applies), coarse enough that the rounding noise of one machine does not
//! flip them, fine enough that a real change does. Replays run on one thread, so the
//! summary does not depend on libtorch's thread count.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use diffuse_spec::golden::{self, Row, Status};

fn bucket(u: Option<u64>) -> &'static str {
    match u {
        None => "-",
        Some(0) => "0",
        Some(1..=4) => "<=4",
        Some(5..=16) => "<=16",
        Some(17..=256) => "<=256",
        Some(257..=4096) => "<=4096",
        Some(_) => ">4096",
    }
}

fn summary(root: &Path) -> (String, Vec<Row>) {
    tch::set_num_threads(1);
    let (rows, _) = common::check_all(root);
    let mut lines: BTreeMap<(String, String), (Status, Option<u64>)> = BTreeMap::new();
    for r in &rows {
        let q = if r.quantity.starts_with("grad.") { "grad.*".to_string() } else { r.quantity.clone() };
        let e = lines.entry((r.case.clone(), q)).or_insert((Status::Pass, Some(0)));
        if r.status != Status::Pass {
            e.0 = r.status;
        }
        e.1 = match (e.1, r.worst_ulp) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    let width = lines.keys().map(|(c, _)| c.len()).max().unwrap_or(0);
    let qwidth = lines.keys().map(|(_, q)| q.len()).max().unwrap_or(0);
    let mut text = String::new();
    for ((case, q), (st, u)) in lines {
        text.push_str(&format!("{case:<width$}  {q:<qwidth$}  {:<6}  {}\n", st.as_str(), bucket(u)));
    }
    text.push_str(&golden::Summary::of(&rows).line());
    text.push('\n');
    (text, rows)
}

#[test]
fn conformance_summary_of_the_fixtures() {
    let (text, rows) = summary(&common::fixtures());
    assert!(rows.iter().all(|r| r.status == Status::Pass), "{}", golden::table(&rows.into_iter().filter(|r| r.status != Status::Pass).collect::<Vec<_>>()));
    insta::assert_snapshot!("fixtures", text);
}

#[test]
fn conformance_summary_of_the_shared_golden_cases() {
    let Some(root) = common::shared_golden() else { return };
    let (text, rows) = summary(&root);
    assert!(rows.iter().all(|r| r.status == Status::Pass), "{}", golden::table(&rows.into_iter().filter(|r| r.status != Status::Pass).collect::<Vec<_>>()));
    insta::assert_snapshot!("shared_v1", text);
}
