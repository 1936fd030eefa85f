//! sCT / sCD and TrigFlow: properties that hold whatever the network (Lu & Song 2024,
//! arXiv:2410.11081): the boundary condition, the JVP tangent against a float64 central
//! difference, the warm-up and normalization identities, the loss and its gradients, the
//! teacher conversions, the maps between TrigFlow and the EDM / SiT conventions, sampling,
//! and the refusals.

use diffuse_spec::interfaces::trigflow;
use diffuse_spec::interfaces::{
    default_t_max, sample_multistep, sample_one_step, AnyInterface, BaseConfig, Edm, EdmConfig, Interface, LogVarHead, Scd, ScdConfig, Sct, SctConfig, SiT,
    SiTConfig, Teacher, TeacherConvention, Time, TWO_STEP_T_MID,
};
use diffuse_spec::jvp::JvpBackend;
use diffuse_spec::networks::{Accepts, Backbone, Cond, NetOutput, Pass, ProbeMlp, ProbeMlpConfig};
use diffuse_spec::rng::Rngs;
use diffuse_spec::Error;
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

const CFG: ProbeMlpConfig = ProbeMlpConfig { channels: 3, hidden: 16, freqs: 4 };
const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn probe(kind: Kind, seed: i64) -> ProbeMlp {
    ProbeMlp::init_with_kind(CFG, seed, Device::Cpu, kind).unwrap()
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
}

fn normal(seed: i64, shape: &[i64]) -> Tensor {
    let mut r = Rngs::new(&[("data", seed)]).unwrap();
    r.normal("data", shape, Device::Cpu).unwrap()
}

fn streams(seed: i64) -> Rngs {
    Rngs::new(&[("time", seed), ("noise", seed + 1), ("default", seed + 2)]).unwrap()
}

/// A head with non-zero weights (so the weighting path is exercised), float32 or float64.
fn head(kind: Kind) -> LogVarHead {
    let k = 4;
    let w = Tensor::linspace(-0.3, 0.4, 2 * k, (kind, Device::Cpu)).reshape([2 * k, 1]);
    let b = Tensor::from_slice(&[0.1f64]).to_kind(kind);
    let freqs = Tensor::linspace(0.0, 3.0, k, (kind, Device::Cpu)).exp();
    LogVarHead::new(w, b, freqs).unwrap()
}

fn sct(cfg: SctConfig, kind: Kind) -> Sct {
    Sct::new(cfg, head(kind)).unwrap()
}

#[test]
fn boundary_condition_f_at_zero_is_the_identity() {
    for kind in [Kind::Float, Kind::Double] {
        let net = probe(kind, 1);
        let s = sct(SctConfig::default(), kind);
        let x = normal(2, &[5, 4, 3]).to_kind(kind);
        let t = Tensor::zeros([5], (kind, Device::Cpu));
        let f = s.consistency(&net, &x, &t, Cond::none()).unwrap();
        assert!(f.equal(&x), "f(x, 0) must equal x exactly ({kind:?})");
    }
    // through the Interface (float32, with labels)
    let net = probe(Kind::Float, 1);
    let s = sct(SctConfig::default(), Kind::Float);
    let x = normal(3, &[2, 2, 2, 3]);
    let y = Tensor::from_slice(&[4i64, 1000]);
    assert!(s.pred(&net, &x, Time::from(&Tensor::zeros([2], (Kind::Float, Device::Cpu))), Cond::labels(Some(&y))).unwrap().equal(&x));
    assert!(s.pred(&net, &x, Time::Scalar(0.0), Cond::labels(Some(&y))).unwrap().equal(&x));
}

/// `J = sigma_d cos(t) sin(t) dF/dt` from the exact JVP equals a float64 central difference
/// of `t -> F(x_t(t) / sigma_d, t)` along the trajectory `x_t(t) = cos(t) x + sin(t) z`; and
/// the tangent at `r = 1` is `cos(t) d/dt f(x_t(t), t)` (Algorithm 1, "JVP rearrangement").
#[test]
fn tangent_matches_a_float64_central_difference() {
    for backend in [JvpBackend::Fused, JvpBackend::DoubleBackward, JvpBackend::ForwardAd] {
        let net = probe(Kind::Double, 4);
        let s = sct(SctConfig { jvp: backend, base: BaseConfig { x_sigma: 0.7, ..BaseConfig::sct() }, ..Default::default() }, Kind::Double);
        let sd = 0.7;
        let x = normal(5, &[4, 2, 3]).to_kind(Kind::Double) * 0.7;
        let z = normal(6, &[4, 2, 3]).to_kind(Kind::Double) * sd;
        let t0 = Tensor::from_slice(&[0.05f64, 0.4, 0.9, 1.5]);
        let y = Tensor::from_slice(&[1i64, 2, 1000, 3]);
        let x_t = trigflow::state(&x, &z, &t0).unwrap();
        let dxdt = trigflow::velocity(&x, &z, &t0).unwrap();
        let (big_f, j, _) = s.network_jvp(&net, &x_t, &t0, &dxdt, Cond::labels(Some(&y)), Pass::eval()).unwrap();
        let big_f = big_f.detach();
        let at = |h: f64| -> (Tensor, Tensor) {
            let t = &t0 + h;
            let xt = trigflow::state(&x, &z, &t).unwrap();
            (s.network_output(&net, &xt, &t, Cond::labels(Some(&y))).unwrap().detach(), s.consistency(&net, &xt, &t, Cond::labels(Some(&y))).unwrap().detach())
        };
        // Richardson-extrapolated central differences, truncation O(h^4)
        let cd = |h: f64, which: usize| {
            let d = |h: f64| {
                let (p, m) = (at(h), at(-h));
                let (p, m) = if which == 0 { (p.0, m.0) } else { (p.1, m.1) };
                (p - m) / (2.0 * h)
            };
            (d(h / 2.0) * 4.0 - d(h)) / 3.0
        };
        let cs = (t0.cos() * t0.sin()).reshape([4, 1, 1]);
        let j_cd = cd(1e-4, 0) * &cs * sd;
        let e_j = rel(&j, &j_cd);
        let g = s.tangent(&big_f, &j, &x_t, &dxdt, &t0, 1.0).unwrap();
        let g_cd = cd(1e-4, 1) * t0.cos().reshape([4, 1, 1]);
        let e_g = rel(&g, &g_cd);
        println!("{backend:?}: J vs central difference {e_j:.2e}, g vs cos(t) df/dt {e_g:.2e}");
        assert!(e_j < 1e-9 && e_g < 1e-9, "{e_j} {e_g}");
    }
}

#[test]
fn warmup_ratio_and_linearity_in_r() {
    let s = sct(SctConfig { tangent_warmup_steps: 400, ..Default::default() }, Kind::Double);
    assert_eq!(s.warmup_ratio(0), 0.0);
    assert_eq!(s.warmup_ratio(100), 0.25);
    assert_eq!(s.warmup_ratio(400), 1.0);
    assert_eq!(s.warmup_ratio(10_000), 1.0);
    let s0 = sct(SctConfig { tangent_warmup_steps: 0, ..Default::default() }, Kind::Double);
    assert_eq!(s0.warmup_ratio(0), 1.0);
    // g(r) = g(0) + r (g(1) - g(0)); g(0) = -cos^2(t) (sigma_d F - dx_t/dt)
    let (f, j, x_t, v) = (normal(1, &[3, 4]), normal(2, &[3, 4]), normal(3, &[3, 4]), normal(4, &[3, 4]));
    let (f, j, x_t, v) = (f.to_kind(Kind::Double), j.to_kind(Kind::Double), x_t.to_kind(Kind::Double), v.to_kind(Kind::Double));
    let t = Tensor::from_slice(&[0.2f64, 0.8, 1.3]);
    let g0 = s.tangent(&f, &j, &x_t, &v, &t, 0.0).unwrap();
    let g1 = s.tangent(&f, &j, &x_t, &v, &t, 1.0).unwrap();
    let gr = s.tangent(&f, &j, &x_t, &v, &t, 0.3).unwrap();
    let c2 = t.cos().square().reshape([3, 1]);
    assert!(rel(&g0, &(-(c2 * (&f * 0.5 - &v)))) < 1e-15);
    assert!(rel(&gr, &(&g0 + (&g1 - &g0) * 0.3)) < 1e-14);
}

#[test]
fn tangent_normalization_identities() {
    let s = sct(SctConfig { tangent_norm_const: 0.1, ..Default::default() }, Kind::Double);
    let g = normal(7, &[4, 3, 5]).to_kind(Kind::Double) * Tensor::from_slice(&[1e-3f64, 0.1, 1.0, 50.0]).reshape([4, 1, 1]);
    let gn = s.normalize(&g).unwrap();
    let norm = |v: &Tensor| v.square().sum_dim_intlist(&[1i64, 2][..], false, Kind::Double).sqrt();
    let (ng, nn) = (norm(&g), norm(&gn));
    // ||g / (||g|| + c)|| = ||g|| / (||g|| + c) < 1, same direction
    assert!(rel(&nn, &(&ng / (&ng + 0.1))) < 1e-14);
    assert!(bool::try_from(nn.lt(1.0).all()).unwrap());
    let cosine = (&g * &gn).sum_dim_intlist(&[1i64, 2][..], false, Kind::Double) / (&ng * &nn);
    assert!(rel(&cosine, &cosine.ones_like()) < 1e-14);
    // a tiny tangent is left almost unscaled relative to c; a large one has norm ~ 1
    assert!((nn.double_value(&[3]) - 1.0).abs() < 0.01);
}

/// The loss is `exp(w)/D ||F - F- - g||^2 - w` with `F - F- = 0` in value, so it equals
/// `exp(w)/D ||g||^2 - w`; its gradients are the paper's: `d/dtheta = -2 exp(w)/D g . dF/dtheta`
/// (the stop-gradients in the right places) and `d/dw = exp(w) ||g||^2 / D - 1`.
#[test]
fn loss_value_and_gradients_have_the_stop_gradient_structure() {
    let net = probe(Kind::Float, 8);
    let s = sct(SctConfig { tangent_warmup_steps: 10, ..Default::default() }, Kind::Float);
    let x = normal(9, &[6, 2, 2, 3]) * 0.5;
    let y = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 1000]);
    let o = s.loss_at(&net, &x, Cond::labels(Some(&y)), &mut streams(3), 5).unwrap();
    let d = 12.0;
    let g = &o.target - o.net_out.detach();
    let l = g.square().sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float);
    let w = s.head().forward(&o.t).unwrap().detach();
    let want = w.exp() / d * &l - &w;
    assert!(rel(&o.loss.detach(), &want) < 1e-6);
    o.loss.mean(Kind::Float).backward();
    // d mean(loss) / d b = mean(exp(w) l / D - 1)
    let gb = s.head().parameters()[1].1.grad();
    let want_b = (w.exp() * &l / d - 1.0).mean(Kind::Float);
    assert!((gb.double_value(&[0]) - want_b.double_value(&[])).abs() < 1e-6);
    // d mean(loss) / d theta == d/dtheta mean(-2 exp(w)/D sum(g . F)) with g, w constant
    let grads: Vec<Option<Tensor>> = net.parameters().into_iter().map(|(_, p)| Some(p.grad()).filter(Tensor::defined).map(|g| g.copy())).collect();
    for (_, p) in net.parameters() {
        let mut gr = p.grad();
        if gr.defined() {
            let _ = gr.zero_();
        }
    }
    let o2 = s.loss_at(&net, &x, Cond::labels(Some(&y)), &mut streams(3), 5).unwrap();
    let surrogate = ((&w.exp() / d).reshape([6, 1, 1, 1]) * &g * &o2.net_out * -2.0).sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float).mean(Kind::Float);
    surrogate.backward();
    for ((name, p), want) in net.parameters().into_iter().zip(grads) {
        let Some(want) = want else { continue };
        let got = p.grad();
        if want.abs().max().double_value(&[]) > 0.0 {
            assert!(rel(&got, &want) < 1e-5, "{name}: {}", rel(&got, &want));
        }
    }
}

#[test]
fn both_jvp_backends_give_the_same_loss() {
    let x = normal(10, &[5, 3, 3]) * 0.5;
    let mut out = vec![];
    for backend in [JvpBackend::Fused, JvpBackend::DoubleBackward, JvpBackend::ForwardAd] {
        let net = ProbeMlp::init(CFG, 11, Device::Cpu).unwrap();
        let s = sct(SctConfig { jvp: backend, tangent_warmup_steps: 0, ..Default::default() }, Kind::Float);
        let o = s.loss_at(&net, &x, Cond::none(), &mut streams(4), 0).unwrap();
        out.push((o.loss.detach(), o.target));
    }
    let (el, et) = (rel(&out[0].0, &out[1].0), rel(&out[0].1, &out[1].1));
    println!("float32 backends: loss {el:.2e}, target {et:.2e}");
    assert!(el < 1e-5 && et < 1e-5);
}

#[test]
fn draws_one_time_and_one_noise_per_loss_and_records_the_trigflow_path() {
    let net = probe(Kind::Float, 12);
    let s = sct(SctConfig::default(), Kind::Float);
    let x = normal(13, &[4, 2, 3]);
    let mut r = streams(5);
    let o = s.loss_at(&net, &x, Cond::none(), &mut r, 0).unwrap();
    assert_eq!((r.counter("time").unwrap(), r.counter("noise").unwrap(), r.counter("default").unwrap()), (1, 1, 0));
    // t = arctan(exp(N P_std + P_mean) / sigma_d) from the first time draw
    let mut r2 = streams(5);
    let sigma = (r2.normal("time", &[4], Device::Cpu).unwrap() * 1.4 - 1.0).exp();
    assert!(o.t.equal(&(sigma / 0.5).atan()));
    assert!(bool::try_from(o.t.gt(0.0).all()).unwrap() && bool::try_from(o.t.lt(std::f64::consts::FRAC_PI_2).all()).unwrap());
    assert!(o.x_t.equal(&trigflow::state(&x, &(&o.n * 0.5), &o.t).unwrap()));
}

/// A probe that refuses to run in train mode: a teacher's forwards must all be in eval mode.
struct EvalOnly(ProbeMlp);

impl Backbone for EvalOnly {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, pass: Pass<'_>) -> diffuse_spec::Result<NetOutput> {
        if pass.train {
            return Err(Error::invalid("pass", "eval mode (a frozen teacher)", "train mode"));
        }
        self.0.forward(x, t, cond, pass)
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.0.parameters()
    }
    fn accepts(&self) -> Accepts<'_> {
        self.0.accepts()
    }
}

fn teacher_net(seed: i64) -> Box<dyn Backbone> {
    Box::new(probe(Kind::Double, seed))
}

fn sit() -> SiT {
    SiT::new(SiTConfig::default()).unwrap()
}

/// The conversions are affine in the teacher's output, so the guided velocity is linear in
/// the guidance scale: `w = 1` is the conditional velocity, `w = 0` the unconditional one.
#[test]
fn teacher_guidance_is_linear_in_the_scale() {
    let teacher = Teacher::new(TeacherConvention::SiT(sit()), Box::new(EvalOnly(probe(Kind::Double, 20)))).unwrap();
    let x_t = normal(21, &[3, 2, 3]).to_kind(Kind::Double);
    let t = Tensor::from_slice(&[0.3f64, 0.9, 1.4]);
    let y = Tensor::from_slice(&[5i64, 6, 7]);
    let null = Tensor::from_slice(&[1000i64, 1000, 1000]);
    let vc = teacher.velocity(&x_t, &t, Some(&y), 0.5).unwrap();
    let vu = teacher.velocity(&x_t, &t, Some(&null), 0.5).unwrap();
    assert!(teacher.guided_velocity(&x_t, &t, Some(&y), 0.5, 1.0).unwrap().equal(&vc));
    assert!(rel(&teacher.guided_velocity(&x_t, &t, Some(&y), 0.5, 0.0).unwrap(), &vu) < 1e-15);
    let g3 = teacher.guided_velocity(&x_t, &t, Some(&y), 0.5, 3.0).unwrap();
    assert!(rel(&g3, &(&vu + (&vc - &vu) * 3.0)) < 1e-14);
}

/// A TrigFlow teacher with `sigma_d'` infinitesimally different from the student's goes
/// through the general EDM-state map; it must agree with the direct `sigma_d F` path.
#[test]
fn trigflow_teacher_general_map_agrees_with_the_direct_one() {
    let x_t = normal(22, &[3, 4, 3]).to_kind(Kind::Double);
    let t = Tensor::from_slice(&[0.2f64, 0.7, 1.2]);
    let direct = Teacher::new(TeacherConvention::TrigFlow { sigma_d: 0.5 }, teacher_net(23)).unwrap();
    let mapped = Teacher::new(TeacherConvention::TrigFlow { sigma_d: 0.5 * (1.0 + 1e-12) }, teacher_net(23)).unwrap();
    let (a, b) = (direct.velocity(&x_t, &t, None, 0.5).unwrap(), mapped.velocity(&x_t, &t, None, 0.5).unwrap());
    assert!(rel(&b, &a) < 1e-9, "{}", rel(&b, &a));
}

/// For data that is a point mass at 0, the exact probability-flow velocity is the
/// conditional one, `cos(t) z = x_t / tan(t)`: sCD with that exact TrigFlow teacher
/// (`F = (x_t / sigma_d) / tan(t)`) is sCT, draw for draw.
#[test]
fn scd_with_an_exact_teacher_is_sct() {
    struct Exact;
    impl Backbone for Exact {
        fn forward(&self, x: &Tensor, t: &Tensor, _c: Cond<'_>, _p: Pass<'_>) -> diffuse_spec::Result<NetOutput> {
            Ok(NetOutput { out: x / t.tan().reshape([-1, 1, 1]), features: vec![] })
        }
        fn parameters(&self) -> Vec<(String, Tensor)> {
            vec![]
        }
    }
    let x = Tensor::zeros([4, 2, 3], (Kind::Float, Device::Cpu));
    let student = ProbeMlp::init(CFG, 40, Device::Cpu).unwrap();
    let cfg = ScdConfig { sct: SctConfig { tangent_warmup_steps: 0, ..Default::default() }, ..Default::default() };
    let scd = Scd::new(cfg.clone(), head(Kind::Float), Teacher::new(TeacherConvention::TrigFlow { sigma_d: 0.5 }, Box::new(Exact)).unwrap()).unwrap();
    let sct = Sct::new(cfg.sct(), head(Kind::Float)).unwrap();
    let a = scd.loss_at(&student, &x, Cond::none(), &mut streams(41), 0).unwrap();
    let b = sct.loss_at(&student, &x, Cond::none(), &mut streams(41), 0).unwrap();
    assert!(rel(&a.target, &b.target) < 1e-5, "{}", rel(&a.target, &b.target));
    assert!(rel(&a.loss.detach(), &b.loss.detach()) < 1e-5);
}

/// An EDM teacher's TrigFlow velocity carries its denoiser: `x-hat = cos(t) x_t - sin(t)
/// dx_t/dt` equals `D(x_e, sigma)` at the mapped state.
#[test]
fn edm_teacher_velocity_reproduces_the_edm_denoiser() {
    let edm = Edm::new(EdmConfig::default()).unwrap();
    let net = probe(Kind::Double, 50);
    let x_t = normal(51, &[3, 2, 3]).to_kind(Kind::Double);
    let t = Tensor::from_slice(&[0.3f64, 0.8, 1.3]);
    let teacher = Teacher::new(TeacherConvention::Edm(edm.clone()), Box::new(probe(Kind::Double, 50))).unwrap();
    let v = teacher.velocity(&x_t, &t, None, 0.5).unwrap();
    let (x_e, sigma) = trigflow::to_edm(&x_t, &t, 0.5, 1.0).unwrap();
    let (d, _) = edm.denoise(&net, &x_e, &sigma, Cond::none(), Pass::eval()).unwrap();
    assert!(rel(&trigflow::edm_denoised(&x_t, &t, &v).unwrap(), &d.detach()) < 1e-13);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// TrigFlow <-> EDM and TrigFlow <-> SiT round trips (state and time), and the
    /// velocity round trip TrigFlow -> SiT velocity -> TrigFlow, in float64.
    #[test]
    fn conversion_round_trips(seed in 0i64..100_000, t in 0.0f64..(std::f64::consts::FRAC_PI_2 - 1e-4), sd in 0.1f64..2.0, n_sigma in 0.3f64..3.0) {
        let x_t = normal(seed, &[2, 3, 2]).to_kind(Kind::Double);
        let dxdt = normal(seed + 1, &[2, 3, 2]).to_kind(Kind::Double);
        let tt = Tensor::from_slice(&[t, 0.5 * t]);
        let (x_e, sigma) = trigflow::to_edm(&x_t, &tt, sd, n_sigma).unwrap();
        let (x_back, t_back) = trigflow::from_edm(&x_e, &sigma, sd, n_sigma).unwrap();
        prop_assert!(rel(&x_back, &x_t) < 1e-10 && rel(&t_back, &tt) < 1e-12);
        let (x_s, s) = trigflow::to_sit(&x_t, &tt, sd, n_sigma).unwrap();
        prop_assert!(bool::try_from(s.ge(0.0).all()).unwrap() && bool::try_from(s.lt(1.0).all()).unwrap());
        let (x_back, t_back) = trigflow::from_sit(&x_s, &s, sd, n_sigma).unwrap();
        prop_assert!(rel(&x_back, &x_t) < 1e-12 && rel(&t_back, &tt) < 1e-12);
        let v = trigflow::sit_velocity(&x_t, &tt, &dxdt, sd, n_sigma).unwrap();
        let back = trigflow::velocity_from_sit(&x_s, &s, &v, &tt, sd, n_sigma).unwrap();
        prop_assert!(rel(&back, &dxdt) < 1e-11);
        let d = trigflow::edm_denoised(&x_t, &tt, &dxdt).unwrap();
        if t > 1e-3 {
            let back = trigflow::velocity_from_edm(&x_e, &sigma, &d, &tt, sd, n_sigma).unwrap();
            prop_assert!(rel(&back, &dxdt) < 1e-9);
        }
        let sig = trigflow::sigma_from_time(&tt, sd).unwrap();
        prop_assert!(rel(&trigflow::time_from_sigma(&sig, sd).unwrap(), &tt) < 1e-13);
    }

    /// The boundary condition holds for any network and sigma_d, and `f` is the TrigFlow
    /// denoiser `cos(t) x_t - sin(t) sigma_d F`.
    #[test]
    fn consistency_function_definition(seed in 0i64..10_000, sd in 0.2f64..2.0, t in 0.0f64..1.57) {
        let net = probe(Kind::Double, seed);
        let s = sct(SctConfig { base: BaseConfig { x_sigma: sd, ..BaseConfig::sct() }, ..Default::default() }, Kind::Double);
        let x = normal(seed, &[2, 3]).to_kind(Kind::Double);
        let z = Tensor::zeros([2], F64);
        prop_assert!(s.consistency(&net, &x, &z, Cond::none()).unwrap().equal(&x));
        let tt = Tensor::from_slice(&[t, t]);
        let f = s.consistency(&net, &x, &tt, Cond::none()).unwrap();
        let big_f = s.network_output(&net, &x, &tt, Cond::none()).unwrap();
        let want = &x * t.cos() - big_f * (t.sin() * sd);
        prop_assert!(rel(&f, &want) < 1e-14);
    }
}

#[test]
fn sampling_one_and_two_steps() {
    let net = probe(Kind::Float, 60);
    let s = sct(SctConfig::default(), Kind::Float);
    let noise = normal(61, &[4, 3]);
    let tmax = default_t_max(0.5);
    assert!((tmax - (160.0f64).atan()).abs() < 1e-15 && (tmax - 1.5645).abs() < 1e-4);
    let one = sample_one_step(&s, &net, &noise, None, tmax).unwrap();
    let t = Tensor::full([4], tmax, (Kind::Float, Device::Cpu));
    assert!(one.equal(&s.consistency(&net, &(&noise * 0.5), &t, Cond::none()).unwrap()));
    let mut r = streams(62);
    let two = sample_multistep(&s, &net, &noise, None, &[tmax, TWO_STEP_T_MID], Some(&mut r)).unwrap();
    assert_eq!(r.counter("default").unwrap(), 1, "one fresh noise draw per intermediate time");
    // by hand
    let mut r2 = streams(62);
    let eps = r2.normal("default", &[4, 3], Device::Cpu).unwrap();
    let tm = Tensor::full([4], TWO_STEP_T_MID, (Kind::Float, Device::Cpu));
    let x1 = trigflow::state(&one, &(eps * 0.5), &tm).unwrap();
    assert!(two.equal(&s.consistency(&net, &x1, &tm, Cond::none()).unwrap()));
    // refusals
    assert!(sample_multistep(&s, &net, &noise, None, &[1.1, 1.2], Some(&mut streams(1))).is_err());
    assert!(sample_multistep(&s, &net, &noise, None, &[1.5, 1.1], None).is_err());
    assert!(sample_multistep(&s, &net, &noise, None, &[], None).is_err());
    assert!(sample_one_step(&s, &net, &noise, None, 1.6).is_err());
}

#[test]
fn refusals_are_errors_not_panics() {
    let net = probe(Kind::Float, 70);
    let s = sct(SctConfig::default(), Kind::Float);
    let x = normal(71, &[2, 3]);
    let t = Tensor::from_slice(&[0.1f32, 0.2]);
    // sCT has no score (a compile error through the Score trait; `AnyInterface` says so).
    assert!(AnyInterface::Sct(sct(SctConfig::default(), Kind::Float)).as_score().is_none());
    assert!(s.pred(&net, &x, Time::from(&t), Cond::none()).is_ok());
    assert!(s.pred(&net, &x, Time::from(&Tensor::from_slice(&[0.1f32, 1.6])), Cond::none()).is_err());
    assert!(s.pred(&net, &x, Time::from(&Tensor::from_slice(&[-0.1f32, 0.5])), Cond::none()).is_err());
    let base = BaseConfig::sct;
    for bad in [
        SctConfig { base: BaseConfig { n_sigma: 2.0, ..base() }, ..Default::default() },
        SctConfig { base: BaseConfig { n_mu: 0.1, ..base() }, ..Default::default() },
        SctConfig { base: BaseConfig { x_sigma: 0.0, ..base() }, ..Default::default() },
        SctConfig { base: BaseConfig { t_sigma: -1.0, ..base() }, ..Default::default() },
        SctConfig { tangent_norm_const: 0.0, ..Default::default() },
        SctConfig { base: BaseConfig { t_mu: f64::NAN, ..base() }, ..Default::default() },
    ] {
        assert!(Sct::new(bad, head(Kind::Float)).is_err());
    }
    assert!(LogVarHead::init(0, Device::Cpu, Kind::Float).is_err());
    let k = 3;
    assert!(LogVarHead::new(Tensor::zeros([2 * k + 1, 1], (Kind::Float, Device::Cpu)), Tensor::zeros([1], (Kind::Float, Device::Cpu)), Tensor::ones([k], (Kind::Float, Device::Cpu))).is_err());
    let t_bad = Teacher::new(TeacherConvention::TrigFlow { sigma_d: -1.0 }, teacher_net(72));
    assert!(t_bad.is_err());
    let sit_mu = SiT::new(SiTConfig { base: BaseConfig { n_mu: 0.5, ..Default::default() }, ..Default::default() }).unwrap();
    assert!(Teacher::new(TeacherConvention::SiT(sit_mu), teacher_net(73)).is_err());
    let teacher = Teacher::new(TeacherConvention::SiT(sit()), Box::new(probe(Kind::Float, 74))).unwrap();
    let scd = Scd::new(ScdConfig::default(), head(Kind::Float), teacher).unwrap();
    let scd = AnyInterface::Scd(scd);
    assert!(scd.as_score().is_none() && scd.as_average_velocity().is_none());
    assert!(Scd::new(ScdConfig { guidance_scale: f64::INFINITY, ..Default::default() }, head(Kind::Float), Teacher::new(TeacherConvention::SiT(sit()), teacher_net(75)).unwrap()).is_err());
    // bad data
    assert!(s.loss_at(&net, &Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)), Cond::none(), &mut streams(1), 0).is_err());
    assert!(s.loss_at(&net, &Tensor::from_slice(&[f32::NAN, 0.0, 0.0]).reshape([1, 3]), Cond::none(), &mut streams(1), 0).is_err());
}

#[test]
fn config_deserializes_with_paper_defaults_and_refuses_unknown_keys() {
    let c: SctConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(c, SctConfig::default());
    assert_eq!((c.base.t_mu, c.base.t_sigma, c.base.x_sigma, c.tangent_norm_const, c.tangent_warmup_steps), (-1.0, 1.4, 0.5, 0.1, 10_000));
    assert!(serde_json::from_str::<SctConfig>(r#"{"P_mean": -1}"#).is_err());
    let d: ScdConfig = serde_json::from_str(r#"{"guidance_scale": 2.0}"#).unwrap();
    assert_eq!(d.guidance_scale, 2.0);
    assert_eq!(d.sct(), SctConfig::default());
}
