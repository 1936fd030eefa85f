//! More malformed cases (issue 10), beyond tests/malformed.rs: what a corrupted or hostile
//! directory can hold — case.json that is a FIFO, a symlink out, not UTF-8 or too large; a
//! `.npy` whose header lies about its length or declares an overflowing shape; settings
//! that would make the replay allocate without bound or index out of range. Each must give
//! an `ERROR` row with its own message: never a panic, a hang or a pass.

use std::fs;
use std::path::{Path, PathBuf};

use diffuse_spec::golden::{check_case, Array, Row, Status};
use tch::Device;

const KEY0_JSON: &str = r#"{"format": 1, "name": "NAME", "kind": "rng", "calls": [{"op": "key", "seed": 0}]}"#;

fn key0(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("case.json"), KEY0_JSON.replace("NAME", name)).unwrap();
    Array::u32(vec![2], vec![0, 0]).unwrap().write_npy(&dir.join("out.0.npy")).unwrap();
    dir
}

/// A `.npy` with an arbitrary header dict, version 1.0.
fn raw_npy(dict: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out.extend(payload);
    out
}

fn check(dir: &Path) -> Vec<Row> {
    check_case(dir, Device::Cpu)
}

#[track_caller]
fn assert_error(rows: &[Row], needle: &str) {
    let hit = rows.iter().any(|r| r.status == Status::Error && r.detail.contains(needle));
    assert!(hit, "expected an ERROR row mentioning {needle:?}, got {rows:#?}");
}

/// A probe_mlp loss case (SiT, x of shape [2, 3, 1]) with every file a valid case needs;
/// `json` replaces the default case.json text (`NAME` is replaced by the name).
fn probe_loss(root: &Path, name: &str, json: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    let default = r#"{"format": 1, "name": "NAME", "kind": "loss", "interface": {"type": "sit"},
        "network": {"type": "probe_mlp", "channels": 1, "hidden": 2, "freqs": 1},
        "rngs": {"time": 0, "noise": 1}, "shape": [2, 3, 1]}"#;
    fs::write(dir.join("case.json"), json.unwrap_or(default).replace("NAME", name)).unwrap();
    let f = |shape: Vec<usize>, file: &str| {
        let n = shape.iter().product();
        Array::f32(shape, vec![0.1; n]).unwrap().write_npy(&dir.join(file)).unwrap();
    };
    f(vec![1001, 2], "param.E.npy");
    f(vec![1, 2], "param.W1.npy");
    f(vec![2, 1], "param.W2.npy");
    f(vec![2, 2], "param.Wd.npy");
    f(vec![2, 2], "param.Wt.npy");
    f(vec![2], "param.b1.npy");
    f(vec![1], "param.b2.npy");
    f(vec![1], "buffer.freqs.npy");
    f(vec![2, 3, 1], "in.x.npy");
    f(vec![2], "out.loss.npy");
    dir
}

fn write_labels(dir: &Path, labels: &[i32]) {
    let dict = format!("{{'descr': '<i4', 'fortran_order': False, 'shape': ({},), }}", labels.len());
    let payload: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    fs::write(dir.join("in.y.npy"), raw_npy(&dict, &payload)).unwrap();
}

#[test]
fn the_probe_loss_helper_builds_a_case_that_replays() {
    // Sanity for the helpers below: without a defect the case replays (its expected values
    // are made up, so rows fail on values, but nothing errors).
    let t = tempfile::tempdir().unwrap();
    let rows = check(&probe_loss(t.path(), "ok", None));
    assert!(rows.iter().all(|r| r.status != Status::Error || r.detail.contains("lacks this expected output")), "{rows:#?}");
    write_labels(&t.path().join("ok"), &[3, 1000]);
    let rows = check(&t.path().join("ok"));
    assert!(rows.iter().all(|r| r.status != Status::Error || r.detail.contains("lacks this expected output")), "{rows:#?}");
}

// ---- case.json -------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn case_json_symlink_out_of_the_directory() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "jsonlink");
    let outside = t.path().join("elsewhere.json");
    fs::rename(d.join("case.json"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, d.join("case.json")).unwrap();
    assert_error(&check(&d), "leads out of the case directory");
}

#[cfg(unix)]
#[test]
fn case_json_that_is_a_fifo_does_not_hang() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "fifo");
    fs::remove_file(d.join("case.json")).unwrap();
    let ok = std::process::Command::new("mkfifo").arg(d.join("case.json")).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: mkfifo is not available");
        return;
    }
    assert_error(&check(&d), "not a regular file");
}

#[test]
fn case_json_that_is_a_directory() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "jsondir");
    fs::remove_file(d.join("case.json")).unwrap();
    fs::create_dir(d.join("case.json")).unwrap();
    // discover() would not call this a case; check_case on it directly must still refuse it.
    assert_error(&check(&d), "not a regular file");
}

#[test]
fn case_json_not_utf8() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "latin1");
    fs::write(d.join("case.json"), b"{\"format\": 1, \"name\": \"caf\xe9\"}").unwrap();
    assert_error(&check(&d), "not UTF-8");
}

#[test]
fn case_json_too_large() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "big");
    let pad = " ".repeat(diffuse_spec::golden::MAX_CASE_JSON_BYTES as usize);
    fs::write(d.join("case.json"), format!("{}{pad}", KEY0_JSON.replace("NAME", "big"))).unwrap();
    assert_error(&check(&d), "more than the 1048576 accepted");
}

#[test]
fn case_json_is_an_array() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "array");
    fs::write(d.join("case.json"), "[1, 2, 3]").unwrap();
    assert_error(&check(&d), "not a JSON object");
}

#[test]
fn case_json_nested_deeper_than_serde_allows() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "deep");
    fs::write(d.join("case.json"), format!("{}{}", "[".repeat(50_000), "]".repeat(50_000))).unwrap();
    assert_error(&check(&d), "recursion limit exceeded");
}

#[test]
fn case_json_without_kind() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "nokind");
    fs::write(d.join("case.json"), r#"{"format": 1, "name": "nokind", "calls": []}"#).unwrap();
    assert_error(&check(&d), "`kind` missing or not a string");
}

#[test]
fn parse_case_json_is_pure_and_names_the_case() {
    use diffuse_spec::golden::{parse_case_json, CaseKind};
    let c = parse_case_json(&KEY0_JSON.replace("NAME", "k"), "k").unwrap();
    assert_eq!(c.kind, CaseKind::Rng);
    let e = parse_case_json(r#"{"format": 1, "name": "k", "kind": 7}"#, "k").unwrap_err();
    assert!(matches!(&e, diffuse_spec::Error::Case { case, file: Some(f), .. } if case == "k" && f == "case.json"), "{e}");
}

// ---- files of the case -----------------------------------------------------------------

#[test]
fn a_subdirectory_in_a_case() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "subdir");
    fs::create_dir(d.join("in.x.npy")).unwrap();
    assert_error(&check(&d), "not a regular file");
}

#[cfg(unix)]
#[test]
fn a_dangling_symlink() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "dangling");
    std::os::unix::fs::symlink(d.join("nowhere.npy"), d.join("in.x.npy")).unwrap();
    assert_error(&check(&d), "I/O error");
}

#[cfg(unix)]
#[test]
fn an_npy_that_is_a_fifo_does_not_hang() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "npyfifo");
    fs::remove_file(d.join("out.0.npy")).unwrap();
    let ok = std::process::Command::new("mkfifo").arg(d.join("out.0.npy")).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: mkfifo is not available");
        return;
    }
    assert_error(&check(&d), "not a regular file");
}

// ---- .npy bytes ------------------------------------------------------------------------

#[test]
fn an_empty_npy_file() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "empty");
    fs::write(d.join("out.0.npy"), b"").unwrap();
    assert_error(&check(&d), "no .npy magic string");
}

#[test]
fn a_header_longer_than_the_file() {
    // Format 2.0 has a 32-bit header length: 4 GiB declared, a few bytes present. A reader
    // that allocated the declared length first would try to take 4 GiB.
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "hdrlen");
    let mut b = b"\x93NUMPY\x02\x00".to_vec();
    b.extend(u32::MAX.to_le_bytes());
    b.extend(b"{'descr': '<u4'");
    fs::write(d.join("out.0.npy"), b).unwrap();
    assert_error(&check(&d), "more than the 65536 accepted");
}

#[test]
fn a_shape_whose_element_count_overflows() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "overflow");
    fs::write(d.join("out.0.npy"), raw_npy("{'descr': '<u4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", &[0; 8])).unwrap();
    assert_error(&check(&d), "overflows");
}

#[test]
fn an_unknown_npy_version() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "version");
    let mut b = raw_npy("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }", &[0; 8]);
    b[6] = 9;
    fs::write(d.join("out.0.npy"), b).unwrap();
    assert_error(&check(&d), "format version 9.0");
}

#[test]
fn int64_labels_are_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "int64");
    fs::write(d.join("out.0.npy"), raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", &[0; 16])).unwrap();
    assert_error(&check(&d), "dtype `<i8`");
}

#[test]
fn a_header_with_an_unknown_key() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "hdrkey");
    fs::write(d.join("out.0.npy"), raw_npy("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), 'order': 'C'}", &[0; 8])).unwrap();
    assert_error(&check(&d), "unknown key `order`");
}

// ---- settings that used to panic or allocate without bound ------------------------------

#[test]
fn an_rng_call_with_an_enormous_shape() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "hugedraw");
    fs::write(d.join("case.json"), r#"{"format": 1, "name": "hugedraw", "kind": "rng", "calls": [{"op": "normal", "seed": 0, "shape": [1000000, 1000000, 1000]}]}"#).unwrap();
    assert_error(&check(&d), "invalid argument `calls[0].shape`: expected at most 16777216 elements");
}

#[test]
fn an_rng_call_with_a_negative_dimension() {
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "negdraw");
    fs::write(d.join("case.json"), r#"{"format": 1, "name": "negdraw", "kind": "rng", "calls": [{"op": "bits", "seed": 0, "shape": [2, -1]}]}"#).unwrap();
    assert_error(&check(&d), "invalid argument `calls[0].shape`: expected non-negative dimensions");
}

#[test]
fn a_legacy_split_too_large_for_its_uint32_iota() {
    // Key::split_with(Legacy, n) asserts 2 n < 2^32; the replay refuses first.
    let t = tempfile::tempdir().unwrap();
    let d = key0(t.path(), "split");
    fs::write(
        d.join("case.json"),
        r#"{"format": 1, "name": "split", "kind": "rng", "threefry_partitionable": false, "calls": [{"op": "split", "seed": 0, "num": 3000000000}]}"#,
    )
    .unwrap();
    assert_error(&check(&d), "invalid argument `calls[0].num`");
}

#[test]
fn a_loss_case_with_an_empty_shape() {
    // `shape[..1]` of an empty shape used to panic when in.y was present.
    let t = tempfile::tempdir().unwrap();
    let json = r#"{"format": 1, "name": "NAME", "kind": "loss", "interface": {"type": "sit"},
        "network": {"type": "probe_mlp", "channels": 1, "hidden": 2, "freqs": 1},
        "rngs": {"time": 0, "noise": 1}, "shape": []}"#;
    let d = probe_loss(t.path(), "noshape", Some(json));
    write_labels(&d, &[1, 2]);
    assert_error(&check(&d), "expected [B, ..., C] with at least 2 positive dimensions");
}

#[test]
fn labels_out_of_range_are_an_error_not_a_nan() {
    // Quirk Q10: the reference reads the class table out of range and gets NaN.
    let t = tempfile::tempdir().unwrap();
    let d = probe_loss(t.path(), "label1001", None);
    write_labels(&d, &[3, 1001]);
    assert_error(&check(&d), "class labels in 0..=1000");
    write_labels(&d, &[-1, 0]);
    assert_error(&check(&d), "labels in [-1, 0]");
}

#[test]
fn labels_of_the_wrong_length() {
    let t = tempfile::tempdir().unwrap();
    let d = probe_loss(t.path(), "label3", None);
    write_labels(&d, &[1, 2, 3]);
    assert_error(&check(&d), "shape [3] where [2] is expected");
}

#[test]
fn float_labels() {
    let t = tempfile::tempdir().unwrap();
    let d = probe_loss(t.path(), "labelf", None);
    Array::f32(vec![2], vec![1.0, 2.0]).unwrap().write_npy(&d.join("in.y.npy")).unwrap();
    assert_error(&check(&d), "dtype <f4 where <i4 is expected");
}

#[test]
fn data_with_a_nan() {
    let t = tempfile::tempdir().unwrap();
    let d = probe_loss(t.path(), "nan", None);
    Array::f32(vec![2, 3, 1], vec![0.0, 1.0, f32::NAN, 0.0, 0.0, 0.0]).unwrap().write_npy(&d.join("in.x.npy")).unwrap();
    assert_error(&check(&d), "invalid argument `x`: expected finite values, got NaN or infinity");
}

#[test]
fn a_parameter_of_the_wrong_shape() {
    let t = tempfile::tempdir().unwrap();
    let d = probe_loss(t.path(), "paramshape", None);
    Array::f32(vec![1000, 2], vec![0.0; 2000]).unwrap().write_npy(&d.join("param.E.npy")).unwrap();
    assert_error(&check(&d), "invalid argument `params.E`: expected shape [1001, 2], got [1000, 2]");
}

#[test]
fn an_unknown_time_distribution() {
    let t = tempfile::tempdir().unwrap();
    let json = r#"{"format": 1, "name": "NAME", "kind": "loss", "interface": {"type": "sit", "train_time_dist_type": "gaussian"},
        "network": {"type": "probe_mlp", "channels": 1, "hidden": 2, "freqs": 1},
        "rngs": {"time": 0, "noise": 1}, "shape": [2, 3, 1]}"#;
    let d = probe_loss(t.path(), "timedist", Some(json));
    assert_error(&check(&d), "unknown variant `gaussian`");
}

#[test]
fn an_unknown_network() {
    let t = tempfile::tempdir().unwrap();
    let json = r#"{"format": 1, "name": "NAME", "kind": "loss", "interface": {"type": "sit"},
        "network": {"type": "unet"}, "rngs": {"time": 0, "noise": 1}, "shape": [2, 3, 1]}"#;
    let d = probe_loss(t.path(), "unet", Some(json));
    assert_error(&check(&d), "unknown network `unet`");
}

// ---- the CLI over a directory of broken cases --------------------------------------------

#[test]
fn the_cli_survives_a_directory_of_broken_cases() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    key0(root, "good");
    let d = key0(root, "garbled");
    fs::write(d.join("out.0.npy"), b"\x93NUMPY\x01\x00\xff\xff{").unwrap();
    let d = key0(root, "badjson");
    fs::write(d.join("case.json"), b"\xff\xfe{").unwrap();
    let d = key0(root, "huge");
    fs::write(d.join("case.json"), r#"{"format": 1, "name": "huge", "kind": "rng", "calls": [{"op": "split", "seed": 0, "num": 18446744073709551615}]}"#).unwrap();
    let d = probe_loss(root, "q10", None);
    write_labels(&d, &[0, 4000]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_diffuse-spec")).arg("check").arg(root).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // ERROR rows (unreadable files, a case that cannot be replayed) exit 3.
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.contains("1 passed, 4 failed"), "{out}");
    for needle in ["unreadable header", "not UTF-8", "calls[0].num", "0..=1000"] {
        assert!(out.contains(needle), "no row says {needle:?}:\n{out}");
    }
}
