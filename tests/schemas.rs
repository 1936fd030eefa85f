//! The JSON Schemas of docs/schemas/ describe what the crate reads and writes: every
//! `case.json` of the fixtures (and of `../shared/golden` when present) and every line that
//! `check --json` and `verify --json` print — passing, failing, erroring, skipped and
//! non-finite rows alike. Validated with Python's `jsonschema` from the spec environment
//! (`make test` installs it; a plain `cargo test` without it skips with a message).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use diffuse_spec::golden::Array;

const BIN: &str = env!("CARGO_BIN_EXE_diffuse-spec");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validate(py: &Path, mode: &str, schema: &str, targets: &[&Path]) -> (bool, String) {
    let o = Command::new(py)
        .arg(repo().join("spec/scripts/check_schemas.py"))
        .arg(mode)
        .arg(repo().join("docs/schemas").join(schema))
        .args(targets)
        .output()
        .unwrap();
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn every_case_json_follows_the_case_schema() {
    let Some(py) = common::spec_python() else { return };
    let fixtures = common::fixtures();
    let (ok, out) = validate(&py, "cases", "case.schema.json", &[&fixtures]);
    assert!(ok, "{out}");
    assert!(out.contains(" 0 invalid"), "{out}");
    if let Some(shared) = common::shared_golden() {
        let (ok, out) = validate(&py, "cases", "case.schema.json", &[&shared]);
        assert!(ok, "{out}");
    }
    // The schema is not vacuous: an unknown kind, a draw listed under another file name and
    // an unknown interface setting are refused.
    let t = tempfile::tempdir().unwrap();
    for (name, json) in [
        ("bad_kind", r#"{"format": 1, "name": "bad_kind", "kind": "losses"}"#),
        ("bad_draw", r#"{"format": 1, "name": "bad_draw", "kind": "rng", "calls": [], "draws": [{"file": "draws.time.0", "stream": "time", "counter": 0, "op": "uniform", "shape": [1], "feeds": "t"}]}"#),
        ("bad_setting", r#"{"format": 1, "name": "bad_setting", "kind": "pred", "interface": {"type": "sit", "t_sigmaa": 1}, "network": {"type": "dit"}}"#),
    ] {
        fs::create_dir_all(t.path().join(name)).unwrap();
        fs::write(t.path().join(name).join("case.json"), json).unwrap();
    }
    let (ok, out) = validate(&py, "cases", "case.schema.json", &[t.path()]);
    assert!(!ok && out.contains("3 documents, 3 invalid"), "{out}");
}

#[test]
fn every_json_line_the_cli_prints_follows_the_row_schema() {
    let Some(py) = common::spec_python() else { return };
    let t = tempfile::tempdir().unwrap();
    let lines = t.path().join("lines");
    fs::create_dir_all(&lines).unwrap();
    let mut files = Vec::new();
    let mut capture = |name: &str, args: &[&str]| {
        let o = Command::new(BIN).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(text.lines().count() >= 2, "{name}: {text}{}", String::from_utf8_lossy(&o.stderr));
        let f = lines.join(format!("{name}.jsonl"));
        fs::write(&f, text).unwrap();
        files.push(f);
    };
    // Every fixture, checked: passing rows of every kind, manifest verified.
    capture("check_fixtures", &["check", "--json", "fixtures"]);
    // A golden root and a candidate made to fail, error, skip and carry non-finite values.
    let (g, c) = (t.path().join("g"), t.path().join("c"));
    for (name, v) in [("nan_case", vec![1.0f32, 2.0]), ("inf_case", vec![f32::INFINITY, 0.0]), ("ok_case", vec![1.0, 2.0])] {
        fs::create_dir_all(g.join(name)).unwrap();
        fs::write(g.join(name).join("case.json"), format!(r#"{{"format": 1, "name": "{name}", "kind": "pred", "interface": {{"type": "sit"}}, "network": {{"type": "probe_mlp", "channels": 2, "hidden": 2, "freqs": 1}}}}"#)).unwrap();
        Array::f32(vec![2], v.clone()).unwrap().write_npy(&g.join(name).join("out.pred.npy")).unwrap();
        Array::f32(vec![2], v).unwrap().write_npy(&g.join(name).join("out.score.npy")).unwrap();
        fs::create_dir_all(c.join(name)).unwrap();
    }
    Array::f32(vec![2], vec![f32::NAN, 2.0]).unwrap().write_npy(&c.join("nan_case/out.pred.npy")).unwrap();
    fs::write(c.join("nan_case/out.score.npy"), b"garbage").unwrap();
    Array::f32(vec![2], vec![-f32::INFINITY, 1.0]).unwrap().write_npy(&c.join("inf_case/out.pred.npy")).unwrap();
    Array::f32(vec![1], vec![1.0]).unwrap().write_npy(&c.join("inf_case/out.score.npy")).unwrap();
    Array::f32(vec![2], vec![1.0, 2.0]).unwrap().write_npy(&c.join("ok_case/out.pred.npy")).unwrap();
    fs::create_dir_all(c.join("orphan_case")).unwrap();
    let (gs, cs) = (g.to_str().unwrap(), c.to_str().unwrap());
    capture("verify_bad", &["verify", "--json", "--golden", gs, "--candidate", cs, "--skip", "out.score"]);
    capture("verify_bad_unskipped", &["verify", "--json", "--golden", gs, "--candidate", cs]);
    // A golden file edited after its manifest was written: manifest rows.
    assert!(Command::new(BIN).args(["manifest", gs]).status().unwrap().success());
    fs::write(g.join("ok_case/case.json"), r#"{"format": 1, "name": "ok_case", "kind": "pred", "description": "edited", "interface": {"type": "sit"}, "network": {"type": "probe_mlp", "channels": 2, "hidden": 2, "freqs": 1}}"#).unwrap();
    capture("verify_manifest", &["verify", "--json", "--golden", gs, "--candidate", cs]);
    let text: String = files.iter().map(|f| fs::read_to_string(f).unwrap()).collect();
    for needle in ["\"status\":\"pass\"", "\"status\":\"fail\"", "\"status\":\"error\"", "\"status\":\"skipped\"", "\"NaN\"", "\"-Infinity\"", "\"kind\":\"manifest\""] {
        assert!(text.contains(needle), "the captured lines lack {needle}");
    }
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (ok, out) = validate(&py, "lines", "verify-row.schema.json", &refs);
    assert!(ok, "{out}");
    // Not vacuous: a row without `tolerance`, a sentinel-free field given a string, and a
    // summary line without `skipped` are refused.
    let bad = t.path().join("bad.jsonl");
    fs::write(
        &bad,
        "{\"case\":\"a\",\"kind\":\"rng\",\"quantity\":\"out.0\",\"status\":\"pass\",\"worst_ulp\":0,\"worst_rel\":0,\"worst_index\":[0],\"expected\":0,\"actual\":0,\"outside\":0,\"compared\":1,\"notes\":[],\"detail\":\"\"}\n\
         {\"case\":\"a\",\"kind\":\"rng\",\"quantity\":\"out.0\",\"status\":\"pass\",\"worst_ulp\":\"nan\",\"worst_rel\":0,\"tolerance\":null,\"worst_index\":null,\"expected\":null,\"actual\":null,\"outside\":null,\"compared\":null,\"notes\":[],\"detail\":\"\"}\n\
         {\"summary\":{\"passed\":1,\"failed\":0,\"errors\":0,\"not_implemented\":0},\"line\":\"1 passed, 0 failed, 0 skipped, 0 not implemented\"}\n",
    )
    .unwrap();
    let (ok, out) = validate(&py, "lines", "verify-row.schema.json", &[&bad]);
    assert!(!ok && out.contains("3 documents, 3 invalid"), "{out}");
}
