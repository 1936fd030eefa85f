//! The strict reader and the harness on malformed cases: each defect gives its own
//! clear status and message, never a panic and never a pass.

use std::fs;
use std::path::{Path, PathBuf};

use diffuse_spec::golden::{check_case, Array, Row, Status};
use tch::Device;

/// A `.npy` file with an arbitrary header (to write what numpy would not).
fn raw_npy(descr: &str, fortran: bool, shape: &str, payload: &[u8]) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}", if fortran { "True" } else { "False" });
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out.extend(payload);
    out
}

/// key(0) has data [0, 0] (jax.random.key: [seed >> 32, seed & 0xffffffff]).
const KEY0_JSON: &str = r#"{"format": 1, "name": "NAME", "kind": "rng", "calls": [{"op": "key", "seed": 0}]}"#;

struct Tmp(tempfile::TempDir);

impl Tmp {
    fn new() -> Tmp {
        Tmp(tempfile::tempdir().unwrap())
    }
    /// A valid key(0) case named `name`; returns its directory.
    fn key0(&self, name: &str) -> PathBuf {
        let dir = self.0.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("case.json"), KEY0_JSON.replace("NAME", name)).unwrap();
        Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&dir.join("out.0.npy")).unwrap();
        dir
    }
}

fn check(dir: &Path) -> Vec<Row> {
    check_case(dir, Device::Cpu)
}

fn assert_status(rows: &[Row], status: Status, needle: &str) {
    let hit = rows.iter().any(|r| r.status == status && r.detail.contains(needle));
    assert!(hit, "expected a {status:?} row mentioning {needle:?}, got {rows:#?}");
}

#[test]
fn a_valid_case_passes() {
    let t = Tmp::new();
    let rows = check(&t.key0("ok"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, Status::Pass, "{rows:?}");
    assert_eq!(rows[0].worst_ulp, Some(0));
}

#[test]
fn truncated_npy() {
    let t = Tmp::new();
    let d = t.key0("trunc");
    let p = d.join("out.0.npy");
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..b.len() - 3]).unwrap();
    assert_status(&check(&d), Status::Error, "truncated or padded");
}

#[test]
fn padded_npy() {
    let t = Tmp::new();
    let d = t.key0("padded");
    let p = d.join("out.0.npy");
    let mut b = fs::read(&p).unwrap();
    b.extend([0u8; 4]);
    fs::write(&p, b).unwrap();
    assert_status(&check(&d), Status::Error, "truncated or padded");
}

#[test]
fn wrong_dtype_is_a_failure_naming_both_dtypes() {
    let t = Tmp::new();
    let d = t.key0("dtype");
    Array::f32(vec![2], vec![0.0, 0.0]).unwrap().write_npy(&d.join("out.0.npy")).unwrap();
    assert_status(&check(&d), Status::Fail, "dtype <u4 where <f4 expected");
}

#[test]
fn wrong_value_fails_with_worst_element() {
    let t = Tmp::new();
    let d = t.key0("value");
    Array::u32(vec![2], vec![0, 1]).unwrap().write_npy(&d.join("out.0.npy")).unwrap();
    let rows = check(&d);
    assert_status(&rows, Status::Fail, "worst at [1]");
}

#[test]
fn wrong_shape() {
    let t = Tmp::new();
    let d = t.key0("shape");
    Array::u32(vec![1, 2], vec![0, 0]).unwrap().write_npy(&d.join("out.0.npy")).unwrap();
    assert_status(&check(&d), Status::Fail, "shape [2] where [1, 2] expected");
}

#[test]
fn unknown_kind() {
    let t = Tmp::new();
    let d = t.key0("kind");
    fs::write(d.join("case.json"), KEY0_JSON.replace("NAME", "kind").replace("\"rng\"", "\"bogus\"")).unwrap();
    assert_status(&check(&d), Status::Error, "unknown case kind `bogus`");
}

#[test]
fn missing_expected_output() {
    let t = Tmp::new();
    let d = t.key0("missing");
    fs::remove_file(d.join("out.0.npy")).unwrap();
    assert_status(&check(&d), Status::Error, "lacks this expected output");
}

#[test]
fn expected_output_nobody_computes() {
    let t = Tmp::new();
    let d = t.key0("extra_out");
    Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&d.join("out.7.npy")).unwrap();
    assert_status(&check(&d), Status::Fail, "replay does not produce");
}

#[test]
fn stray_file() {
    let t = Tmp::new();
    let d = t.key0("stray");
    fs::write(d.join("notes.txt"), "hello").unwrap();
    assert_status(&check(&d), Status::Error, "stray file");
}

#[test]
fn unknown_role() {
    let t = Tmp::new();
    let d = t.key0("role");
    Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&d.join("expected.0.npy")).unwrap();
    assert_status(&check(&d), Status::Error, "unknown role");
}

#[test]
fn file_nobody_reads() {
    let t = Tmp::new();
    let d = t.key0("unread");
    Array::f32(vec![1], vec![1.0]).unwrap().write_npy(&d.join("in.unused.npy")).unwrap();
    assert_status(&check(&d), Status::Error, "files nobody read: in.unused.npy");
}

#[test]
fn case_json_not_json() {
    let t = Tmp::new();
    let d = t.key0("notjson");
    fs::write(d.join("case.json"), "{format: 1,").unwrap();
    assert_status(&check(&d), Status::Error, "not valid JSON");
}

#[test]
fn case_json_wrong_types() {
    let t = Tmp::new();
    let d = t.key0("types");
    fs::write(d.join("case.json"), r#"{"format": 1, "name": "types", "kind": "rng", "calls": [{"op": "key", "seed": "zero"}]}"#).unwrap();
    assert_status(&check(&d), Status::Error, "settings: invalid type");
}

#[test]
fn name_differs_from_directory() {
    let t = Tmp::new();
    let d = t.key0("named");
    fs::write(d.join("case.json"), KEY0_JSON.replace("NAME", "other")).unwrap();
    assert_status(&check(&d), Status::Error, "differs from the directory name");
}

#[test]
fn unsupported_format_version() {
    let t = Tmp::new();
    let d = t.key0("v2");
    fs::write(d.join("case.json"), KEY0_JSON.replace("NAME", "v2").replace("\"format\": 1", "\"format\": 2")).unwrap();
    assert_status(&check(&d), Status::Error, "only format 1");
}

#[test]
fn fortran_order() {
    let t = Tmp::new();
    let d = t.key0("fortran");
    fs::write(d.join("out.0.npy"), raw_npy("<u4", true, "(2,)", &[0; 8])).unwrap();
    assert_status(&check(&d), Status::Error, "fortran order");
}

#[test]
fn big_endian() {
    let t = Tmp::new();
    let d = t.key0("bigendian");
    fs::write(d.join("out.0.npy"), raw_npy(">u4", false, "(2,)", &[0; 8])).unwrap();
    assert_status(&check(&d), Status::Error, "dtype `>u4`");
}

#[test]
fn float64_is_refused() {
    let t = Tmp::new();
    let d = t.key0("f8");
    fs::write(d.join("out.0.npy"), raw_npy("<f8", false, "(2,)", &[0; 16])).unwrap();
    assert_status(&check(&d), Status::Error, "dtype `<f8`");
}

#[test]
fn enormous_declared_shape_is_refused_without_allocating() {
    let t = Tmp::new();
    let d = t.key0("huge");
    fs::write(d.join("out.0.npy"), raw_npy("<u4", false, "(1099511627776, 1024)", &[0; 8])).unwrap();
    assert_status(&check(&d), Status::Error, "truncated or padded");
}

#[test]
fn garbled_npy() {
    let t = Tmp::new();
    let d = t.key0("garbled");
    fs::write(d.join("out.0.npy"), b"this is not a numpy file at all").unwrap();
    assert_status(&check(&d), Status::Error, "unreadable header");
}

#[cfg(unix)]
#[test]
fn symlink_out_of_the_case_directory() {
    let t = Tmp::new();
    let d = t.key0("link");
    let outside = t.0.path().join("outside.npy");
    Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&outside).unwrap();
    fs::remove_file(d.join("out.0.npy")).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("out.0.npy")).unwrap();
    assert_status(&check(&d), Status::Error, "leads out of the case directory");
}

#[test]
fn unknown_rng_op() {
    let t = Tmp::new();
    let d = t.key0("op");
    fs::write(d.join("case.json"), KEY0_JSON.replace("NAME", "op").replace("\"key\"", "\"shuffle\"")).unwrap();
    assert_status(&check(&d), Status::Error, "unknown rng op (calls[0]) `shuffle`");
}

#[test]
fn missing_input_of_a_loss_case() {
    let t = Tmp::new();
    let d = t.0.path().join("loss_missing_x");
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("case.json"),
        r#"{"format": 1, "name": "loss_missing_x", "kind": "loss", "interface": {"type": "sit"},
            "network": {"type": "probe_mlp", "channels": 1, "hidden": 2, "freqs": 1},
            "rngs": {"time": 0, "noise": 1}, "shape": [1, 2, 1]}"#,
    )
    .unwrap();
    Array::f32(vec![1], vec![1.0]).unwrap().write_npy(&d.join("out.loss.npy")).unwrap();
    assert_status(&check(&d), Status::Error, "missing");
}

#[test]
fn unknown_interface_setting_is_refused() {
    let t = Tmp::new();
    let d = t.0.path().join("typo");
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join("case.json"),
        r#"{"format": 1, "name": "typo", "kind": "coefficients", "interface": {"type": "edm", "x_sigmaa": 0.5}, "t_shifts": []}"#,
    )
    .unwrap();
    Array::f32(vec![1], vec![1.0]).unwrap().write_npy(&d.join("in.t.npy")).unwrap();
    Array::f32(vec![1], vec![1.0]).unwrap().write_npy(&d.join("in.t_unit.npy")).unwrap();
    Array::f32(vec![1], vec![1.0]).unwrap().write_npy(&d.join("out.c_in.npy")).unwrap();
    assert_status(&check(&d), Status::Error, "unknown field `x_sigmaa`");
}
