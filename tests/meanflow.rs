//! MeanFlow: the exact JVP (both backends against each other and a float64 central
//! difference), the properties of its target, and its quirks Q3, Q7, Q8.

use diffuse_spec::interfaces::{AverageVelocity, CondDrop, Interface, MeanFlow, MeanFlowConfig, MeanFlowScore, Score, Time};
use diffuse_spec::jvp::{jvp, JvpBackend};
use diffuse_spec::networks::{Accepts, Backbone, Cond, NetOutput, Pass, ProbeMlp, ProbeMlpConfig};
use diffuse_spec::rng::Rngs;
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

const CFG: ProbeMlpConfig = ProbeMlpConfig { channels: 3, hidden: 16, freqs: 4 };

fn probe(kind: Kind) -> ProbeMlp {
    ProbeMlp::init_with_kind(CFG, 7, Device::Cpu, kind).unwrap()
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
}

fn data(seed: i64, b: i64) -> Tensor {
    let mut r = Rngs::new(&[("data", seed)]).unwrap();
    r.normal("data", &[b, 5, 3], Device::Cpu).unwrap()
}

fn streams(seed: i64) -> Rngs {
    Rngs::new(&[("time", seed), ("noise", seed + 1), ("label_dropout", seed + 2)]).unwrap()
}

/// u(x_t, t, r) = net(x_t, t, dt = t - r), the function MeanFlow differentiates.
fn u_fn<'a>(net: &'a ProbeMlp, y: &'a Tensor) -> impl FnMut(&[Tensor]) -> diffuse_spec::Result<Tensor> + 'a {
    move |p: &[Tensor]| {
        let dt = &p[1] - &p[2];
        Ok(net.forward(&p[0], &p[1], Cond { y: Some(y), dt: Some(&dt), ..Cond::default() }, Pass::eval())?.out)
    }
}

#[test]
fn jvp_backends_agree_with_a_float64_central_difference() {
    let net = probe(Kind::Double);
    let x = data(1, 4).to_kind(Kind::Double);
    let v = data(2, 4).to_kind(Kind::Double);
    let t = Tensor::from_slice(&[0.9f64, 0.5, 0.3, 0.75]);
    let r = Tensor::from_slice(&[0.1f64, 0.5, 0.0, 0.2]);
    let y = Tensor::from_slice(&[3i64, 1000, 0, 42]);
    let primals = [x.shallow_clone(), t.shallow_clone(), r.shallow_clone()];
    let tangents = [Some(v.shallow_clone()), Some(t.ones_like()), None];
    let mut f = u_fn(&net, &y);
    let (_, db) = jvp(JvpBackend::DoubleBackward, &mut f, &primals, &tangents).unwrap();
    let (_, fa) = jvp(JvpBackend::ForwardAd, &mut f, &primals, &tangents).unwrap();
    // Central differences along (v, 1, 0) with Richardson extrapolation,
    // (4 D(h/2) - D(h)) / 3, whose truncation error is O(h^4): about 1e-10 here.
    let mut cdiff = |h: f64| {
        let plus = f(&[&x + &v * h, &t + h, r.shallow_clone()]).unwrap();
        let minus = f(&[&x - &v * h, &t - h, r.shallow_clone()]).unwrap();
        (plus - minus) / (2.0 * h)
    };
    let h = 1e-4;
    let cd = (cdiff(h / 2.0) * 4.0 - cdiff(h)) / 3.0;
    let (e_db, e_fa, e_ab) = (rel(&db, &cd), rel(&fa, &cd), rel(&fa, &db));
    println!("float64: double-backward vs central difference {e_db:.2e}, forward-AD vs CD {e_fa:.2e}, between {e_ab:.2e}");
    assert!(e_db < 1e-10 && e_fa < 1e-10, "{e_db} {e_fa}");
    assert!(e_ab < 1e-12, "{e_ab}");
}

#[test]
fn both_backends_give_the_same_loss_target_and_gradients_in_float32() {
    let x = data(3, 8);
    let y = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 7, 8]);
    let mut results = vec![];
    for backend in [JvpBackend::DoubleBackward, JvpBackend::ForwardAd, JvpBackend::Fused] {
        let net = probe(Kind::Float);
        let mf = MeanFlow::new(MeanFlowConfig { jvp: backend, guidance_scale: 2.0, guidance_mixture_ratio: 0.3, ..Default::default() }).unwrap();
        let o = mf.loss(&net, &x, Cond::labels(Some(&y)), &mut streams(10)).unwrap();
        o.loss.mean(Kind::Float).backward();
        let grads: Vec<Tensor> = net.parameters().into_iter().map(|(_, p)| p.grad()).collect();
        results.push((o.loss.detach(), o.target, grads));
    }
    for b in &results[1..] {
        let a = &results[0];
        let (el, et) = (rel(&a.0, &b.0), rel(&a.1, &b.1));
        println!("float32: loss rel {el:.2e}, target rel {et:.2e}");
        assert!(el < 1e-6 && et < 1e-6, "{el} {et}");
        for (ga, gb) in a.2.iter().zip(&b.2) {
            if ga.defined() {
                assert!(rel(ga, gb) < 1e-5);
            }
        }
    }
}

/// With fm_portion = 1 every example has r = t: the JVP term vanishes, the target is the
/// (guided) instantaneous velocity, and unguided the loss is plain flow matching.
#[test]
fn fm_portion_one_is_plain_flow_matching() {
    let x = data(4, 6);
    let net = probe(Kind::Float);
    let mf = MeanFlow::new(MeanFlowConfig { fm_portion: 1.0, guidance_scale: 1.0, guidance_mixture_ratio: 0.0, norm_power: 0.0, ..Default::default() }).unwrap();
    let o = mf.loss(&net, &x, Cond::none(), &mut streams(20)).unwrap();
    assert!(o.r.as_ref().unwrap().equal(&o.t));
    let v = &o.n - &x;
    assert!(o.target.equal(&v), "target must be n - x exactly");
    let fm = (&o.net_out - &v).square().sum_dim_intlist(&[1i64, 2][..], false, Kind::Float);
    assert!(rel(&o.loss, &fm) < 1e-6);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// t >= r always, the fm prefix has r = t, and where r = t the target is the guided
    /// instantaneous velocity (the JVP term vanishes), for any seed and settings.
    #[test]
    fn time_pairs_and_vanishing_jvp_term(seed in 0i64..10_000, fm in 0.0f64..=1.0, w in 0.5f64..3.0, kappa in 0.0f64..0.9) {
        let b = 8;
        let mf = MeanFlow::new(MeanFlowConfig { fm_portion: fm, guidance_scale: w, guidance_mixture_ratio: kappa, cond_drop_ratio: 0.0, ..Default::default() }).unwrap();
        let (t, r) = mf.sample_t_r(b, &mut streams(seed), Device::Cpu).unwrap();
        prop_assert!(bool::try_from(t.ge_tensor(&r).all()).unwrap());
        let k = (b as f64 * fm).floor() as i64;
        prop_assert!(t.narrow(0, 0, k).equal(&r.narrow(0, 0, k)));
        let net = probe(Kind::Float);
        let x = data(seed, b);
        let o = mf.loss(&net, &x, Cond::none(), &mut streams(seed)).unwrap();
        // Recompute the guided velocity from the same draws: the loss re-draws t, r, n.
        let mut s = streams(seed);
        let (t2, r2) = mf.sample_t_r(b, &mut s, Device::Cpu).unwrap();
        let n2 = mf.sample_n(&x.size(), &mut s, Device::Cpu).unwrap();
        prop_assert!(t2.equal(&o.t) && r2.equal(o.r.as_ref().unwrap()) && n2.equal(&o.n));
        let y = Tensor::full([b], 1000, (Kind::Int64, Device::Cpu));
        let (v, _, _) = mf.insta_velocity(&net, &x, &o.n, &o.t, Cond::labels(Some(&y)), None, &mut s).unwrap();
        let same = o.t.eq_tensor(o.r.as_ref().unwrap());
        for i in 0..b {
            if bool::try_from(same.get(i)).unwrap() {
                prop_assert!(rel(&o.target.get(i), &v.get(i)) < 1e-6);
            }
        }
    }
}

/// Quirk Q7: the reference drops a prefix of as many examples as drew below the ratio;
/// `CondDrop::Sampled` drops the examples that drew below it. Same count, other examples.
#[test]
fn condition_drop_prefix_versus_sampled() {
    let b = 16;
    let x = Tensor::zeros([b, 1, 1], (Kind::Float, Device::Cpu));
    let n = Tensor::ones([b, 1, 1], (Kind::Float, Device::Cpu));
    let v = Tensor::full([b, 1, 1], 5.0, (Kind::Float, Device::Cpu));
    let y = Tensor::arange(b, (Kind::Int64, Device::Cpu));
    let mut draws = Rngs::new(&[("label_dropout", 3)]).unwrap();
    let u = draws.uniform("label_dropout", &[b], 0.0, 1.0, Device::Cpu).unwrap();
    let below: Vec<bool> = Vec::<f32>::try_from(&u).unwrap().iter().map(|&d| (d as f64) < 0.5).collect();
    let k = below.iter().filter(|&&m| m).count();
    assert!(k > 0 && k < b as usize);
    for (mode, expect) in [(CondDrop::Prefix, (0..b as usize).map(|i| i < k).collect::<Vec<_>>()), (CondDrop::Sampled, below.clone())] {
        let mf = MeanFlow::new(MeanFlowConfig { cond_drop_ratio: 0.5, cond_drop: mode, ..Default::default() }).unwrap();
        let neg_y = y.full_like(1000);
        let (v2, y2) = mf.cond_drop(&x, &n, &v, &y, &neg_y, &mut Rngs::new(&[("label_dropout", 3)]).unwrap()).unwrap();
        let y2: Vec<i64> = Vec::try_from(&y2).unwrap();
        let v2: Vec<f32> = Vec::try_from(&v2.flatten(0, -1)).unwrap();
        for i in 0..b as usize {
            assert_eq!(y2[i] == 1000, expect[i], "{mode:?} example {i}");
            assert_eq!(v2[i] == 1.0, expect[i], "{mode:?}: dropped examples get v = n - x");
        }
    }
    assert_ne!(below, (0..b as usize).map(|i| i < k).collect::<Vec<_>>(), "this seed shows the difference");
}

/// A probe that records the mode of every forward it is asked for.
struct Recording {
    net: ProbeMlp,
    modes: std::cell::RefCell<Vec<bool>>,
}

impl Backbone for Recording {
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, pass: Pass<'_>) -> diffuse_spec::Result<NetOutput> {
        self.modes.borrow_mut().push(pass.train);
        self.net.forward(x, t, cond, pass)
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        self.net.parameters()
    }
    fn accepts(&self) -> Accepts<'_> {
        self.net.accepts()
    }
}

/// Quirk Q8: the guidance forwards run in eval mode, and only the mixture path returns the
/// network to train mode for the JVP forward (the last one).
#[test]
fn train_mode_after_the_guided_velocity() {
    let x = data(5, 4);
    for (w, kappa, modes) in [(1.0, 0.0, vec![false]), (2.0, 0.0, vec![false, false]), (2.0, 0.5, vec![false, false, true])] {
        let net = Recording { net: probe(Kind::Float), modes: Default::default() };
        let mf = MeanFlow::new(MeanFlowConfig { guidance_scale: w, guidance_mixture_ratio: kappa, ..Default::default() }).unwrap();
        mf.loss(&net, &x, Cond::none(), &mut streams(1)).unwrap();
        assert_eq!(*net.modes.borrow(), modes, "w {w}, kappa {kappa}");
        assert_eq!(mf.jvp_in_train_mode(), kappa != 0.0);
    }
}

/// Quirk Q3: the reference score uses u(x_t, t, r = 0) and divides by t^2; the named
/// option uses the instantaneous velocity u(x_t, t, r = t) and SiT's division by t.
#[test]
fn score_quirk_q3() {
    let net = probe(Kind::Float);
    let x_t = data(6, 3);
    let t = Tensor::from_slice(&[0.2f32, 0.5, 0.9]);
    let reference = MeanFlow::new(MeanFlowConfig::default()).unwrap();
    let inst = MeanFlow::new(MeanFlowConfig { score: MeanFlowScore::Instantaneous, ..Default::default() }).unwrap();
    let tb = t.reshape([3, 1, 1]);
    let u0 = reference.average_velocity(&net, &x_t, Time::from(&t), Time::from(&t.zeros_like()), Cond::none()).unwrap();
    let ut = reference.average_velocity(&net, &x_t, Time::from(&t), Time::from(&t), Cond::none()).unwrap();
    let one_m: Tensor = tb.ones_like() - &tb;
    let want_ref: Tensor = (&x_t + &one_m * &u0).neg() / tb.square();
    let want_inst: Tensor = (&x_t + &one_m * &ut).neg() / &tb;
    let s_ref = reference.score(&net, &x_t, Time::from(&t), Cond::none()).unwrap();
    let s_inst = inst.score(&net, &x_t, Time::from(&t), Cond::none()).unwrap();
    assert!(rel(&s_ref, &want_ref) < 1e-6);
    assert!(rel(&s_inst, &want_inst) < 1e-6);
    assert!(rel(&s_ref, &s_inst) > 1e-2, "the two scores differ");
    // The instantaneous prediction is u(x_t, t, t), bit for bit.
    assert!(reference.pred(&net, &x_t, Time::from(&t), Cond::none()).unwrap().equal(&ut));
}

#[test]
fn settings_are_validated() {
    for cfg in [
        MeanFlowConfig { fm_portion: 1.5, ..Default::default() },
        MeanFlowConfig { cond_drop_ratio: -0.1, ..Default::default() },
        MeanFlowConfig { norm_eps: 0.0, ..Default::default() },
        MeanFlowConfig { guidance_t_min: 0.8, guidance_t_max: 0.2, ..Default::default() },
    ] {
        assert!(MeanFlow::new(cfg).is_err());
    }
}

/// The forward-AD backend computes the tangent without autograd recording and `u` by a
/// separate forward on a replay of the streams: on a DiT that draws label dropout in that
/// forward, both backends must see the same draws, leave the same stream counters, and give
/// the same loss, features and gradients.
#[test]
fn forward_ad_replays_the_networks_draws() {
    use diffuse_spec::networks::{Dit, DitConfig};
    let cfg = DitConfig {
        input_size: 4,
        patch_size: 2,
        in_channels: 3,
        hidden_size: 8,
        depth: 2,
        num_heads: 2,
        freq_embed_size: 6,
        // MeanFlow's null class is 1000 (Q10): the table needs its row.
        num_classes: 1000,
        class_dropout_prob: 0.5,
        take_dt: true,
        ..DitConfig::default()
    };
    let x = Tensor::randn([6, 4, 4, 3], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 10, 200, 3, 999, 0]);
    let mut results = vec![];
    for backend in [JvpBackend::DoubleBackward, JvpBackend::ForwardAd] {
        let dit = Dit::init(cfg.clone(), 3, Device::Cpu).unwrap();
        for (k, p) in dit.parameters() {
            if k.contains("adaLN") || k.starts_with("final_layer") {
                tch::no_grad(|| p.shallow_clone().copy_(&(p.randn_like() * 0.1)));
            }
        }
        // kappa != 0: the network is back in train mode (and draws label dropout) in the JVP forward.
        let mf = MeanFlow::new(MeanFlowConfig { jvp: backend, guidance_mixture_ratio: 0.5, fm_portion: 0.25, ..Default::default() }).unwrap();
        let mut rngs = streams(30);
        let o = mf.loss(&dit, &x, Cond::labels(Some(&y)), &mut rngs).unwrap();
        assert_eq!(rngs.counter("label_dropout").unwrap(), 2, "cond drop + one DiT label dropout");
        o.loss.mean(Kind::Float).backward();
        let grads: Vec<Tensor> = dit.parameters().into_iter().map(|(_, p)| p.grad()).collect();
        results.push((o.loss.detach(), o.features[1].detach(), grads));
    }
    let (a, b) = (&results[0], &results[1]);
    assert!(rel(&a.0, &b.0) < 1e-5, "loss {}", rel(&a.0, &b.0));
    assert!(rel(&a.1, &b.1) < 1e-6, "features {}", rel(&a.1, &b.1));
    // Attention key biases have an exactly-zero true gradient (softmax ignores them): compare
    // with a floor.
    for (ga, gb) in a.2.iter().zip(&b.2) {
        if ga.defined() {
            let d = (ga - gb).abs().max().double_value(&[]);
            assert!(d <= 1e-5 * ga.abs().max().double_value(&[]) + 1e-8, "{d}");
        }
    }
}
