//! The fused JVP (`JvpBackend::Fused`: each backbone's own primal-and-tangent pass) against
//! both autograd backends on every case whose loss takes a JVP (MeanFlow, sCT, sCD, REPA
//! around MeanFlow): the project's fixtures and, where they sit beside the checkout, the
//! reference's golden cases. Per case, every computed quantity of the fused replay agrees with
//! the double-backward and the forward-AD replays to 1e-5 relative (max |a - b| over the
//! array's largest magnitude), the random draws are the same bit for bit (stream, counter,
//! shape, values, order), and every golden quantity passes with the fused backend.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use diffuse_spec::golden::{self, replay, ArrayData, Case, CaseKind, NetworkType, ReplayOptions, Status};
use diffuse_spec::jvp::JvpBackend;
use tch::Device;

const REL: f64 = 1e-5;

/// The backbones with a fused JVP: every network of the format.
const FUSED: &[NetworkType] = &NetworkType::ALL;

/// Loss / grad cases whose interface takes a JVP.
fn jvp_cases(root: &Path) -> Vec<PathBuf> {
    golden::discover(root)
        .expect("discover cases")
        .into_iter()
        .filter(|p| {
            let c = Case::open(p).expect("open case");
            matches!(c.kind, CaseKind::Loss | CaseKind::Grad) && c.header.interface.is_some_and(|i| i.jvp_based()) && FUSED.contains(&c.header.network.unwrap_or(NetworkType::ProbeMlp))
        })
        .collect()
}

fn values(d: &ArrayData) -> Vec<f64> {
    match d {
        ArrayData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        ArrayData::I32(v) => v.iter().map(|&x| x as f64).collect(),
        ArrayData::U32(v) => v.iter().map(|&x| x as f64).collect(),
    }
}

/// `max |a - b| / max |b|` (0 for two zero arrays).
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let s = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    if d == 0.0 {
        0.0
    } else {
        d / s.max(1e-300)
    }
}

fn family(stem: &str) -> String {
    if stem.ends_with("attn.key.bias") {
        "grad.*key.bias".into()
    } else if stem.starts_with("grad.") {
        "grad.*".into()
    } else {
        stem.into()
    }
}

/// Replays `cases` with the three backends and asserts the agreement; prints the worst
/// relative difference per (interface, quantity) against each autograd backend.
fn fused_agrees_with_both_autograd_backends(label: &str, cases: &[PathBuf]) {
    let opts = |b| ReplayOptions { device: Device::Cpu, jvp: Some(b) };
    let mut worst: BTreeMap<(String, String), [f64; 2]> = BTreeMap::new();
    let mut failures = Vec::new();
    for path in cases {
        let case = Case::open(path).expect("open case");
        let fused = replay::run(&case, &opts(JvpBackend::Fused)).unwrap_or_else(|e| panic!("{}: fused replay: {e}", case.name));
        let iface = case.header.interface.map(|i| i.as_str()).unwrap_or("?").to_string();
        for (k, backend) in [JvpBackend::DoubleBackward, JvpBackend::ForwardAd].into_iter().enumerate() {
            let case = Case::open(path).expect("open case");
            let other = replay::run(&case, &opts(backend)).unwrap_or_else(|e| panic!("{}: {backend:?} replay: {e}", case.name));
            assert_eq!(fused.outputs.keys().collect::<Vec<_>>(), other.outputs.keys().collect::<Vec<_>>(), "{}: the same quantities", case.name);
            assert_eq!(fused.draws, other.draws, "{}: the fused pass draws what {backend:?} draws, in the same order", case.name);
            // The attention key bias has an exactly zero true gradient (the softmax ignores it):
            // its rounding noise is measured against the case's largest gradient, as the golden
            // tolerances do.
            let grad_scale = other.outputs.iter().filter(|(k, _)| k.starts_with("grad.")).map(|(_, a)| values(&a.data).iter().map(|v| v.abs()).fold(0.0, f64::max)).fold(0.0, f64::max);
            for (stem, a) in &fused.outputs {
                let b = &other.outputs[stem];
                assert_eq!(a.shape, b.shape, "{} {stem}", case.name);
                let (va, vb) = (values(&a.data), values(&b.data));
                let e = if stem.ends_with("attn.key.bias") {
                    va.iter().zip(&vb).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / grad_scale.max(1e-300)
                } else {
                    rel(&va, &vb)
                };
                let w = worst.entry((iface.clone(), family(stem))).or_insert([0.0; 2]);
                w[k] = w[k].max(e);
                if e > REL {
                    failures.push(format!("{} {stem}: fused vs {backend:?} {e:.2e}", case.name));
                }
            }
        }
        let rows = golden::check_case_with(path, &opts(JvpBackend::Fused));
        let bad: Vec<_> = rows.into_iter().filter(|r| r.status != Status::Pass).collect();
        assert!(bad.is_empty(), "{} with the fused JVP:\n{}", case.name, golden::table(&bad));
    }
    println!("{label}: {} cases; worst relative difference of the fused replay (vs double backward, vs forward AD):", cases.len());
    for ((iface, q), [a, b]) in &worst {
        println!("  {iface:10} {q:14} {a:.2e} {b:.2e}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn project_fixtures_fused_against_both_autograd_backends() {
    let cases = jvp_cases(&common::fixtures());
    assert!(cases.len() >= 19, "expected the MeanFlow / sCT / sCD / REPA-MeanFlow loss fixtures, found {}", cases.len());
    fused_agrees_with_both_autograd_backends("fixtures/v1", &cases);
}

#[test]
fn shared_golden_cases_fused_against_both_autograd_backends() {
    let Some(root) = common::shared_golden() else { return };
    let cases = jvp_cases(&root);
    assert!(cases.len() >= 3, "expected the reference's MeanFlow cases, found {}", cases.len());
    fused_agrees_with_both_autograd_backends("golden/v1", &cases);
    // The reference's LightningDiT set beside it: MeanFlow gradients with label dropout.
    let Some(lightning) = common::shared_set("lightning") else { return };
    let cases = jvp_cases(&lightning);
    assert!(!cases.is_empty(), "expected the reference's LightningDiT MeanFlow case in {}", lightning.display());
    fused_agrees_with_both_autograd_backends("golden/lightning", &cases);
}

/// An explicit `Fused` for a backbone without a fused JVP is refused, naming the backend;
/// `Auto` falls back to double backward there.
#[test]
fn explicit_fused_without_a_fused_pass_is_an_error_and_auto_falls_back() {
    use diffuse_spec::jvp::{network_jvp, NetTangents};
    use diffuse_spec::networks::{Backbone, Cond, Pass, VarStoreBackbone};
    use tch::{nn, Kind, Tensor};
    let vs = nn::VarStore::new(Device::Cpu);
    let l = nn::linear(vs.root() / "l", 3, 2, Default::default());
    let net = VarStoreBackbone::new(vs, move |x, t, _c, _p| Ok(nn::Module::forward(&l, &Tensor::cat(&[x, &t.unsqueeze(-1)], -1))));
    assert!(net.fused_jvp().is_none());
    let x = Tensor::randn([4, 2], (Kind::Float, Device::Cpu));
    let t = Tensor::rand([4], (Kind::Float, Device::Cpu));
    let (vx, vt) = (x.randn_like(), t.ones_like());
    let tan = NetTangents { x: &vx, t: &vt, dt: None };
    let e = network_jvp(JvpBackend::Fused, &net, &x, &t, Cond::none(), tan, Pass::eval()).unwrap_err();
    assert!(matches!(&e, diffuse_spec::Error::Unsupported { what, .. } if what.contains("Fused")), "{e}");
    let (_, a) = network_jvp(JvpBackend::Auto, &net, &x, &t, Cond::none(), tan, Pass::eval()).unwrap();
    let (_, b) = network_jvp(JvpBackend::DoubleBackward, &net, &x, &t, Cond::none(), tan, Pass::eval()).unwrap();
    assert!(a.equal(&b));
    assert_eq!(JvpBackend::default(), JvpBackend::Auto);
    for b in [JvpBackend::Auto, JvpBackend::Fused, JvpBackend::DoubleBackward, JvpBackend::ForwardAd] {
        assert_eq!(JvpBackend::from_name(b.name()).unwrap(), b);
    }
}

mod central {
    use diffuse_spec::jvp::{network_jvp, JvpBackend, NetTangents};
    use diffuse_spec::networks::{Backbone, Cond, Pass};
    use tch::Tensor;

    pub fn rel(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
    }

    /// A float64 backbone's fused JVP at `(x, t, dt)` along `(vx, vt, vdt)` against a
    /// Richardson-extrapolated central difference (`(4 D(h/2) - D(h)) / 3`, truncation
    /// `O(h^4)`) and both autograd backends; the primal and features equal the plain forward
    /// bit for bit, the primal keeps a graph and the tangent has none. Returns the errors
    /// (vs the central difference, vs double backward, vs forward AD).
    #[allow(clippy::too_many_arguments)]
    pub fn check(name: &str, net: &dyn Backbone, x: &Tensor, t: &Tensor, y: Option<&Tensor>, dt: Option<&Tensor>, gw: Option<&Tensor>, v: (&Tensor, &Tensor, Option<&Tensor>), train: bool) -> [f64; 3] {
        let cond = Cond { y, dt, gw, ..Cond::default() };
        let tan = NetTangents { x: v.0, t: v.1, dt: v.2 };
        let pass = || Pass::new(train, None);
        let (o, fused) = network_jvp(JvpBackend::Fused, net, x, t, cond, tan, pass()).unwrap();
        let plain = net.call(x, t, cond, pass()).unwrap();
        assert!(o.out.equal(&plain.out), "{name}: the fused primal is the plain forward, bit for bit");
        assert_eq!(o.features.len(), plain.features.len());
        for (a, b) in o.features.iter().zip(&plain.features) {
            assert!(a.equal(b), "{name}: features");
        }
        assert!(o.out.requires_grad(), "{name}: the primal keeps its graph");
        assert!(!fused.requires_grad(), "{name}: the tangent has none");
        let (_, db) = network_jvp(JvpBackend::DoubleBackward, net, x, t, cond, tan, pass()).unwrap();
        let (_, fa) = network_jvp(JvpBackend::ForwardAd, net, x, t, cond, tan, pass()).unwrap();
        let at = |h: f64| {
            let xs = x + v.0 * h;
            let ts = t + v.1 * h;
            let dts = dt.map(|d| match v.2 {
                Some(vd) => d + vd * h,
                None => d.shallow_clone(),
            });
            tch::no_grad(|| net.call(&xs, &ts, Cond { y, dt: dts.as_ref(), gw, ..Cond::default() }, pass()).unwrap().out)
        };
        let d = |h: f64| (at(h) - at(-h)) / (2.0 * h);
        let h = 1e-4;
        let cd = (d(h / 2.0) * 4.0 - d(h)) / 3.0;
        let e = [rel(&fused, &cd), rel(&fused, &db), rel(&fused, &fa)];
        println!("{name:50} fused vs central difference {:.2e}, vs double backward {:.2e}, vs forward AD {:.2e}", e[0], e[1], e[2]);
        e
    }
}

/// The probe's fused JVP in float64, with and without `dt` and labels, on `[B, T, C]` and
/// `[B, H, W, C]` inputs, with tangents on every input and on each alone.
#[test]
fn probe_fused_jvp_matches_a_float64_central_difference() {
    use diffuse_spec::networks::{ProbeMlp, ProbeMlpConfig};
    use tch::{Kind, Tensor};
    let net = ProbeMlp::init_with_kind(ProbeMlpConfig { channels: 3, hidden: 24, freqs: 5 }, 4, Device::Cpu, Kind::Double).unwrap();
    let f64s = (Kind::Double, Device::Cpu);
    tch::manual_seed(5);
    for shape in [&[4i64, 6, 3][..], &[4, 2, 3, 3]] {
        let x = Tensor::randn(shape, f64s);
        let t = Tensor::from_slice(&[0.1f64, 0.5, 0.7, 0.95]);
        let dt = Tensor::from_slice(&[0.05f64, 0.0, 0.3, 0.9]);
        let y = Tensor::from_slice(&[0i64, 1000, 7, 999]);
        let (vx, vt, vdt) = (x.randn_like(), t.randn_like(), dt.randn_like());
        let zx = x.zeros_like();
        let zt = t.zeros_like();
        for (what, v) in [
            ("all tangents", (&vx, &vt, Some(&vdt))),
            ("x only", (&vx, &zt, None)),
            ("t only", (&zx, &vt, None)),
            ("dt only", (&zx, &zt, Some(&vdt))),
        ] {
            for (labels, dt_in) in [(true, true), (false, true), (true, false)] {
                if what == "dt only" && !dt_in {
                    continue; // nothing moves
                }
                let v = if dt_in { v } else { (v.0, v.1, None) };
                let name = format!("probe {shape:?} {what}, labels {labels}, dt {dt_in}");
                let e = central::check(&name, &net, &x, &t, labels.then_some(&y), dt_in.then_some(&dt), None, v, true);
                assert!(e[0] < 1e-9 && e[1] < 1e-12 && e[2] < 1e-12, "{name}: {e:?}");
            }
        }
    }
}

mod dits {
    use diffuse_spec::networks::{Attention, DitConfig, LayerNorm, LightningDitConfig, NormLayer, RmsQkNorm};

    pub fn small(take_dt: bool, take_gw: bool, continuous: bool, freqs: i64) -> DitConfig {
        DitConfig {
            input_size: 8,
            patch_size: 2,
            in_channels: 3,
            hidden_size: 32,
            depth: 2,
            num_heads: 2,
            mlp_ratio: 2.0,
            continuous_time_embed: continuous,
            freq_embed_size: freqs,
            num_classes: 1000,
            class_dropout_prob: 0.3,
            take_dt,
            take_gw,
            ..DitConfig::default()
        }
    }

    /// (name, settings, attention, LayerNorm) of the DiT checks: both embedders (an odd
    /// frequency count pads a zero column), with and without `dt` / `gw`, both LayerNorms and
    /// both attention kernels.
    pub fn dit_variants() -> Vec<(String, DitConfig, Attention, LayerNorm)> {
        let mut v = Vec::new();
        for (what, cfg) in [
            ("sinusoidal, dt", small(true, false, false, 8)),
            ("sinusoidal odd F, dt, gw", small(true, true, false, 9)),
            ("continuous, dt", small(true, false, true, 8)),
            ("continuous, no dt", small(false, false, true, 8)),
        ] {
            for (a, n) in [(Attention::Math, LayerNorm::FastVariance), (Attention::Fused, LayerNorm::Fused)] {
                v.push((format!("DiT {what}, {a:?} attention, {n:?} LayerNorm"), cfg.clone(), a, n));
            }
        }
        v
    }

    /// The LightningDiT checks: every switch on, every switch off, RMSNorm q/k (Q16 built),
    /// adaLN without shift but RMSNorm, each on both kernels (the fused LayerNorm takes the
    /// two-pass q/k norm).
    pub fn lightning_variants() -> Vec<(String, LightningDitConfig, Attention, LayerNorm)> {
        let every = LightningDitConfig { qk_norm: true, ..LightningDitConfig::imagenet_switches(small(true, false, true, 8)) };
        let none = LightningDitConfig { dit: small(true, false, false, 8), ..LightningDitConfig::default() };
        let rms_qk = LightningDitConfig { attn_norm_layer: NormLayer::RmsNorm, rms_qk_norm: RmsQkNorm::Build, ..every.clone() };
        let no_shift = LightningDitConfig { adaln_shift: false, qk_norm: true, rms_norm: false, dit: small(true, true, false, 8), ..every.clone() };
        let mut v = Vec::new();
        for (what, cfg) in [("every switch", every), ("no switch", none), ("RMSNorm q/k", rms_qk), ("LayerNorm q/k, no shift, gw", no_shift)] {
            for (a, n) in [(Attention::Math, LayerNorm::FastVariance), (Attention::Fused, LayerNorm::Fused)] {
                v.push((format!("LightningDiT {what}, {a:?} attention, {n:?} LayerNorm"), cfg.clone(), a, n));
            }
        }
        v
    }
}

/// Inputs of the DiT-shaped checks: `x` `[3, 8, 8, 3]`, `t`, `dt`, labels (one the null
/// class), and random tangents, float64.
fn dit_inputs() -> [tch::Tensor; 6] {
    use tch::{Kind, Tensor};
    let mut r = diffuse_spec::rng::Rngs::new(&[("data", 1)]).unwrap();
    let x = r.normal("data", &[3, 8, 8, 3], Device::Cpu).unwrap().to_kind(Kind::Double);
    let vx = r.normal("data", &[3, 8, 8, 3], Device::Cpu).unwrap().to_kind(Kind::Double);
    let t = Tensor::from_slice(&[0.9f64, 0.5, 0.3]);
    let dt = Tensor::from_slice(&[0.2f64, 0.0, 0.25]);
    let vt = Tensor::from_slice(&[1.0f64, -0.5, 2.0]);
    let vdt = Tensor::from_slice(&[0.3f64, 1.0, -1.0]);
    [x, vx, t, dt, vt, vdt]
}

/// Runs the central-difference check on `net` with tangents on every input and on each alone.
fn check_every_tangent(name: &str, net: &dyn diffuse_spec::networks::Backbone, takes_dt: bool, gw: Option<&tch::Tensor>) {
    let [x, vx, t, dt, vt, vdt] = dit_inputs();
    let y = tch::Tensor::from_slice(&[3i64, 1000, 42]);
    let (zx, zt) = (x.zeros_like(), t.zeros_like());
    let dt_in = takes_dt.then_some(&dt);
    let mut cases = vec![("all tangents", (&vx, &vt, takes_dt.then_some(&vdt))), ("x only", (&vx, &zt, None)), ("t only", (&zx, &vt, None))];
    if takes_dt {
        cases.push(("dt only", (&zx, &zt, Some(&vdt))));
    }
    for (what, v) in cases {
        let label = format!("{name}: {what}");
        // gw, where taken, is given and held fixed.
        let e = central::check(&label, net, &x, &t, Some(&y), dt_in, gw, v, false);
        assert!(e[0] < 1e-8 && e[1] < 1e-12 && e[2] < 1e-12, "{label}: {e:?}");
    }
}

/// The DiT's fused JVP in float64 with random weights, on every switch the DiT has (both time
/// embedders, odd frequency counts, `dt` and `gw`, both LayerNorms, both attention kernels —
/// the fused SDPA kernel's tangent recomputes the softmax), tangents on every input and on
/// each alone: within 1e-8 of a Richardson central difference and 1e-12 of both autograd
/// backends; the primal and features are the plain forward's bit for bit.
#[test]
fn dit_fused_jvp_matches_a_float64_central_difference_on_every_switch() {
    use diffuse_spec::networks::Dit;
    for (name, cfg, attention, ln) in dits::dit_variants() {
        let params = common::random_params(cfg.parameter_shapes(), 3);
        let buffers = Dit::default_buffers(&cfg, Device::Cpu).unwrap();
        let net = Dit::from_params(cfg.clone(), params, buffers).unwrap().with_attention(attention).with_layer_norm(ln).to_double().unwrap();
        let gw = tch::Tensor::from_slice(&[1.0f64, 2.5, 4.0]);
        check_every_tangent(&name, &net, cfg.take_dt, cfg.take_gw.then_some(&gw));
    }
}

/// The LightningDiT's fused JVP in float64 with random weights (RMSNorm, SwiGLU, RoPE, the
/// shared q/k LayerNorm and its RMSNorm correction, adaLN with and without shift, both
/// kernels), as the DiT's.
#[test]
fn lightning_dit_fused_jvp_matches_a_float64_central_difference_on_every_switch() {
    use diffuse_spec::networks::LightningDit;
    for (name, cfg, attention, ln) in dits::lightning_variants() {
        let params = common::random_params(cfg.parameter_shapes(), 4);
        let buffers = LightningDit::default_buffers(&cfg, Device::Cpu).unwrap();
        let net = LightningDit::from_params(cfg.clone(), params, buffers).unwrap().with_attention(attention).with_layer_norm(ln).to_double().unwrap();
        let gw = tch::Tensor::from_slice(&[1.0f64, 2.5, 4.0]);
        check_every_tangent(&name, &net, cfg.dit.take_dt, cfg.dit.take_gw.then_some(&gw));
    }
}

/// In train mode the fused pass draws the label dropout a forward draws (same stream, same
/// counter) and drops the same labels: same output bit for bit, and the streams stand at the
/// same place afterwards.
#[test]
fn fused_jvp_draws_label_dropout_as_the_forward_does() {
    use diffuse_spec::jvp::{network_jvp, NetTangents};
    use diffuse_spec::networks::{Backbone, Cond, Dit, LightningDit, LightningDitConfig, Pass};
    use diffuse_spec::rng::Rngs;
    let cfg = dits::small(true, false, true, 8);
    let dit = Dit::from_params(cfg.clone(), common::random_params(cfg.parameter_shapes(), 5), Dit::default_buffers(&cfg, Device::Cpu).unwrap()).unwrap();
    let lcfg = LightningDitConfig::imagenet_switches(cfg.clone());
    let light = LightningDit::from_params(lcfg.clone(), common::random_params(lcfg.parameter_shapes(), 6), LightningDit::default_buffers(&lcfg, Device::Cpu).unwrap()).unwrap();
    let nets: [(&str, &dyn Backbone); 2] = [("DiT", &dit), ("LightningDiT", &light)];
    let [x, vx, t, dt, vt, _] = dit_inputs();
    let (x, vx, t, dt, vt) = (x.to_kind(tch::Kind::Float), vx.to_kind(tch::Kind::Float), t.to_kind(tch::Kind::Float), dt.to_kind(tch::Kind::Float), vt.to_kind(tch::Kind::Float));
    let y = tch::Tensor::from_slice(&[3i64, 7, 42]);
    let cond = Cond { y: Some(&y), dt: Some(&dt), ..Cond::default() };
    for (name, net) in nets {
        let mut dropped_any = false;
        for seed in 0..6 {
            let mut a = Rngs::new(&[("label_dropout", seed)]).unwrap();
            let mut b = Rngs::new(&[("label_dropout", seed)]).unwrap();
            let (o, _) = network_jvp(JvpBackend::Fused, net, &x, &t, cond, NetTangents { x: &vx, t: &vt, dt: None }, Pass::new(true, Some(&mut a))).unwrap();
            let plain = net.call(&x, &t, cond, Pass::new(true, Some(&mut b))).unwrap();
            assert!(o.out.equal(&plain.out), "{name} seed {seed}: the fused primal is the train-mode forward");
            let next = |r: &mut Rngs| r.uniform("label_dropout", &[4], 0.0, 1.0, Device::Cpu).unwrap();
            assert!(next(&mut a).equal(&next(&mut b)), "{name} seed {seed}: the streams stand at the same counter");
            let eval = net.call(&x, &t, cond, Pass::eval()).unwrap();
            dropped_any |= !eval.out.equal(&plain.out);
        }
        assert!(dropped_any, "{name}: no seed dropped a label, the check saw nothing");
    }
}
