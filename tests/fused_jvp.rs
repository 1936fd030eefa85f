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

/// The backbones with a fused JVP so far.
const FUSED: &[NetworkType] = &[NetworkType::ProbeMlp];

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
    pub fn check(name: &str, net: &dyn Backbone, x: &Tensor, t: &Tensor, y: Option<&Tensor>, dt: Option<&Tensor>, v: (&Tensor, &Tensor, Option<&Tensor>), train: bool) -> [f64; 3] {
        let cond = Cond { y, dt, ..Cond::default() };
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
            tch::no_grad(|| net.call(&xs, &ts, Cond { y, dt: dts.as_ref(), ..Cond::default() }, pass()).unwrap().out)
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
                let e = central::check(&name, &net, &x, &t, labels.then_some(&y), dt_in.then_some(&dt), v, true);
                assert!(e[0] < 1e-9 && e[1] < 1e-12 && e[2] < 1e-12, "{name}: {e:?}");
            }
        }
    }
}
