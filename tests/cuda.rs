//! The golden suites on CUDA, when libtorch sees a GPU (skipped with a message otherwise).
//! Random streams are drawn on the host and copied, so they are bit-identical on every
//! device; everything else is held to the same per-quantity tolerances as on the CPU.

mod common;

use diffuse_spec::golden::{self, ReplayOptions};
use tch::Device;

fn cuda() -> Option<Device> {
    if tch::Cuda::is_available() {
        Some(Device::Cuda(0))
    } else {
        eprintln!("SKIPPED: libtorch sees no CUDA device here, so the CUDA replay did not run");
        None
    }
}

fn replay_on(root: &std::path::Path, device: Device) {
    let cases = golden::discover(root).unwrap();
    let rows: Vec<_> = cases.iter().flat_map(|c| golden::check_case_with(c, &ReplayOptions::on(device))).collect();
    common::assert_conformance(&rows, cases.len(), |_| false);
}

#[test]
fn shared_golden_cases_on_cuda() {
    let (Some(device), Some(root)) = (cuda(), common::shared_golden()) else { return };
    replay_on(&root, device);
}

#[test]
fn project_fixtures_on_cuda() {
    let Some(device) = cuda() else { return };
    replay_on(&common::fixtures(), device);
}
