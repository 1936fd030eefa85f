//! `verify` as a port author meets it, run through the libtorch-free binary that `make test`
//! builds (`cargo build --no-default-features`): selections, skips, every kind of bad
//! candidate file as its own row with the exit code that says which, the lenient candidate
//! reader, structured JSON, the manifest checked first, and `check` refusing plainly.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use diffuse_spec::golden::Array;

/// A golden root with two cases: `a` (a float32 loss and a uint32 output) and `b`.
fn golden_root(root: &Path) {
    for (name, kind) in [("a_case", "rng"), ("b_case", "rng")] {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("case.json"), format!(r#"{{"format": 1, "name": "{name}", "kind": "{kind}", "calls": [{{"op": "key", "seed": 0}}]}}"#)).unwrap();
        Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&dir.join("out.0.npy")).unwrap();
    }
}

fn bin() -> Option<PathBuf> {
    common::notorch_bin()
}

fn run(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin).args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn write_raw(path: &Path, descr: &str, fortran: bool, shape: &[usize], payload: &[u8]) {
    let shape_txt = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_txt}, }}", if fortran { "True" } else { "False" });
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((dict.len() as u16).to_le_bytes());
    b.extend(dict.as_bytes());
    b.extend(payload);
    fs::write(path, b).unwrap();
}

/// A float32 golden case `f_case` with a [2, 3] loss, for the lenient-reader checks.
fn float_case(root: &Path) -> Vec<f32> {
    let dir = root.join("f_case");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("case.json"), r#"{"format": 1, "name": "f_case", "kind": "network", "network": {"type": "probe_mlp", "channels": 3, "hidden": 2, "freqs": 1}}"#).unwrap();
    let v = vec![0.5f32, -1.25, 3.0, 1e-3, 7.0, -2.0];
    Array::f32(vec![2, 3], v.clone()).unwrap().write_npy(&dir.join("out.out.npy")).unwrap();
    v
}

#[test]
fn check_needs_the_torch_feature_and_says_so() {
    let Some(bin) = bin() else { return };
    let g = tempfile::tempdir().unwrap();
    golden_root(g.path());
    let (code, _, err) = run(&bin, &["check", g.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("without the `torch` feature"), "{err}");
}

#[test]
fn selections_skips_and_orphans() {
    let Some(bin) = bin() else { return };
    let (g, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    golden_root(g.path());
    for name in ["a_case", "b_case"] {
        fs::create_dir_all(c.path().join(name)).unwrap();
        Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&c.path().join(name).join("out.0.npy")).unwrap();
    }
    let (gs, cs) = (g.path().to_str().unwrap(), c.path().to_str().unwrap());
    let base = ["verify", "--golden", gs, "--candidate", cs];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    // Everything passes.
    let (code, out, _) = run(&bin, &base);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l == "2 passed, 0 failed, 0 skipped, 0 not implemented"), "{out}");
    // Repeated --filter: either substring selects.
    let (code, out, _) = run(&bin, &with(&base, &["--filter", "a_", "--filter", "b_"]));
    assert_eq!(code, 0);
    assert!(out.contains("2 passed"), "{out}");
    // Nothing matches: a usage error, so a typo cannot pass in CI.
    let (code, _, err) = run(&bin, &with(&base, &["--filter", "nosuchcase"]));
    assert_eq!(code, 2);
    assert!(err.contains("no case matches --filter nosuchcase"), "{err}");
    // --cases FILE, with a name no golden case has: an error row.
    let list = g.path().join("cases.txt");
    fs::write(&list, "# cases to verify\na_case\n\nmisspelt_case\n").unwrap();
    let (code, out, _) = run(&bin, &with(&base, &["--cases", list.to_str().unwrap()]));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("misspelt_case") && out.contains("named in --cases but no golden case has this name"), "{out}");
    assert!(!out.contains("b_case"), "{out}");
    // --skip: a skipped row, counted as skipped, never a pass.
    let (code, out, _) = run(&bin, &with(&base, &["--skip", "out.0", "--filter", "a_case"]));
    assert_eq!(code, 0);
    assert!(out.contains("skipped (--skip)") && out.contains("0 passed, 0 failed, 1 skipped"), "{out}");
    let (code, _, err) = run(&bin, &with(&base, &["--skip", "out.0,,x"]));
    assert_eq!(code, 2, "{err}");
    // A candidate case directory with no golden counterpart: an error row.
    fs::create_dir_all(c.path().join("c_case")).unwrap();
    let (code, out, _) = run(&bin, &base);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("c_case") && out.contains("candidate case directory with no golden counterpart"), "{out}");
}

#[test]
fn bad_candidate_files_get_rows_of_their_own() {
    let Some(bin) = bin() else { return };
    let (g, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let v = float_case(g.path());
    let (gs, cs) = (g.path().to_str().unwrap(), c.path().to_str().unwrap());
    let dir = c.path().join("f_case");
    fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join("out.out.npy");
    let verify = || run(&bin, &["verify", "--golden", gs, "--candidate", cs, "--json"]);
    let rows = |out: &str| -> Vec<serde_json::Value> { out.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    // Missing file: a failure naming the file.
    let (code, out, _) = verify();
    assert_eq!(code, 1, "{out}");
    assert!(rows(&out)[0]["detail"].as_str().unwrap().contains("candidate lacks"), "{out}");
    // Misshapen: a failure naming both shapes; no sentinel numbers.
    Array::f32(vec![3, 2], v.clone()).unwrap().write_npy(&out_file).unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 1);
    let r = &rows(&out)[0];
    assert_eq!(r["status"], "fail");
    assert!(r["detail"].as_str().unwrap().contains("shape [3, 2] where [2, 3] expected"), "{out}");
    assert!(r["worst_ulp"].is_null() && r["worst_rel"].is_null(), "{out}");
    // NaN where a number is expected: a failure, the worst element named with its values.
    let mut nan = v.clone();
    nan[4] = f32::NAN;
    Array::f32(vec![2, 3], nan).unwrap().write_npy(&out_file).unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 1);
    let r = &rows(&out)[0];
    assert_eq!((r["worst_index"].clone(), r["expected"].clone(), r["actual"].clone()), (serde_json::json!([1, 1]), serde_json::json!(7.0), serde_json::json!("NaN")), "{out}");
    assert!(r["worst_ulp"].is_null() && r["outside"] == 1, "{out}");
    // Unreadable: an error row, exit 3.
    fs::write(&out_file, b"not an npy file").unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 3, "{out}");
    assert_eq!(rows(&out)[0]["status"], "error");
    // An extra output: an error row beside the passing one.
    Array::f32(vec![2, 3], v.clone()).unwrap().write_npy(&out_file).unwrap();
    Array::f32(vec![1], vec![0.0]).unwrap().write_npy(&dir.join("out.extra.npy")).unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 3, "{out}");
    let rs = rows(&out);
    assert_eq!(rs[0]["status"], "pass");
    assert_eq!((rs[1]["quantity"].clone(), rs[1]["status"].clone()), (serde_json::json!("out.extra"), serde_json::json!("error")));
    fs::remove_file(dir.join("out.extra.npy")).unwrap();
    // A wrong value: the worst element, expected and actual, the count outside and the
    // structured tolerance.
    let mut off = v.clone();
    off[2] = 3.1;
    Array::f32(vec![2, 3], off).unwrap().write_npy(&out_file).unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 1);
    let r = &rows(&out)[0];
    assert_eq!((r["worst_index"].clone(), r["expected"].clone(), r["outside"].clone(), r["compared"].clone()), (serde_json::json!([0, 2]), serde_json::json!(3.0), serde_json::json!(1), serde_json::json!(6)), "{out}");
    assert!((r["actual"].as_f64().unwrap() - 3.1).abs() < 1e-6);
    assert_eq!(r["tolerance"]["rtol"], 1e-5);
    assert_eq!(r["tolerance"]["scale"], "own");
    assert_eq!(r["tolerance"]["scale_value"], 7.0);
    let summary = rows(&out).last().unwrap().clone();
    assert_eq!(summary["summary"]["failed"], 1);
}

#[test]
fn float64_and_fortran_order_candidates_are_read_and_said() {
    let Some(bin) = bin() else { return };
    let (g, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let v = float_case(g.path());
    let dir = c.path().join("f_case");
    fs::create_dir_all(&dir).unwrap();
    // float64 in fortran order, as np.save(a.T) of a transposed float64 array writes it.
    let col_major: Vec<u8> = [0usize, 3, 1, 4, 2, 5].iter().flat_map(|&i| (v[i] as f64).to_le_bytes()).collect();
    write_raw(&dir.join("out.out.npy"), "<f8", true, &[2, 3], &col_major);
    let (code, out, _) = run(&bin, &["verify", "--golden", g.path().to_str().unwrap(), "--candidate", c.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}");
    let r: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(r["status"], "pass");
    assert_eq!(r["notes"], serde_json::json!(["candidate is float64, rounded to float32 before comparing", "candidate is in fortran order, read as such"]));
    // The same bytes read as C order would be wrong: the reorder is what made it pass.
    write_raw(&dir.join("out.out.npy"), "<f8", false, &[2, 3], &col_major);
    let (code, _, _) = run(&bin, &["verify", "--golden", g.path().to_str().unwrap(), "--candidate", c.path().to_str().unwrap()]);
    assert_eq!(code, 1);
}

#[test]
fn the_golden_manifest_is_verified_first() {
    let Some(bin) = bin() else { return };
    let (g, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    golden_root(g.path());
    for name in ["a_case", "b_case"] {
        fs::create_dir_all(c.path().join(name)).unwrap();
        Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&c.path().join(name).join("out.0.npy")).unwrap();
    }
    let (code, out, _) = run(&bin, &["manifest", g.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let args = ["verify", "--golden", g.path().to_str().unwrap(), "--candidate", c.path().to_str().unwrap()];
    assert_eq!(run(&bin, &args).0, 0);
    // An edited golden file: an error of its own, before any comparison blames the port.
    fs::write(g.path().join("b_case/case.json"), r#"{"format": 1, "name": "b_case", "kind": "rng", "calls": [{"op": "key", "seed": 1}]}"#).unwrap();
    let (code, out, _) = run(&bin, &args);
    assert_eq!(code, 3, "{out}");
    let first = out.lines().nth(1).unwrap();
    assert!(first.starts_with("MANIFEST.sha256") && first.contains("b_case/case.json") && first.contains("differs from the manifest"), "{out}");
}
