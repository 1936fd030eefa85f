//! The torch cross-check (`fixtures/dino_torch`, written by `spec/scripts/dino_torch_xcheck.py`
//! from the weights and input of `fixtures/v1/dino_encode_b1_288_q19`; see fixtures/README.md):
//!
//! 1. transformers' own Flax -> PyTorch conversion of the case's weights (`model.safetensors`,
//!    `config.json`), read by the crate's Hugging Face loader, equals the case's Flax weights;
//! 2. [`DinoOptions::torch`] is torch's pipeline: its pixels and position tables equal torch's
//!    bit for bit, its features agree as two float32 ViTs do;
//! 3. the default options are the reference's (its 512 features and 16 -> 32 table);
//! 4. the drift table of docs/dino.md — how far torch's pipeline lands from the reference —
//!    recomputed here with the crate's two options, equals the recorded one row by row.

use std::path::{Path, PathBuf};

use diffuse_spec::encoders::{load_hf_safetensors, BatchedTable, BicubicResize, Dino, DinoConfig, DinoOptions, FeatureEncoder, TableResize};
use diffuse_spec::golden::{self, Array, Tolerance};
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn xcheck() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("dino_torch/xcheck.json")).unwrap()).unwrap()
}

fn case_dir() -> PathBuf {
    root().join("v1").join(xcheck()["source_case"].as_str().unwrap())
}

fn npy(path: &Path) -> Tensor {
    Array::read_npy(path).unwrap().to_tensor(Device::Cpu).unwrap()
}

fn case_config() -> DinoConfig {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case_dir().join("case.json")).unwrap()).unwrap();
    let mut enc = meta["encoder"].as_object().unwrap().clone();
    for k in ["type", "stage", "param_seed", "intermediate_size"] {
        enc.remove(k);
    }
    serde_json::from_value(serde_json::Value::Object(enc)).unwrap()
}

fn reference_model() -> Dino {
    Dino::load_npy_dir(case_config(), &case_dir(), Device::Cpu).unwrap()
}

fn with(opts: DinoOptions) -> Dino {
    reference_model().with_options(opts)
}

fn compare(name: &str, actual: &Tensor, expected: &Tensor, tol: Tolerance) {
    let c = golden::compare(&Array::from_tensor(actual).unwrap(), &Array::from_tensor(expected).unwrap(), tol);
    eprintln!("{name}: worst ulp {:?}, worst rel {:.3e}, max |d| {:.3e}", c.worst_ulp, c.worst_rel, c.max_abs);
    assert!(c.passed, "{name}: {}", c.detail());
}

/// `v_c = 4 (h (S-1-h) + w (S-1-w)) (3 - c) / (3 (S-1)^2) - 1`, as the script computes it.
fn smooth(s: i64) -> Tensor {
    let mut v = Vec::with_capacity((s * s * 3) as usize);
    let den = (3 * (s - 1) * (s - 1)) as f32;
    for h in 0..s {
        for w in 0..s {
            for c in 0..3 {
                let num = (4 * (h * (s - 1 - h) + w * (s - 1 - w)) * (3 - c)) as f32;
                v.push(num / den - 1.0);
            }
        }
    }
    Tensor::from_slice(&v).reshape([1, s, s, 3])
}

/// `v = ((131 h + 71 w + 37 c + (h w mod 97)) mod 256) / 127.5 - 1`, as the script computes it.
fn texture(s: i64) -> Tensor {
    let mut v = Vec::with_capacity((s * s * 3) as usize);
    for h in 0..s {
        for w in 0..s {
            for c in 0..3 {
                let k = ((131 * h + 71 * w + 37 * c + (h * w) % 97) % 256) as f32;
                v.push(k / 127.5 - 1.0);
            }
        }
    }
    Tensor::from_slice(&v).reshape([1, s, s, 3])
}

#[test]
fn the_fixture_was_made_from_the_committed_case() {
    let x = xcheck();
    for (file, sha) in x["source_sha256"].as_object().unwrap() {
        let bytes = std::fs::read(case_dir().join(file)).unwrap();
        let got: String = {
            use sha2::Digest;
            sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
        };
        assert_eq!(&got, sha.as_str().unwrap(), "{file} changed since fixtures/dino_torch was written: run `make dino-xcheck`");
    }
}

#[test]
fn transformers_conversion_loads_as_the_flax_weights() {
    let cfg = DinoConfig::from_hf_config_json(&std::fs::read_to_string(root().join("dino_torch/config.json")).unwrap()).unwrap();
    assert_eq!(cfg, case_config());
    let hf = load_hf_safetensors(cfg, &root().join("dino_torch/model.safetensors"), Device::Cpu, None).unwrap();
    let flax = reference_model();
    assert_eq!(hf.params().len(), flax.params().len());
    for (k, v) in flax.params() {
        assert!(hf.params()[k].equal(v), "{k} differs after transformers' conversion and the crate's");
    }
}

#[test]
fn torch_options_are_torchs_pipeline() {
    let d = root().join("dino_torch");
    let t = with(DinoOptions::torch());
    let x = npy(&case_dir().join("in.x.npy"));
    let o = t.encode_with_pixels(&x).unwrap();
    compare("torch pixels 288", &o.pixels, &npy(&d.join("torch_pixels_288.npy")), Tolerance::EXACT);
    compare("torch features 288", &o.features, &npy(&d.join("torch_features_288.npy")), Tolerance::close(1e-5, 4e-6));
    compare("torch table 32", &t.position_table(32, 32).unwrap(), &npy(&d.join("torch_table_32.npy")), Tolerance::EXACT);
    compare("torch features 512", &t.encode(&smooth(512)).unwrap(), &npy(&d.join("torch_features_512.npy")), Tolerance::close(1e-5, 4e-6));
}

#[test]
fn default_options_are_the_references() {
    let d = root().join("dino_torch");
    let r = reference_model();
    assert_eq!(r.options(), DinoOptions::default());
    // the script resized the table eagerly (jnp.einsum on Eigen's blocked dot); the crate
    // follows XLA's compiled FMA chain: 1.6e-6 apart at most (8e-7 of the table's scale)
    compare("reference table 32", &r.position_table(32, 32).unwrap(), &npy(&d.join("reference_table_32.npy")), Tolerance::close(1e-5, 2e-6));
    compare("reference features 512", &r.encode(&smooth(512)).unwrap(), &npy(&d.join("reference_features_512.npy")), Tolerance::close(1e-5, 4e-6));
}

/// The drift metrics of the script: max |d|, max |d| / max |ref|, rms(d) / rms(ref) and, for
/// features, the mean over tokens of 1 - cos.
fn drift(reference: &Tensor, other: &Tensor) -> Vec<(&'static str, f64)> {
    let r = reference.to_kind(Kind::Double);
    let o = other.to_kind(Kind::Double);
    let d = &o - &r;
    let max_abs = d.abs().max().double_value(&[]);
    let mut out = vec![
        ("max_abs", max_abs),
        ("max_rel_scale", max_abs / r.abs().max().double_value(&[])),
        ("rms_rel", (d.square().mean(Kind::Double).sqrt() / r.square().mean(Kind::Double).sqrt()).double_value(&[])),
    ];
    if r.dim() == 3 {
        let cos = (&r * &o).sum_dim_intlist(&[-1i64][..], false, Kind::Double) / (r.norm_scalaropt_dim(2, [-1i64], false) * o.norm_scalaropt_dim(2, [-1i64], false));
        out.push(("one_minus_cos", (cos.ones_like() - &cos).mean(Kind::Double).double_value(&[])));
    }
    out
}

#[test]
fn drift_table_is_reproduced_by_the_crates_two_options() {
    let reference = reference_model();
    let torch = with(DinoOptions::torch());
    let resize_only = with(DinoOptions { resize: BicubicResize::Torch, ..DinoOptions::default() });
    let table_only = with(DinoOptions { table_resize: TableResize::Torch, batched_table: BatchedTable::Broadcast, ..DinoOptions::default() });
    let x288 = npy(&case_dir().join("in.x.npy"));
    let (x512, x768) = (smooth(512), texture(768));
    let pix = |m: &Dino, x: &Tensor| m.preprocess(x).unwrap();
    let feat = |m: &Dino, x: &Tensor| m.encode(x).unwrap();
    let rows: Vec<(&str, Vec<(&str, f64)>)> = vec![
        ("pixels_288_noise", drift(&pix(&reference, &x288), &pix(&torch, &x288))),
        ("features_288_noise", drift(&feat(&reference, &x288), &feat(&torch, &x288))),
        ("table_32", drift(&reference.position_table(32, 32).unwrap(), &torch.position_table(32, 32).unwrap())),
        ("table_48", drift(&reference.position_table(48, 48).unwrap(), &torch.position_table(48, 48).unwrap())),
        ("pixels_512_smooth", drift(&pix(&reference, &x512), &pix(&torch, &x512))),
        ("features_512_smooth", drift(&feat(&reference, &x512), &feat(&torch, &x512))),
        ("features_512_smooth_resize_only", drift(&feat(&reference, &x512), &feat(&resize_only, &x512))),
        ("features_512_smooth_table_only", drift(&feat(&reference, &x512), &feat(&table_only, &x512))),
        ("pixels_768_texture", drift(&pix(&reference, &x768), &pix(&torch, &x768))),
        ("features_768_texture", drift(&feat(&reference, &x768), &feat(&torch, &x768))),
    ];
    let recorded = xcheck();
    let recorded = recorded["rows"].as_array().unwrap();
    assert_eq!(recorded.len(), rows.len());
    for ((name, metrics), rec) in rows.iter().zip(recorded) {
        assert_eq!(rec["row"].as_str(), Some(*name));
        for (m, v) in metrics {
            let want = rec[*m].as_f64().unwrap_or_else(|| panic!("{name}: no {m} recorded"));
            eprintln!("{name:34} {m:14} crate {v:.4e}  recorded {want:.4e}");
            // the recorded side ran torch's own ViT against the reference's; here both options
            // share the crate's ViT: measured within 1.4e-4 of each other (relative), pinned at 0.5 %
            assert!((v - want).abs() <= 5e-3 * want.abs(), "{name} {m}: crate {v:.4e}, recorded {want:.4e}");
        }
    }
}
