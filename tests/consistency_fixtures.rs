//! Replays the sCT / sCD fixtures (`fixtures/v1/sct_*`, `scd_*`, written by
//! `spec/diffuse_spec_ref/consistency_cases.py`) with every JVP backend, and prints the worst
//! error per quantity. These cases are the crate's own specification: the reference leaves
//! sCT / sCD empty.

mod common;

use std::collections::BTreeMap;

use diffuse_spec::golden::{self, ReplayOptions, Status};
use diffuse_spec::jvp::JvpBackend;
use tch::Device;

#[test]
fn consistency_fixtures_replay_with_every_jvp_backend() {
    let root = common::fixtures();
    let cases: Vec<_> = golden::discover(&root)
        .expect("discover fixtures")
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("sct_") || n.to_string_lossy().starts_with("scd_")))
        .collect();
    assert!(cases.len() >= 13, "expected the 13 sct_/scd_ fixtures, found {}", cases.len());
    for jvp in [JvpBackend::Fused, JvpBackend::DoubleBackward, JvpBackend::ForwardAd] {
        let opts = ReplayOptions { device: Device::Cpu, jvp: Some(jvp) };
        let rows: Vec<_> = cases.iter().flat_map(|c| golden::check_case_with(c, &opts)).collect();
        let bad: Vec<_> = rows.iter().filter(|r| r.status != Status::Pass).cloned().collect();
        assert!(bad.is_empty(), "{jvp:?}:\n{}", golden::table(&bad));
        let mut worst: BTreeMap<(String, String), (u64, f64)> = BTreeMap::new();
        for r in &rows {
            let q = if r.quantity.starts_with("grad.") { "grad.*".to_string() } else { r.quantity.clone() };
            let fam = if r.case.starts_with("sct_") { "sct" } else { "scd" };
            let e = worst.entry((fam.into(), q)).or_insert((0, 0.0));
            e.0 = e.0.max(r.worst_ulp.unwrap_or(0));
            e.1 = e.1.max(r.worst_rel.map_or(0.0, |n| n.0));
        }
        println!("{jvp:?}: {} cases, {} rows, all pass; worst per quantity (ulp, elementwise rel):", cases.len(), rows.len());
        for ((fam, q), (u, rel)) in worst {
            println!("  {fam} {q:12} {u:6} {rel:.2e}");
        }
    }
}
