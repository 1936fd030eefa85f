//! LightningDiT beyond the golden cases: exact JVPs through every switch (both backends
//! against a float64 central difference), MeanFlow on it with both backends, fused attention
//! falling back to the math kernel inside a JVP, the rotary and sin-cos tables against the
//! fixtures' buffers, and weight files.

mod common;

use std::path::Path;

use diffuse_spec::golden::{self, Array};
use diffuse_spec::interfaces::{Interface, MeanFlow, MeanFlowConfig};
use diffuse_spec::jvp::{jvp, JvpBackend};
use diffuse_spec::networks::{
    rope_tables, sincos_pos_embed_2d, Attention, Backbone, Cond, DitConfig, LayerNorm, LightningDit, LightningDitConfig, NormLayer, Pass, RmsQkNorm,
};
use diffuse_spec::rng::Rngs;
use tch::{Device, Kind, Tensor};

fn small(take_dt: bool) -> DitConfig {
    DitConfig {
        input_size: 8,
        patch_size: 2,
        in_channels: 3,
        hidden_size: 32,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        continuous_time_embed: true,
        freq_embed_size: 8,
        num_classes: 1000,
        class_dropout_prob: 0.3,
        take_dt,
        ..DitConfig::default()
    }
}

fn every_switch() -> LightningDitConfig {
    LightningDitConfig { qk_norm: true, ..LightningDitConfig::imagenet_switches(small(true)) }
}

fn no_switch() -> LightningDitConfig {
    LightningDitConfig { dit: DitConfig { continuous_time_embed: false, ..small(true) }, ..LightningDitConfig::default() }
}

fn rms_qk() -> LightningDitConfig {
    LightningDitConfig { attn_norm_layer: NormLayer::RmsNorm, rms_qk_norm: RmsQkNorm::Build, use_rope: true, ..every_switch() }
}

/// A model with every parameter random and non-zero ([`common::random_params`]).
fn random_net(cfg: &LightningDitConfig, seed: i64) -> LightningDit {
    let params = common::random_params(cfg.parameter_shapes(), seed);
    LightningDit::from_params(cfg.clone(), params, LightningDit::default_buffers(cfg, Device::Cpu).unwrap()).unwrap()
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
}

/// u(x_t, t, r) = net(x_t, t, dt = t - r, y): what MeanFlow differentiates.
fn u_fn<'a>(net: &'a LightningDit, y: &'a Tensor) -> impl FnMut(&[Tensor]) -> diffuse_spec::Result<Tensor> + 'a {
    move |p: &[Tensor]| {
        let dt = &p[1] - &p[2];
        Ok(net.forward(&p[0], &p[1], Cond { y: Some(y), dt: Some(&dt), ..Cond::default() }, Pass::eval())?.out)
    }
}

/// Every op of the forward (RoPE's rotate_half, RMSNorm's rsqrt, SwiGLU, the shared q/k
/// LayerNorm, the RMSNorm q/k norm of Q16's correction, both adaLN forms, the continuous and
/// sinusoidal embedders) has exact forward-AD and double-backward formulas: in float64 both
/// JVP backends agree with a central difference with Richardson extrapolation to 1e-8 and with
/// each other to rounding; in float32 the two backends agree to 1e-5.
#[test]
fn jvp_backends_agree_with_a_float64_central_difference_through_every_switch() {
    for (what, cfg) in [("every switch", every_switch()), ("no switch", no_switch()), ("RMSNorm q/k (Q16 built)", rms_qk())] {
        let net32 = random_net(&cfg, 5);
        let net = net32.to_double().unwrap();
        let mut r = Rngs::new(&[("data", 1)]).unwrap();
        let x = r.normal("data", &[3, 8, 8, 3], Device::Cpu).unwrap();
        let v = r.normal("data", &[3, 8, 8, 3], Device::Cpu).unwrap();
        let (x64, v64) = (x.to_kind(Kind::Double), v.to_kind(Kind::Double));
        let t = Tensor::from_slice(&[0.9f64, 0.5, 0.3]);
        let rr = Tensor::from_slice(&[0.1f64, 0.5, 0.0]);
        let y = Tensor::from_slice(&[3i64, 1000, 42]);
        let primals = [x64.shallow_clone(), t.shallow_clone(), rr.shallow_clone()];
        let tangents = [Some(v64.shallow_clone()), Some(t.ones_like()), None];
        let mut f = u_fn(&net, &y);
        let (_, db) = jvp(JvpBackend::DoubleBackward, &mut f, &primals, &tangents).unwrap();
        let (_, fa) = jvp(JvpBackend::ForwardAd, &mut f, &primals, &tangents).unwrap();
        let mut cdiff = |h: f64| {
            let plus = f(&[&x64 + &v64 * h, &t + h, rr.shallow_clone()]).unwrap();
            let minus = f(&[&x64 - &v64 * h, &t - h, rr.shallow_clone()]).unwrap();
            (plus - minus) / (2.0 * h)
        };
        let h = 1e-3;
        let cd = (cdiff(h / 2.0) * 4.0 - cdiff(h)) / 3.0;
        let (e_db, e_fa, e_ab) = (rel(&db, &cd), rel(&fa, &cd), rel(&fa, &db));
        // float32: both backends on the float32 network
        let (t32, r32) = (t.to_kind(Kind::Float), rr.to_kind(Kind::Float));
        let mut f32n = u_fn(&net32, &y);
        let p32 = [x.shallow_clone(), t32.shallow_clone(), r32];
        let tan32 = [Some(v.shallow_clone()), Some(t32.ones_like()), None];
        let (_, db32) = jvp(JvpBackend::DoubleBackward, &mut f32n, &p32, &tan32).unwrap();
        let (_, fa32) = jvp(JvpBackend::ForwardAd, &mut f32n, &p32, &tan32).unwrap();
        let (e32, e32_cd) = (rel(&fa32, &db32), rel(&fa32.to_kind(Kind::Double), &cd));
        println!(
            "{what}: float64 double-backward vs CD {e_db:.2e}, forward-AD vs CD {e_fa:.2e}, between {e_ab:.2e}; \
             float32 forward-AD vs double-backward {e32:.2e}, vs the float64 CD {e32_cd:.2e}"
        );
        assert!(e_db < 1e-8 && e_fa < 1e-8, "{what}: {e_db} {e_fa}");
        assert!(e_ab < 1e-12, "{what}: {e_ab}");
        assert!(e32 < 1e-5 && e32_cd < 1e-4, "{what}: {e32} {e32_cd}");
    }
}

/// libtorch's fused attention has neither forward-AD formulas nor double backward; inside a
/// JVP the network runs the math kernel whatever its setting, so a fused-attention
/// LightningDiT gives MeanFlow the same JVP as the math one (and the same forward outside).
#[test]
fn fused_attention_runs_the_math_kernel_inside_a_jvp() {
    let cfg = every_switch();
    let math = random_net(&cfg, 7);
    let fused = random_net(&cfg, 7).with_attention(Attention::Fused).with_layer_norm(LayerNorm::Fused);
    let mut r = Rngs::new(&[("data", 2)]).unwrap();
    let x = r.normal("data", &[2, 8, 8, 3], Device::Cpu).unwrap();
    let v = r.normal("data", &[2, 8, 8, 3], Device::Cpu).unwrap();
    let t = Tensor::from_slice(&[0.7f32, 0.2]);
    let rr = Tensor::from_slice(&[0.1f32, 0.2]);
    let y = Tensor::from_slice(&[1i64, 2]);
    let primals = [x.shallow_clone(), t.shallow_clone(), rr.shallow_clone()];
    let tangents = [Some(v.shallow_clone()), Some(t.ones_like()), None];
    let cond = Cond { y: Some(&y), dt: Some(&t), ..Cond::default() };
    let a = math.forward(&x, &t, cond, Pass::eval()).unwrap().out;
    let b = fused.forward(&x, &t, cond, Pass::eval()).unwrap().out;
    assert!(rel(&b, &a) < 1e-5, "fused forward {}", rel(&b, &a));
    for backend in [JvpBackend::ForwardAd, JvpBackend::DoubleBackward] {
        let (_, jm) = jvp(backend, &mut u_fn(&math, &y), &primals, &tangents).unwrap();
        let (_, jf) = jvp(backend, &mut u_fn(&fused, &y), &primals, &tangents).unwrap();
        println!("{backend:?}: fused-attention network's JVP vs the math one {:.2e}", rel(&jf, &jm));
        assert!(rel(&jf, &jm) < 1e-5, "{backend:?}");
    }
    assert!(!diffuse_spec::jvp::in_jvp());
}

/// MeanFlow on the ImageNet switches (+ qk-norm, dt): the loss, the stop-gradient target and
/// every parameter gradient agree between the JVP backends; the network's label dropout is
/// drawn in the JVP forward on the mixture path (Q8) with either backend.
#[test]
fn meanflow_on_lightning_dit_with_both_jvp_backends() {
    let cfg = every_switch();
    let mut r = Rngs::new(&[("data", 3)]).unwrap();
    let x = r.normal("data", &[4, 8, 8, 3], Device::Cpu).unwrap();
    let y = Tensor::from_slice(&[1i64, 2, 3, 1000]);
    let mut results = vec![];
    for backend in [JvpBackend::DoubleBackward, JvpBackend::ForwardAd] {
        let net = random_net(&cfg, 9);
        let mf = MeanFlow::new(MeanFlowConfig { jvp: backend, guidance_scale: 1.5, guidance_mixture_ratio: 0.5, fm_portion: 0.25, ..Default::default() }).unwrap();
        let mut rngs = Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)]).unwrap();
        let o = mf.loss(&net, &x, Cond::labels(Some(&y)), &mut rngs).unwrap();
        // condition drop + the JVP forward's label dropout
        assert_eq!(rngs.counter("label_dropout").unwrap(), 2, "{backend:?}");
        o.loss.mean(Kind::Float).backward();
        let grads: Vec<(String, Tensor)> = net.parameters().into_iter().map(|(k, p)| (k, p.grad())).collect();
        results.push((o.loss.detach(), o.target, grads));
    }
    let (a, b) = (&results[0], &results[1]);
    let (el, et) = (rel(&a.0, &b.0), rel(&a.1, &b.1));
    let mut worst = 0f64;
    for ((name, ga), (_, gb)) in a.2.iter().zip(&b.2) {
        if ga.defined() && gb.abs().max().double_value(&[]) > 0.0 {
            let e = rel(ga, gb);
            assert!(e < 1e-4, "{name}: {e}");
            worst = worst.max(e);
        }
    }
    println!("float32 MeanFlow: loss rel {el:.2e}, target rel {et:.2e}, worst gradient rel {worst:.2e}");
    assert!(el < 1e-5 && et < 1e-5, "{el} {et}");
}

fn ulp_worst(ours: &[f32], theirs: &[f32]) -> u64 {
    ours.iter().zip(theirs).map(|(&a, &e)| golden::ulp_distance(a, e).unwrap_or(u64::MAX).min(((a - e).abs() / f32::EPSILON) as u64)).max().unwrap_or(0)
}

fn lightning_cases(root: &Path) -> Vec<(std::path::PathBuf, LightningDitConfig)> {
    let mut out = vec![];
    for dir in golden::discover(root).unwrap() {
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let Some(net) = meta.get("network").and_then(|n| n.as_object()) else { continue };
        if net.get("type").and_then(|t| t.as_str()) != Some("lightning_dit") {
            continue;
        }
        let mut net = net.clone();
        for k in ["type", "param_seed", "description"] {
            net.remove(k);
        }
        out.push((dir, serde_json::from_value(serde_json::Value::Object(net)).unwrap()));
    }
    out
}

/// The buffers a fresh model computes ([`LightningDit::default_buffers`]: the sin-cos `pe`,
/// the rotary tables) equal the buffers of every LightningDiT case within one ulp (or one
/// ulp of 1 near zero): the fixtures' (jax's float32 cos / sin) and, where present, the
/// reference's own.
#[test]
fn recomputed_rope_and_pe_tables_equal_the_case_buffers() {
    let mut roots = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1")];
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/lightning");
    if shared.is_dir() {
        roots.push(shared);
    } else {
        eprintln!("SKIPPED (part): {} does not exist here; only the fixtures' buffers were compared", shared.display());
    }
    let mut n_rope = 0;
    for root in roots {
        for (dir, cfg) in lightning_cases(&root) {
            let read = |f: &str| Array::read_npy(&dir.join(f)).unwrap();
            let pe = sincos_pos_embed_2d(cfg.dit.hidden_size, cfg.dit.grid()).unwrap();
            let w_pe = ulp_worst(&pe, read("buffer.x_embedder.pe.npy").as_f32("pe").unwrap());
            let mut line = format!("{}: pe {w_pe} ulp", dir.file_name().unwrap().to_string_lossy());
            assert!(w_pe <= 1, "{line}");
            if cfg.use_rope {
                let (cos, sin) = rope_tables(cfg.dit.head_dim(), cfg.dit.grid()).unwrap();
                let (c, s) = (read("buffer.feat_rope.freqs_cos.npy"), read("buffer.feat_rope.freqs_sin.npy"));
                assert_eq!(c.shape, vec![cfg.dit.tokens() as usize, cfg.dit.head_dim() as usize]);
                let (wc, ws) = (ulp_worst(&cos, c.as_f32("cos").unwrap()), ulp_worst(&sin, s.as_f32("sin").unwrap()));
                line += &format!(", rope cos {wc} ulp, sin {ws} ulp");
                assert!(wc <= 1 && ws <= 1, "{line}");
                n_rope += 1;
            }
            eprintln!("{line}");
        }
    }
    assert!(n_rope >= 5, "only {n_rope} RoPE cases found");
}

/// Weights by reference path: a `.safetensors` file round-trips, and one without buffers gets
/// them computed; an `.npy` directory (the golden naming) loads the same model; a missing
/// parameter is refused by name.
#[test]
fn weights_round_trip_through_safetensors_and_npy_directories() {
    let cfg = rms_qk();
    let net = random_net(&cfg, 11);
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("w.safetensors");
    net.weights().write_safetensors(&st).unwrap();
    let back = LightningDit::load_safetensors(cfg.clone(), &st, Device::Cpu).unwrap();
    for ((k1, v1), (k2, v2)) in net.parameters().iter().zip(back.parameters()) {
        assert_eq!(k1, &k2);
        assert!(v1.equal(&v2), "{k1}");
    }
    assert!(back.rope().unwrap().0.equal(net.rope().unwrap().0));
    // without buffers: computed from the settings
    let mut w = net.weights();
    w.buffers.clear();
    w.write_safetensors(&st).unwrap();
    let back = LightningDit::load_safetensors(cfg.clone(), &st, Device::Cpu).unwrap();
    assert!(back.pos_embed().equal(net.pos_embed()) && back.rope().unwrap().1.equal(net.rope().unwrap().1));
    // an npy directory
    let npy = dir.path().join("npy");
    std::fs::create_dir_all(&npy).unwrap();
    let write = |name: &str, t: &Tensor| {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let v = Vec::<f32>::try_from(&t.detach().reshape([-1])).unwrap();
        Array::f32(shape, v).unwrap().write_npy(&npy.join(format!("{name}.npy"))).unwrap();
    };
    for (k, v) in net.parameters() {
        write(&format!("param.{k}"), &v);
    }
    for (k, v) in net.weights().buffers {
        write(&format!("buffer.{k}"), &v);
    }
    let back = LightningDit::load_npy_dir(cfg.clone(), &npy, Device::Cpu).unwrap();
    let x = Tensor::randn([2, 8, 8, 3], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0.3f32, 0.6]);
    let cond = Cond { dt: Some(&t), ..Cond::default() };
    assert!(back.forward(&x, &t, cond, Pass::eval()).unwrap().out.equal(&net.forward(&x, &t, cond, Pass::eval()).unwrap().out));
    std::fs::remove_file(npy.join("param.blocks.1.attn.k_norm.rms_weight.npy")).unwrap();
    let e = LightningDit::load_npy_dir(cfg, &npy, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("parameter blocks.1.attn.k_norm.rms_weight") && e.contains("missing"), "{e}");
}

/// The project's MeanFlow-on-LightningDiT fixtures with each JVP backend (`check` uses the
/// case's own, the default double backward, for the others).
#[test]
fn meanflow_lightning_fixtures_pass_with_both_jvp_backends() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1");
    let cases: Vec<_> = golden::discover(&root).unwrap().into_iter().filter(|c| c.file_name().unwrap().to_string_lossy().starts_with("mf_ldit_")).collect();
    assert_eq!(cases.len(), 2);
    for jvp in [JvpBackend::DoubleBackward, JvpBackend::ForwardAd] {
        let opts = golden::ReplayOptions { device: Device::Cpu, jvp: Some(jvp) };
        let rows: Vec<_> = cases.iter().flat_map(|c| golden::check_case_with(c, &opts)).collect();
        let bad: Vec<_> = rows.iter().filter(|r| r.status != golden::Status::Pass).cloned().collect();
        assert!(bad.is_empty(), "{jvp:?}:\n{}", golden::table(&bad));
    }
}
