//! Identities that SiT and EDM must satisfy for any time and settings (proptest),
//! and the quirks Q2 / Q12 shown where they bite.


use diffuse_spec::interfaces::{t_shift, BaseConfig, Edm, EdmConfig, EdmScore, Interface, Preconditioning, Score, SiT, SiTConfig, Time, TimeDist};
use diffuse_spec::networks::{Backbone, Cond, NetOutput, Pass};
use diffuse_spec::rng::Rngs;
use diffuse_spec::Error;
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

fn v(x: &[f32]) -> Tensor {
    Tensor::from_slice(x)
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs().max().double_value(&[]);
    d / b.abs().max().double_value(&[]).max(1e-30)
}

/// A backbone whose output is always zero: for EDM this makes `D = c_skip x_t`, the ideal
/// denoiser of Gaussian data with standard deviation `x_sigma`.
struct Zero;
impl Backbone for Zero {
    fn forward(&self, x: &Tensor, _t: &Tensor, _c: Cond<'_>, _p: Pass<'_>) -> diffuse_spec::Result<NetOutput> {
        Ok(NetOutput { out: x.zeros_like(), features: vec![] })
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![]
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn edm_preconditioning_identities(t in 1e-3f32..80.0, xs in 0.05f64..4.0) {
        let edm = Edm::new(EdmConfig { base: BaseConfig { x_sigma: xs, ..Default::default() }, ..Default::default() }).unwrap();
        let tt = v(&[t]).to_kind(Kind::Double);
        let (c_in, c_out, c_skip) = (edm.c_in(&tt).unwrap(), edm.c_out(&tt).unwrap(), edm.c_skip(&tt).unwrap());
        // c_out^2 = t^2 c_skip
        prop_assert!(max_rel(&c_out.square(), &(tt.square() * &c_skip)) < 1e-12);
        // c_in^2 (t^2 + xs^2) = 1
        prop_assert!(max_rel(&(c_in.square() * (tt.square() + xs * xs)), &tt.ones_like()) < 1e-12);
        // loss weight = 1 / c_out^2
        prop_assert!(max_rel(&edm.weight(&tt).unwrap(), &c_out.square().reciprocal()) < 1e-12);
        // c_skip + c_out^2 / xs^2 = 1 (the EDM preconditioning keeps unit variance)
        prop_assert!(max_rel(&(&c_skip + c_out.square() / (xs * xs)), &tt.ones_like()) < 1e-12);
    }

    #[test]
    fn sit_path_recovers_data_and_noise(t in 0.0f32..1.0, seed in 0i64..1000) {
        let sit = SiT::new(SiTConfig::default()).unwrap();
        let mut rngs = Rngs::new(&[("noise", seed)]).unwrap();
        let x = rngs.normal("noise", &[2, 3, 4], Device::Cpu).unwrap().to_kind(Kind::Double);
        let n = rngs.normal("noise", &[2, 3, 4], Device::Cpu).unwrap().to_kind(Kind::Double);
        let tt = v(&[t, t]).to_kind(Kind::Double);
        let x_t = sit.sample_x_t(&x, &n, &tt).unwrap();
        let vel = sit.target(&x, &n, &tt).unwrap();
        let tb = tt.reshape([2, 1, 1]);
        // x = x_t - t v and n = x_t + (1 - t) v for the true velocity v = n - x.
        prop_assert!(max_rel(&(&x_t - &tb * &vel), &x) < 1e-12);
        prop_assert!(max_rel(&(&x_t + (1.0 - &tb) * &vel), &n) < 1e-12);
    }

    #[test]
    fn t_shift_is_monotone_and_inverted_by_its_reciprocal(a in 0.0f64..1.0, b in 0.0f64..1.0, s in 0.05f64..20.0) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let t = Tensor::from_slice(&[lo, hi]);
        let y = t_shift(&t, s).unwrap();
        let yv: Vec<f64> = Vec::try_from(&y).unwrap();
        prop_assert!(yv[0] <= yv[1]);
        prop_assert!((0.0..=1.0).contains(&yv[0]) && (0.0..=1.0).contains(&yv[1]));
        let back = t_shift(&y, 1.0 / s).unwrap();
        prop_assert!((&back - &t).abs().max().double_value(&[]) < 1e-12);
    }
}

#[test]
fn t_shift_fixes_the_ends_and_refuses_bad_shifts() {
    let t = Tensor::from_slice(&[0.0f64, 1.0]);
    let y: Vec<f64> = Vec::try_from(&t_shift(&t, 3.0).unwrap()).unwrap();
    assert_eq!(y, vec![0.0, 1.0]);
    assert!(matches!(t_shift(&t, 0.0), Err(Error::InvalidArgument { .. })));
    assert!(matches!(t_shift(&t, f64::NAN), Err(Error::InvalidArgument { .. })));
}

/// Quirk Q2: with the ideal denoiser of N(0, xs^2) data (a zero network), the score of the
/// noisy marginal N(0, xs^2 + t^2) is exactly `-x_t / (xs^2 + t^2)`. The denoiser-implied
/// score reproduces it; the reference's formula does not.
#[test]
fn edm_score_quirk_q2() {
    let xs = 0.5f64;
    let x_t = Tensor::from_slice(&[0.3f32, -1.2, 2.0, 0.7]).reshape([2, 2, 1]).to_kind(Kind::Double);
    let t = Tensor::from_slice(&[0.4f64, 3.0]);
    let exact = -&x_t / (t.square() + xs * xs).reshape([2, 1, 1]);
    let reference = Edm::new(EdmConfig::default()).unwrap();
    let denoiser = Edm::new(EdmConfig { score: EdmScore::Denoiser, ..Default::default() }).unwrap();
    let t32 = t.to_kind(Kind::Float);
    let s_ref = reference.score(&Zero, &x_t.to_kind(Kind::Float), Time::from(&t32), Cond::none()).unwrap();
    let s_den = denoiser.score(&Zero, &x_t.to_kind(Kind::Float), Time::from(&t32), Cond::none()).unwrap();
    let e_den = max_rel(&s_den.to_kind(Kind::Double), &exact);
    let e_ref = max_rel(&s_ref.to_kind(Kind::Double), &exact);
    assert!(e_den < 1e-6, "denoiser score off by {e_den}");
    assert!(e_ref > 0.1, "the reference score should differ from the true score, rel {e_ref}");
    // And the reference formula is exactly what it says: -(x_t - pred) / t^2.
    let pred = reference.pred(&Zero, &x_t.to_kind(Kind::Float), Time::from(&t32), Cond::none()).unwrap();
    let tb = t.to_kind(Kind::Float).reshape([2, 1, 1]);
    assert!(max_rel(&s_ref, &(-(x_t.to_kind(Kind::Float) - pred) / tb.square())) < 1e-6);
}

/// Quirk Q12: at t = 0 the SiT score is infinite and EDM's pred and score are NaN, exactly as
/// in the reference (a documented result); times outside an interface's range are refused.
#[test]
fn zero_time_gives_the_reference_infinities_and_out_of_range_times_are_refused() {
    let x_t = Tensor::ones([2, 3, 1], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0.0f32, 0.5]);
    let finite_rows = |v: &Tensor| -> Vec<bool> { Vec::try_from(&v.isfinite().flatten(1, -1).all_dim(1, false)).unwrap() };
    let sit = SiT::new(SiTConfig::default()).unwrap();
    assert_eq!(finite_rows(&sit.score(&Zero, &x_t, Time::from(&t), Cond::none()).unwrap()), vec![false, true]);
    assert_eq!(finite_rows(&sit.pred(&Zero, &x_t, Time::from(&t), Cond::none()).unwrap()), vec![true, true]);
    let edm = Edm::new(EdmConfig::default()).unwrap();
    // The zero network ignores its time input, so only the division by t shows here.
    assert_eq!(finite_rows(&edm.score(&Zero, &x_t, Time::from(&t), Cond::none()).unwrap()), vec![false, true]);
    let late = Tensor::from_slice(&[1.5f32, 0.5]);
    assert!(sit.pred(&Zero, &x_t, Time::from(&late), Cond::none()).unwrap_err().to_string().contains("values in [0, 1]"));
    let negative = Tensor::from_slice(&[-0.1f32, 0.5]);
    assert!(edm.pred(&Zero, &x_t, Time::from(&negative), Cond::none()).unwrap_err().to_string().contains("sigma"));
    // A scalar time (the reference's float `t`) is the same as a [B] vector of it.
    let half = Tensor::from_slice(&[0.5f32, 0.5]);
    assert!(sit.score(&Zero, &x_t, Time::Scalar(0.5), Cond::none()).unwrap().equal(&sit.score(&Zero, &x_t, Time::from(&half), Cond::none()).unwrap()));
    assert!(sit.pred(&Zero, &x_t, Time::Scalar(1.5), Cond::none()).unwrap_err().to_string().contains("values in [0, 1]"));
}

#[test]
fn sit_refuses_lognormal_and_bad_settings() {
    let e = SiT::new(SiTConfig { base: BaseConfig { train_time_dist_type: TimeDist::LogNormal, ..Default::default() }, ..Default::default() }).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    assert!(matches!(SiT::new(SiTConfig { base: BaseConfig { n_sigma: -1.0, ..Default::default() }, ..Default::default() }), Err(Error::InvalidArgument { .. })));
    assert!(matches!(Edm::new(EdmConfig { base: BaseConfig { x_sigma: 0.0, ..Default::default() }, ..Default::default() }), Err(Error::InvalidArgument { .. })));
    assert!(matches!(TimeDist::parse("gamma"), Err(Error::Unknown { .. })));
}

#[test]
fn loss_refuses_bad_input() {
    let sit = SiT::new(SiTConfig::default()).unwrap();
    let mut rngs = Rngs::new(&[("time", 0), ("noise", 1)]).unwrap();
    let probe = diffuse_spec::networks::ProbeMlp::init(
        diffuse_spec::networks::ProbeMlpConfig { channels: 2, hidden: 4, freqs: 2 },
        0,
        Device::Cpu,
    )
    .unwrap();
    let x = Tensor::ones([3, 4, 2], (Kind::Float, Device::Cpu));
    assert!(sit.loss(&probe, &x, Cond::none(), &mut rngs).is_ok());
    let nan = x.copy().fill_(f64::NAN);
    assert!(sit.loss(&probe, &nan, Cond::none(), &mut rngs).unwrap_err().to_string().contains("finite"));
    let empty = Tensor::ones([0, 4, 2], (Kind::Float, Device::Cpu));
    assert!(sit.loss(&probe, &empty, Cond::none(), &mut rngs).unwrap_err().to_string().contains("batch"));
    let y = Tensor::from_slice(&[1i64, 2]);
    assert!(sit.loss(&probe, &x, Cond::labels(Some(&y)), &mut rngs).unwrap_err().to_string().contains("`y`"));
    let wrong_c = Tensor::ones([3, 4, 5], (Kind::Float, Device::Cpu));
    assert!(sit.loss(&probe, &wrong_c, Cond::none(), &mut rngs).is_err());
}

/// Same draws, same loss: the streams make the loss a pure function of the seeds.
#[test]
fn loss_is_reproducible_from_the_seeds() {
    let edm = Edm::new(EdmConfig { base: BaseConfig { train_time_dist_type: TimeDist::LogNormal, t_mu: -1.2, t_sigma: 1.2, ..Default::default() }, ..Default::default() }).unwrap();
    let probe = diffuse_spec::networks::ProbeMlp::init(
        diffuse_spec::networks::ProbeMlpConfig { channels: 2, hidden: 4, freqs: 2 },
        0,
        Device::Cpu,
    )
    .unwrap();
    let x = Tensor::ones([3, 4, 2], (Kind::Float, Device::Cpu));
    let mut a = Rngs::new(&[("time", 5), ("noise", 6)]).unwrap();
    let mut b = a.fork();
    let la = edm.loss(&probe, &x, Cond::none(), &mut a).unwrap().loss;
    let lb = edm.loss(&probe, &x, Cond::none(), &mut b).unwrap().loss;
    assert!(la.equal(&lb));
    let lc = edm.loss(&probe, &x, Cond::none(), &mut a).unwrap().loss;
    assert!(!la.equal(&lc), "the counters moved on, so the next draw differs");
}
