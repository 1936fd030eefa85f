//! REPA's DINOv2 detector against golden cases of kind `encoder`:
//! - the reference's own (`../shared/golden/dino`, 4 cases; skipped with a message where that
//!   folder does not exist);
//! - the project's committed ones (`fixtures/v1/dino_*`);
//! - the exporter's larger ones (512 and 768 inputs, 7 MB each as float32: too big for the
//!   repository), written at test time into a temporary directory by `spec/`'s
//!   `dino_cases.generated_cases()`, together with a fresh export of the committed ones, which
//!   must be byte-identical. Skipped with a message where the spec environment (jax 0.5.1,
//!   transformers 4.46.3) is absent.
//!
//! Malformed `encoder` cases are errors that name the case, never panics.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use diffuse_spec::golden::{self, Row, Status};
use tch::Device;

fn check(cases: &[PathBuf]) -> Vec<Row> {
    cases.iter().flat_map(|c| golden::check_case(c, Device::Cpu)).collect()
}

fn dino_cases(root: &Path) -> Vec<PathBuf> {
    golden::discover(root)
        .unwrap()
        .into_iter()
        .filter(|c| c.file_name().is_some_and(|n| n.to_string_lossy().starts_with("dino_")))
        .collect()
}

#[test]
fn shared_dino_cases_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/dino");
    if !root.is_dir() {
        eprintln!("SKIPPED: {} does not exist here, so the reference's DINO cases were not replayed", root.display());
        return;
    }
    let cases = dino_cases(&root);
    assert_eq!(cases.len(), 4, "golden/dino holds 4 cases");
    let rows = check(&cases);
    common::assert_conformance(&rows, cases.len(), |_| false);
    // the resize is reproduced bit for bit at 256 (measured: every pixel of the three 256 cases)
    for r in rows.iter().filter(|r| r.quantity == "out.pixels" && !r.case.contains("512")) {
        assert_eq!(r.worst_ulp, Some(0), "{}: {}", r.case, r.detail);
    }
}

#[test]
fn committed_dino_fixtures_pass() {
    let cases = dino_cases(&common::fixtures());
    assert!(cases.len() >= 2, "fixtures/v1 holds the dino_cases area, found {}", cases.len());
    let rows = check(&cases);
    common::assert_conformance(&rows, cases.len(), |_| false);
}

fn spec_python() -> Option<PathBuf> {
    let p = std::env::var_os("DIFFUSE_SPEC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/diffuse-spec/jax-0.5.1/bin/python"));
    if !p.exists() {
        eprintln!("SKIPPED: the spec environment ({}) is absent; run `make spec-env`", p.display());
        return None;
    }
    let ok = Command::new(&p).args(["-c", "import transformers, jax"]).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: the spec environment ({}) lacks transformers; run `make spec-env` (spec/requirements.txt)", p.display());
        return None;
    }
    Some(p)
}

#[test]
fn exported_dino_cases_pass_and_the_committed_ones_reexport_byte_for_byte() {
    let Some(py) = spec_python() else { return };
    let out = tempfile::tempdir().unwrap();
    let st = Command::new(&py)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("spec"))
        .args([
            "-c",
            "import sys, pathlib; from diffuse_spec_ref import dino_cases, case\n\
             root = pathlib.Path(sys.argv[1])\n\
             [case.write_case(root / 'committed', c) for c in dino_cases.fixture_cases()]\n\
             [case.write_case(root / 'generated', c) for c in dino_cases.generated_cases()]",
        ])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(st.success(), "the dino exporter failed");

    // the committed fixtures are what the exporter writes, byte for byte
    let fixtures = common::fixtures();
    let mut compared = 0;
    for case in dino_cases(&out.path().join("committed")) {
        let name = case.file_name().unwrap().to_owned();
        let mut names: Vec<_> = std::fs::read_dir(&case).unwrap().map(|e| e.unwrap().file_name()).collect();
        let mut committed: Vec<_> = std::fs::read_dir(fixtures.join(&name)).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        committed.sort();
        assert_eq!(names, committed, "{}: other files than committed", name.to_string_lossy());
        for f in names {
            let a = std::fs::read(case.join(&f)).unwrap();
            let b = std::fs::read(fixtures.join(&name).join(&f)).unwrap();
            assert!(a == b, "{}/{} differs from the committed fixture", name.to_string_lossy(), f.to_string_lossy());
            compared += 1;
        }
    }
    assert!(compared > 20, "compared only {compared} files");

    let cases = dino_cases(&out.path().join("generated"));
    assert!(cases.len() >= 5, "generated_cases() wrote {} cases", cases.len());
    let rows = check(&cases);
    common::assert_conformance(&rows, cases.len(), |_| false);
}

/// Copies a committed case into a temporary directory, lets `edit` change it, and replays it.
fn replay_edited(edit: impl FnOnce(&Path)) -> Vec<Row> {
    let src = common::fixtures().join("dino_encode_b1_256_nobias_ls0p5");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dino_encode_b1_256_nobias_ls0p5");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    edit(&dir);
    golden::check_case(&dir, Device::Cpu)
}

fn edit_json(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("case.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn single_error(rows: &[Row], needle: &str) {
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, Status::Error, "{rows:?}");
    assert!(rows[0].detail.contains(needle), "`{needle}` not in: {}", rows[0].detail);
    assert!(rows[0].detail.contains("dino_encode_b1_256_nobias_ls0p5"), "{}", rows[0].detail);
}

#[test]
fn malformed_encoder_cases_are_named_errors() {
    single_error(&replay_edited(|d| edit_json(d, |v| v["encoder"]["type"] = "clip".into())), "unknown encoder `clip`");
    single_error(&replay_edited(|d| edit_json(d, |v| v["encoder"]["stage"] = "decode".into())), "preprocess or encode");
    single_error(&replay_edited(|d| edit_json(d, |v| v["encoder"]["use_swiglu_ffn"] = true.into())), "use_swiglu_ffn");
    single_error(&replay_edited(|d| edit_json(d, |v| v["encoder"]["hidden_size"] = 48.into())), "shape");
    single_error(&replay_edited(|d| edit_json(d, |v| v["encoder"]["typo"] = 1.into())), "typo");
    single_error(
        &replay_edited(|d| std::fs::remove_file(d.join("param.encoder.layer.0.mlp.fc1.bias.npy")).unwrap()),
        "encoder.layer.0.mlp.fc1.bias",
    );
    // an image below 256 (Q19): the reference would resize it to nothing
    single_error(
        &replay_edited(|d| {
            let x = ndarray_zeros(&[1, 255, 255, 3]);
            x.write_npy(&d.join("in.x.npy")).unwrap();
        }),
        "Q19",
    );
}

fn ndarray_zeros(shape: &[usize]) -> golden::Array {
    golden::Array::f32(shape.to_vec(), vec![0.0; shape.iter().product()]).unwrap()
}
