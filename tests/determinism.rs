//! Determinism on CPU at a fixed thread count: the same case replayed twice in one process,
//! and in two processes (the CLI's `--dump`), gives bit-identical outputs. See
//! docs/errors-and-determinism.md for what changes with the thread count and on CUDA.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use diffuse_spec::golden::{replay, Array, ArrayData, Case, ReplayOptions};
use tch::Device;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_diffuse-spec");
/// The thread count every determinism test uses (set explicitly; libtorch's default
/// depends on the machine).
const THREADS: i32 = 2;

/// The shared cases named in issue 10: a SiT grad case and a MeanFlow grad case (JVP, guidance).
const SHARED: [&str; 2] = ["sit_uniform_b8_16x16x4", "meanflow_imagenet_cfg_b8"];

fn bits(a: &Array) -> (Vec<usize>, Vec<u32>) {
    let v = match &a.data {
        ArrayData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        ArrayData::I32(v) => v.iter().map(|&x| x as u32).collect(),
        ArrayData::U32(v) => v.clone(),
    };
    (a.shape.clone(), v)
}

fn replay_bits(dir: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u32>)> {
    tch::set_num_threads(THREADS);
    let case = Case::open(dir).unwrap();
    let out = replay::run(&case, &ReplayOptions::on(Device::Cpu)).unwrap();
    out.outputs.iter().map(|(k, a)| (k.clone(), bits(a))).collect()
}

/// A small probe_mlp grad case (SiT, labels) written into `root`, so that the tests run
/// where ../shared/golden is absent too. Its expected values are made up: only the
/// computed outputs matter here.
fn synthetic_case(root: &Path) -> PathBuf {
    let dir = root.join("synthetic_sit_grad");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("case.json"),
        r#"{"format": 1, "name": "synthetic_sit_grad", "kind": "grad", "interface": {"type": "sit", "train_time_dist_type": "logitnormal"},
            "network": {"type": "probe_mlp", "channels": 3, "hidden": 8, "freqs": 2},
            "rngs": {"time": 1, "noise": 2, "default": 3}, "shape": [4, 6, 6, 3]}"#,
    )
    .unwrap();
    let mut rngs = diffuse_spec::rng::Rngs::new(&[("default", 11)]).unwrap();
    let mut f = |shape: Vec<usize>, file: &str| {
        let n: usize = shape.iter().product();
        let v = rngs.stream("default").unwrap().normal(n);
        Array::f32(shape, v).unwrap().write_npy(&dir.join(file)).unwrap();
    };
    for (file, shape) in [
        ("param.E.npy", vec![1001, 8]),
        ("param.W1.npy", vec![3, 8]),
        ("param.W2.npy", vec![8, 3]),
        ("param.Wd.npy", vec![4, 8]),
        ("param.Wt.npy", vec![4, 8]),
        ("param.b1.npy", vec![8]),
        ("param.b2.npy", vec![3]),
        ("buffer.freqs.npy", vec![2]),
        ("in.x.npy", vec![4, 6, 6, 3]),
        ("out.loss.npy", vec![4]),
    ] {
        f(shape, file);
    }
    dir
}

fn cases(tmp: &Path) -> Vec<PathBuf> {
    let mut out = vec![synthetic_case(tmp)];
    if let Some(root) = common::shared_golden() {
        out.extend(SHARED.iter().map(|n| root.join(n)).filter(|p| p.is_dir()));
    }
    out
}

#[test]
fn the_same_case_twice_in_one_process_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in cases(tmp.path()) {
        let (a, b) = (replay_bits(&dir), replay_bits(&dir));
        assert!(a.contains_key("out.loss") && a.keys().any(|k| k.starts_with("grad.")), "{dir:?}: {:?}", a.keys());
        for (k, v) in &a {
            assert!(b[k] == *v, "{}: {k} differs between two replays in one process", dir.display());
        }
    }
}

fn dump(dirs: &[PathBuf], out: &Path, threads: i32) {
    let mut args: Vec<String> = vec!["check".into(), "--threads".into(), threads.to_string(), "--dump".into(), out.display().to_string()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    let o = Command::new(BIN).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"), "{stdout}");
    assert!(out.is_dir(), "--dump wrote nothing: {stdout}");
}

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for case in fs::read_dir(root).unwrap() {
        let case = case.unwrap().path();
        for f in fs::read_dir(&case).unwrap() {
            let f = f.unwrap().path();
            let key = format!("{}/{}", case.file_name().unwrap().to_string_lossy(), f.file_name().unwrap().to_string_lossy());
            out.insert(key, fs::read(&f).unwrap());
        }
    }
    out
}

#[test]
fn the_same_case_in_two_processes_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = cases(tmp.path());
    let (d1, d2) = (tmp.path().join("dump1"), tmp.path().join("dump2"));
    dump(&dirs, &d1, THREADS);
    dump(&dirs, &d2, THREADS);
    let (a, b) = (files(&d1), files(&d2));
    assert!(a.len() >= 10 * dirs.len(), "{:?}", a.keys());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(b[k] == *v, "{k} differs between two processes at {THREADS} threads");
    }
    // The dump of one process equals the in-process replay, bit for bit (the dump holds the
    // outputs the case expects, so those are the ones compared).
    let mut compared = 0;
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let case = Case::open(dir).unwrap();
        for (stem, want) in replay_bits(dir).into_iter().filter(|(s, _)| case.has(s)) {
            let got = bits(&Array::read_npy(&d1.join(&name).join(format!("{stem}.npy"))).unwrap());
            assert!(got == want, "{name}/{stem}: the dump differs from the in-process replay");
            compared += 1;
        }
    }
    assert!(compared >= 2 * dirs.len(), "compared only {compared} outputs");
}

#[test]
fn dumped_outputs_are_a_candidate_that_verify_accepts() {
    let Some(root) = common::shared_golden() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let golden = root.join(SHARED[0]);
    if !golden.is_dir() {
        return;
    }
    let d = tmp.path().join("dump");
    dump(std::slice::from_ref(&golden), &d, THREADS);
    let o = Command::new(BIN).args(["verify", "--golden", golden.to_str().unwrap(), "--candidate", d.to_str().unwrap()]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
}
