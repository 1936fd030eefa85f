//! The `diffuse-spec` binary end to end: exit codes, the table and summary, JSON lines,
//! device errors, and `verify`.

use std::fs;
use std::path::Path;
use std::process::Command;

use diffuse_spec::golden::Array;

const BIN: &str = env!("CARGO_BIN_EXE_diffuse-spec");

/// A key(0) rng case (data [0, 0]) whose stored output is `stored`.
fn key0_case(root: &Path, name: &str, stored: [u32; 2]) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("case.json"), format!(r#"{{"format": 1, "name": "{name}", "kind": "rng", "calls": [{{"op": "key", "seed": 0}}]}}"#)).unwrap();
    Array::u32(vec![2], stored.to_vec()).unwrap().write_npy(&dir.join("out.0.npy")).unwrap();
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn check_passes_and_exits_zero() {
    let t = tempfile::tempdir().unwrap();
    key0_case(t.path(), "good", [0, 0]);
    let (code, out, _) = run(&["check", t.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("worst ulp") && out.contains("good"), "{out}");
    assert!(out.lines().any(|l| l == "1 passed, 0 failed, 0 skipped, 0 not implemented"), "{out}");
}

#[test]
fn check_fails_and_exits_one() {
    let t = tempfile::tempdir().unwrap();
    key0_case(t.path(), "good", [0, 0]);
    key0_case(t.path(), "bad", [0, 5]);
    let (code, out, _) = run(&["check", t.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().any(|l| l == "1 passed, 1 failed, 0 skipped, 0 not implemented"), "{out}");
    // --filter selects cases by name.
    let (code, out, _) = run(&["check", t.path().to_str().unwrap(), "--filter", "goo"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("bad"));
}

#[test]
fn json_lines() {
    let t = tempfile::tempdir().unwrap();
    key0_case(t.path(), "good", [0, 0]);
    let (code, out, _) = run(&["check", "--json", t.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["case"], "good");
    assert_eq!(lines[0]["status"], "pass");
    assert_eq!(lines[0]["worst_ulp"], 0);
    assert_eq!(lines.last().unwrap()["summary"]["passed"], 1);
}

#[test]
fn cuda_without_a_gpu_is_a_clear_usage_error() {
    if tch::Cuda::is_available() {
        eprintln!("SKIPPED: a GPU is present, so `--device cuda` is valid here");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    key0_case(t.path(), "good", [0, 0]);
    let (code, _, err) = run(&["check", "--device", "cuda", t.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("CUDA device") && err.contains("0 GPU"), "{err}");
    let (code, _, err) = run(&["check", "--device", "tpu", t.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown device `tpu`"), "{err}");
}

#[test]
fn usage_errors_exit_two() {
    assert_eq!(run(&[]).0, 2);
    assert_eq!(run(&["frobnicate"]).0, 2);
    assert_eq!(run(&["check", "--bogus"]).0, 2);
    assert_eq!(run(&["verify", "--golden", "x"]).0, 2);
    let t = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["check", t.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("at least one case"), "{err}");
}

#[test]
fn verify_compares_a_candidate_with_the_golden_case() {
    let g = tempfile::tempdir().unwrap();
    key0_case(g.path(), "k", [0, 0]);
    let c = tempfile::tempdir().unwrap();
    let (g_s, c_s) = (g.path().to_str().unwrap(), c.path().to_str().unwrap());
    // No candidate directory: a failure.
    let (code, out, _) = run(&["verify", "--golden", g_s, "--candidate", c_s]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no candidate directory"));
    // An identical candidate passes.
    fs::create_dir_all(c.path().join("k")).unwrap();
    Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&c.path().join("k/out.0.npy")).unwrap();
    let (code, out, _) = run(&["verify", "--golden", g_s, "--candidate", c_s]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 passed, 0 failed"));
    // A different one fails, naming the worst element.
    Array::u32(vec![2], vec![3, 0]).unwrap().write_npy(&c.path().join("k/out.0.npy")).unwrap();
    let (code, out, _) = run(&["verify", "--golden", g_s, "--candidate", c_s]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("worst at [0]: expected 0e0, got 3e0"), "{out}");
    // An output with no golden counterpart is an error.
    Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&c.path().join("k/out.0.npy")).unwrap();
    Array::u32(vec![1], vec![0]).unwrap().write_npy(&c.path().join("k/out.9.npy")).unwrap();
    let (code, out, _) = run(&["verify", "--golden", g_s, "--candidate", c_s]);
    assert_eq!(code, 3, "an error row exits 3: {out}");
    assert!(out.contains("no golden counterpart"), "{out}");
}
