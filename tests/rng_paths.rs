//! The rng golden cases (the project's `fixtures/v1/rng_*` and, when present, the
//! reference's own `rng_*` cases) replayed with every host path forced in turn
//! (`set_host_path`): each instruction set gives the reference's bits. One test function, so
//! that the process-wide setting is not changed under another test's feet.

mod common;

use diffuse_spec::golden::{self, Row};
use diffuse_spec::rng::{host_path, set_host_path, HostPath};
use tch::Device;

fn rng_cases(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let cases = golden::discover(root).expect("discover cases");
    cases.into_iter().filter(|c| c.file_name().is_some_and(|n| n.to_string_lossy().starts_with("rng_"))).collect()
}

#[test]
fn rng_cases_replay_on_every_host_path() {
    let mut roots = vec![common::fixtures()];
    roots.extend(common::shared_golden());
    for path in HostPath::ALL {
        if !path.is_available() {
            eprintln!("NOT RUN on this CPU: host path {path:?}");
            assert!(set_host_path(path).is_err(), "forcing a missing path must be refused");
            continue;
        }
        set_host_path(path).unwrap();
        assert_eq!(host_path(), path);
        for root in &roots {
            let cases = rng_cases(root);
            assert!(!cases.is_empty(), "{} holds rng cases", root.display());
            let rows: Vec<Row> = cases.iter().flat_map(|c| golden::check_case(c, Device::Cpu)).collect();
            println!("host path {path:?}, {}:", root.display());
            common::assert_conformance(&rows, cases.len(), |_| false);
        }
    }
    set_host_path(HostPath::Auto).unwrap();
}
