//! The JAX restatement in `spec/` against the reference itself, and the exporter's
//! reproducibility. `make test` installs the spec environment (jax 0.5.1), so under it these
//! run (a missing environment fails there); a plain `cargo test` without it skips with a
//! message, as does the restatement test where `../shared/golden/v1` is absent.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use diffuse_spec::golden::{self, Status};

fn spec_python() -> Option<PathBuf> {
    common::spec_python()
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

/// The restatement recomputes every shared golden case it covers within the tolerances of
/// `verify` (and names the cases it does not cover, which must be none of v1's).
#[test]
fn restatement_reproduces_every_reference_case_within_tolerance() {
    let (Some(py), Some(root)) = (spec_python(), common::shared_golden()) else { return };
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(&py).current_dir(spec_dir()).args(["-m", "diffuse_spec_ref.restate", "--golden"]).arg(&root).arg("--out").arg(out.path()).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "restate failed: {text}{}", String::from_utf8_lossy(&o.stderr));
    let cases = golden::discover(&root).unwrap();
    let rows: Vec<_> = cases.iter().flat_map(|c| golden::verify_case(c, out.path())).collect();
    let bad: Vec<_> = rows.iter().filter(|r| r.status != Status::Pass).cloned().collect();
    assert!(bad.is_empty(), "{}", golden::table(&bad));
    assert_eq!(golden::Summary::of(&rows).passed, cases.len());
}

/// The LightningDiT restatement recomputes the reference's 7 LightningDiT cases (4 forwards,
/// SiT / EDM / MeanFlow gradients with label dropout) within the tolerances of `verify`.
#[test]
fn restatement_reproduces_the_reference_lightning_cases_within_tolerance() {
    let (Some(py), Some(root)) = (spec_python(), common::shared_set("lightning")) else { return };
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(&py).current_dir(spec_dir()).args(["-m", "diffuse_spec_ref.restate", "--golden"]).arg(&root).arg("--out").arg(out.path()).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "restate failed: {text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(!text.contains("NOT REPRODUCED"), "{text}");
    let cases = golden::discover(&root).unwrap();
    assert_eq!(cases.len(), 7);
    let rows: Vec<_> = cases.iter().flat_map(|c| golden::verify_case(c, out.path())).collect();
    print!("{}", golden::table(&rows));
    let bad: Vec<_> = rows.iter().filter(|r| r.status != Status::Pass).cloned().collect();
    assert!(bad.is_empty(), "{}", golden::table(&bad));
    assert_eq!(golden::Summary::of(&rows).passed, cases.len());
}

/// The exporter rewrites every fixture: the same cases; `case.json` (draw listings included),
/// inputs, parameters and draws byte for byte (threefry and JAX's float32 maps are exact and
/// machine-independent); buffers within 4 ulp and expected outputs within their tolerances
/// (XLA's and numpy's float32 kernels differ in the last bits between CPUs: on the machine
/// that wrote the fixtures they are byte-identical too, which the test reports).
#[test]
fn exporter_reproduces_every_fixture() {
    let Some(py) = spec_python() else { return };
    let out = tempfile::tempdir().unwrap();
    let root = out.path().join("v1");
    let st = Command::new(&py).current_dir(spec_dir()).args(["-m", "diffuse_spec_ref.export", "--jobs", "2", "--out"]).arg(&root).status().unwrap();
    assert!(st.success(), "the exporter failed");
    let fixtures = common::fixtures();
    let names = |r: &Path| -> Vec<String> { golden::discover(r).unwrap().iter().map(|c| c.file_name().unwrap().to_string_lossy().into_owned()).collect() };
    assert_eq!(names(&root), names(&fixtures), "the exporter writes another set of cases");
    let (mut exact, mut files, mut bad) = (0, 0, Vec::new());
    for case in golden::discover(&fixtures).unwrap() {
        let name = case.file_name().unwrap().to_owned();
        let mut listing: Vec<_> = std::fs::read_dir(&case).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        listing.sort();
        let mut fresh: Vec<_> = std::fs::read_dir(root.join(&name)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        fresh.sort();
        assert_eq!(listing, fresh, "{name:?}: other files");
        for f in &listing {
            let (a, b) = (std::fs::read(case.join(f)).unwrap(), std::fs::read(root.join(&name).join(f)).unwrap());
            files += 1;
            if a == b {
                exact += 1;
                continue;
            }
            let role = f.split('.').next().unwrap_or_default();
            match role {
                "out" | "grad" => {} // judged below, with the tolerances of verify
                "buffer" => {
                    let (e, c) = (golden::Array::read_npy(&case.join(f)).unwrap(), golden::Array::read_npy(&root.join(&name).join(f)).unwrap());
                    let cmp = golden::compare(&c, &e, golden::Tolerance::elementwise(4));
                    if !cmp.passed {
                        bad.push(format!("{name:?}/{f}: {}", cmp.detail()));
                    }
                }
                _ => bad.push(format!("{name:?}/{f}: not byte-identical (a {role} file must be)")),
            }
        }
        let rows = golden::verify_case(&case, &root);
        bad.extend(rows.into_iter().filter(|r| r.status != Status::Pass).map(|r| format!("{}/{}: {}", r.case, r.quantity, r.detail)));
    }
    println!("exporter: {exact} of {files} files byte-identical to the committed fixtures, every other one within tolerance");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
