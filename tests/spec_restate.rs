//! The JAX restatement in `spec/` against the reference itself, and the exporter's
//! reproducibility. Skipped, with a message, where the spec environment (jax 0.5.1) or
//! `../shared/golden/v1` is absent; `make fixtures` / `make spec-env` creates the former.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use diffuse_spec::golden::{self, Status};

fn spec_python() -> Option<PathBuf> {
    let p = std::env::var_os("DIFFUSE_SPEC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/diffuse-spec/jax-0.5.1/bin/python"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: the spec environment ({}) is absent; run `make spec-env`", p.display());
        None
    }
}

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec")
}

/// The restatement recomputes the reference's rng and coefficient cases bit for bit.
#[test]
fn restatement_reproduces_the_reference_rng_and_coefficient_cases_exactly() {
    let (Some(py), Some(root)) = (spec_python(), common::shared_golden()) else { return };
    let out = tempfile::tempdir().unwrap();
    for only in ["rng_", "coef_"] {
        let st = Command::new(&py)
            .current_dir(spec_dir())
            .args(["-m", "diffuse_spec_ref.restate", "--golden"])
            .arg(&root)
            .arg("--out")
            .arg(out.path())
            .args(["--only", only])
            .status()
            .unwrap();
        assert!(st.success(), "restate --only {only} failed");
    }
    let cases: Vec<_> = golden::discover(&root).unwrap().into_iter().filter(|c| {
        let n = c.file_name().unwrap().to_string_lossy().into_owned();
        n.starts_with("rng_") || n.starts_with("coef_")
    }).collect();
    assert_eq!(cases.len(), 5);
    let rows: Vec<_> = cases.iter().flat_map(|c| golden::verify_case(c, out.path())).collect();
    print!("{}", golden::table(&rows));
    assert!(rows.iter().all(|r| r.status == Status::Pass && r.worst_ulp == Some(0)), "not bit-exact");
}

/// Re-exporting the rng fixtures (the exporter's `rng_cases` area, written by its own
/// `write_case`) gives byte-identical files.
#[test]
fn exporter_is_byte_reproducible_for_the_rng_fixtures() {
    let Some(py) = spec_python() else { return };
    let out = tempfile::tempdir().unwrap();
    let st = Command::new(&py)
        .current_dir(spec_dir())
        .args([
            "-c",
            "import sys, pathlib; from diffuse_spec_ref import rng_cases, case\n\
             [case.write_case(pathlib.Path(sys.argv[1]), c) for c in rng_cases.fixture_cases()]",
        ])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(st.success());
    let fixtures = common::fixtures();
    let mut compared = 0;
    for case in golden::discover(out.path()).unwrap() {
        let name = case.file_name().unwrap().to_owned();
        for entry in std::fs::read_dir(&case).unwrap() {
            let entry = entry.unwrap();
            let committed = fixtures.join(&name).join(entry.file_name());
            assert_eq!(std::fs::read(entry.path()).unwrap(), std::fs::read(&committed).unwrap(), "{} differs", committed.display());
            compared += 1;
        }
    }
    assert!(compared > 10, "compared only {compared} files");
}
