//! docs/format.md's worked example is real: the numpy script it shows, which reads only a
//! case's `in.*`, `param.*`, `buffer.*` and `draw.*` files, reproduces the SiT loss case and
//! `verify` accepts its candidate. A deliberately broken copy of the script (the target's
//! sign flipped) must fail, so the check can fail.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_diffuse-spec");
const CASE: &str = "sit_uniform_loss_b1_2x2x2";

fn script() -> String {
    let doc = fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/format.md")).unwrap();
    let start = doc.find("<!-- example: sit_loss.py -->").expect("the example marker in docs/format.md");
    let rest = &doc[start..];
    let body = rest.split_once("```python\n").expect("a python block after the marker").1;
    body.split_once("\n```").expect("the end of the python block").0.to_string() + "\n"
}

fn run_and_verify(py: &std::path::Path, source: &str) -> (i32, String) {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("sit_loss.py");
    fs::write(&path, source).unwrap();
    let cand = t.path().join("candidate");
    let case = common::fixtures().join(CASE);
    let st = Command::new(py).arg(&path).arg(&case).arg(&cand).status().unwrap();
    assert!(st.success(), "the docs' script failed to run");
    // The script read no expected output: it wrote its own, and out.* of the case are unread.
    let o = Command::new(BIN).args(["verify", "--golden"]).arg(common::fixtures()).arg("--candidate").arg(&cand).args(["--filter", CASE]).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn the_numpy_sit_example_reproduces_its_case_through_verify() {
    let Some(py) = common::spec_python() else { return };
    let src = script();
    for forbidden in ["out.", "grad."] {
        assert!(!src.contains(&format!("load(\"{forbidden}")), "the example must not read expected outputs");
    }
    let (code, out) = run_and_verify(&py, &src);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 passed, 0 failed, 0 skipped, 0 not implemented"), "{out}");
    for q in ["out.loss", "out.t", "out.n", "out.x_t", "out.target", "out.net_out"] {
        assert!(out.lines().any(|l| l.contains(q) && l.trim_end().ends_with("pass")), "{q} not verified:\n{out}");
    }
    let broken = src.replace("target = n - x", "target = x - n");
    assert_ne!(broken, src);
    let (code, out) = run_and_verify(&py, &broken);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().any(|l| l.contains("out.target") && l.contains("FAIL")), "{out}");
}
