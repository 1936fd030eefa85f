//! The port author's loop, closed on the crate itself: `check --dump` writes what the replay
//! computed and drew in the candidate layout, and `verify` accepts it, for every fixture and
//! every case of `../shared/golden` (skipped, with a message, where that folder is absent).
//! A dump that wrote a stem the golden case lacks, or missed one it has, fails here.

mod common;

/// The sets of `../shared/golden` whose kinds and networks the crate replays.
const SHARED_SETS: &[&str] = &["v1", "lightning", "dino"];

use std::path::Path;

use diffuse_spec::golden::{self, ReplayOptions, Status};
use tch::Device;

fn round_trip(root: &Path) -> usize {
    let dump = tempfile::tempdir().unwrap();
    let cases = golden::discover(root).unwrap();
    let opts = ReplayOptions::on(Device::Cpu);
    let mut bad = Vec::new();
    for c in &cases {
        let checked = golden::check_case_dumping(c, &opts, Some(dump.path()));
        bad.extend(checked.into_iter().filter(|r| r.status != Status::Pass));
        let verified = golden::verify_case(c, dump.path());
        assert!(!verified.is_empty());
        bad.extend(verified.into_iter().filter(|r| r.status != Status::Pass));
    }
    assert!(bad.is_empty(), "{}", golden::table(&bad));
    // Every dumped draw is listed in the dump's draws.json, and a case that records draws
    // got exactly those back.
    for c in &cases {
        let case = golden::Case::open(c).unwrap();
        let listed = dump.path().join(&case.name).join("draws.json");
        match &case.header.draws {
            Some(d) => {
                let back: Vec<golden::DrawEntry> = serde_json::from_str(&std::fs::read_to_string(&listed).unwrap()).unwrap();
                assert_eq!(&back, d, "{}: the dumped listing differs from the case's", case.name);
            }
            None if listed.exists() => {
                let back: Vec<golden::DrawEntry> = serde_json::from_str(&std::fs::read_to_string(&listed).unwrap()).unwrap();
                assert!(!back.is_empty());
            }
            None => {}
        }
    }
    cases.len()
}

#[test]
fn every_fixture_survives_dump_then_verify() {
    let n = round_trip(&common::fixtures());
    assert!(n >= 77, "fixtures/v1 holds {n} cases");
}

#[test]
fn every_shared_golden_case_survives_dump_then_verify() {
    let Some(v1) = common::shared_golden() else { return };
    let mut n = 0;
    for set in SHARED_SETS {
        n += round_trip(&v1.parent().unwrap().join(set));
    }
    assert!(n >= 38 + 7 + 4, "../shared/golden holds {n} cases the crate replays");
}
