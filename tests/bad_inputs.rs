//! Bad inputs to the library's public functions (issue 10): each is an error value that
//! names the argument, what was expected and what came — never a panic, never a NaN.

use diffuse_spec::interfaces::{bcast_right, t_shift, AverageVelocity, BaseConfig, Edm, EdmConfig, Interface, MeanFlow, MeanFlowConfig, Score, SiT, SiTConfig, Time, TimeDist};
use diffuse_spec::jvp::{jvp, JvpBackend};
use diffuse_spec::networks::{Backbone, Cond, Pass, ProbeMlp, ProbeMlpConfig};
use diffuse_spec::rng::Rngs;
use diffuse_spec::Error;
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn probe() -> ProbeMlp {
    ProbeMlp::init(ProbeMlpConfig { channels: 2, hidden: 4, freqs: 2 }, 0, CPU).unwrap()
}

fn x() -> Tensor {
    Tensor::ones([3, 5, 2], (Kind::Float, CPU))
}

fn t3(v: [f32; 3]) -> Tensor {
    Tensor::from_slice(&v)
}

/// Asserts an `InvalidArgument` naming `name` whose expected / got texts contain the needles.
#[track_caller]
fn invalid<T: std::fmt::Debug>(r: diffuse_spec::Result<T>, name: &str, expected: &str, got: &str) {
    match r {
        Err(Error::InvalidArgument { name: n, expected: e, got: g }) => {
            assert_eq!(n, name, "expected: {e}, got: {g}");
            assert!(e.contains(expected), "`{n}`: expected {e:?} to contain {expected:?}");
            assert!(g.contains(got), "`{n}`: got {g:?} to contain {got:?}");
        }
        other => panic!("expected InvalidArgument `{name}`, got {other:?}"),
    }
}

#[test]
fn probe_labels_out_of_range_quirk_q10() {
    let net = probe();
    let y = Tensor::from_slice(&[0i64, 1001, 5]);
    invalid(net.forward(&x(), &t3([0.1, 0.2, 0.3]), Cond::labels(Some(&y)), Pass::eval()), "y", "class labels in 0..=1000", "[0, 1001]");
    let y = Tensor::from_slice(&[-3i64, 0, 5]);
    invalid(net.forward(&x(), &t3([0.1, 0.2, 0.3]), Cond::labels(Some(&y)), Pass::eval()), "y", "0..=1000", "[-3, 5]");
}

#[test]
fn probe_labels_of_the_wrong_length_or_dtype() {
    let net = probe();
    let t = t3([0.1, 0.2, 0.3]);
    invalid(net.forward(&x(), &t, Cond::labels(Some(&Tensor::from_slice(&[1i64, 2]))), Pass::eval()), "y", "shape [3]", "[2]");
    invalid(net.forward(&x(), &t, Cond::labels(Some(&Tensor::from_slice(&[1f32, 2., 3.]))), Pass::eval()), "y", "integer", "Float");
}

#[test]
fn probe_input_of_the_wrong_dtype() {
    let net = probe();
    invalid(net.forward(&x().to_kind(Kind::Double), &t3([0.1, 0.2, 0.3]), Cond::default(), Pass::eval()), "x", "dtype Float", "Double");
    invalid(net.forward(&x(), &t3([0.1, 0.2, 0.3]).to_kind(Kind::Double), Cond::default(), Pass::eval()), "t", "dtype Float", "Double");
}

/// A NaN time is refused; an infinite one is accepted (EDM feeds `c_noise = log(0)/4 = -inf`
/// at t = 0 and the reference answers NaN: quirk Q12, a documented result).
#[test]
fn probe_nan_time_refused_infinite_time_accepted() {
    let net = probe();
    invalid(net.forward(&x(), &t3([0.1, f32::NAN, 0.3]), Cond::default(), Pass::eval()), "t", "no NaN", "NaN");
    let dt = t3([0.1, f32::NAN, 0.3]);
    invalid(net.forward(&x(), &t3([0.1, 0.2, 0.3]), Cond { dt: Some(&dt), ..Cond::default() }, Pass::eval()), "dt", "no NaN", "NaN");
    let inf = t3([0.1, f32::NEG_INFINITY, 0.3]);
    assert!(net.forward(&x(), &inf, Cond::default(), Pass::eval()).is_ok());
}

#[test]
fn probe_wrong_channels_and_dt_shape() {
    let net = probe();
    invalid(net.forward(&Tensor::ones([3, 5, 7], (Kind::Float, CPU)), &t3([0.1, 0.2, 0.3]), Cond::default(), Pass::eval()), "x", "[B, ..., 2]", "[3, 5, 7]");
    let dt = Tensor::from_slice(&[0.1f32]);
    invalid(net.forward(&x(), &t3([0.1, 0.2, 0.3]), Cond { dt: Some(&dt), ..Cond::default() }, Pass::eval()), "dt", "shape [3]", "[1]");
}

#[test]
fn probe_empty_batch() {
    let net = probe();
    let x0 = Tensor::ones([0, 5, 2], (Kind::Float, CPU));
    invalid(net.forward(&x0, &Tensor::zeros([0], (Kind::Float, CPU)), Cond::default(), Pass::eval()), "x", "at least 1 example", "[0, 5, 2]");
}

#[test]
fn sit_pred_refuses_an_infinite_time() {
    // Before issue 10, SiT's pred accepted t = inf ("any finite time" was not enforced).
    let sit = SiT::new(SiTConfig::default()).unwrap();
    invalid(sit.pred(&probe(), &x(), Time::from(&t3([0.1, f32::INFINITY, 0.3])), Cond::none()), "t", "finite", "infinity");
    invalid(sit.pred(&probe(), &x(), Time::Scalar(f64::INFINITY), Cond::none()), "t", "finite", "infinity");
}

#[test]
fn sit_time_of_the_wrong_shape_or_dtype() {
    let sit = SiT::new(SiTConfig::default()).unwrap();
    invalid(sit.pred(&probe(), &x(), Time::from(&Tensor::from_slice(&[0.5f32])), Cond::none()), "t", "shape [3]", "[1]");
    invalid(sit.pred(&probe(), &x(), Time::from(&Tensor::from_slice(&[1i64, 0, 1])), Cond::none()), "t", "a float tensor", "Int64");
}

#[test]
fn sit_loss_with_integer_data() {
    let sit = SiT::new(SiTConfig::default()).unwrap();
    let mut rngs = Rngs::new(&[("default", 0)]).unwrap();
    invalid(sit.loss(&probe(), &Tensor::ones([3, 5, 2], (Kind::Int64, CPU)), Cond::none(), &mut rngs), "x", "float32", "Int64");
}

/// Negative sigmas are refused; at sigma = 0 EDM's pred and score are the reference's NaN
/// (quirk Q12, a documented result pinned by the fixture `pred_edm_t0_q12`).
#[test]
fn edm_time_out_of_range_and_quirk_q12() {
    let edm = Edm::new(EdmConfig::default()).unwrap();
    invalid(edm.pred(&probe(), &x(), Time::from(&t3([0.1, -0.2, 0.3])), Cond::none()), "t", "sigma", "[-0.2");
    let s = edm.score(&probe(), &x(), Time::from(&t3([0.1, 0.0, 0.3])), Cond::none()).unwrap();
    let finite: Vec<bool> = Vec::try_from(&s.isfinite().flatten(1, -1).all_dim(1, false)).unwrap();
    assert_eq!(finite, vec![true, false, true]);
}

#[test]
fn meanflow_pred_checks_r() {
    let mf = MeanFlow::new(MeanFlowConfig::default()).unwrap();
    let t = t3([0.5, 0.6, 0.7]);
    invalid(mf.average_velocity(&probe(), &x(), Time::from(&t), Time::from(&t3([0.1, f32::NAN, 0.2])), Cond::none()), "r", "finite", "NaN");
    invalid(mf.average_velocity(&probe(), &x(), Time::from(&t), Time::from(&Tensor::from_slice(&[0.1f32])), Cond::none()), "r", "shape [3]", "[1]");
    // dt is MeanFlow's own
    invalid(mf.pred(&probe(), &x(), Time::from(&t), Cond { dt: Some(&t), ..Cond::default() }), "dt", "none", "a tensor");
}

#[test]
fn meanflow_public_steps_refuse_scalars_instead_of_panicking() {
    let mf = MeanFlow::new(MeanFlowConfig { guidance_scale: 2.0, ..Default::default() }).unwrap();
    let mut rngs = Rngs::new(&[("default", 0)]).unwrap();
    let scalar = Tensor::from(0.5f32);
    let y = Tensor::from_slice(&[1i64, 2, 3]);
    invalid(mf.insta_velocity(&probe(), &x(), &x(), &scalar, Cond::labels(Some(&y)), None, &mut rngs), "t", "a [B] vector", "[]");
    invalid(mf.cond_drop(&x(), &x(), &x(), &Tensor::from(3i64), &Tensor::from(1000i64), &mut rngs), "y", "a [B] vector", "[]");
}

#[test]
fn an_unknown_time_distribution() {
    match TimeDist::parse("gaussian") {
        Err(Error::Unknown { what, name, known }) => {
            assert_eq!((what.as_str(), name.as_str()), ("time distribution", "gaussian"));
            assert!(known.contains("logitnormal"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_empty_batch_of_times() {
    let mut rngs = Rngs::new(&[("default", 0)]).unwrap();
    invalid(TimeDist::Uniform.sample(0, 0.0, 1.0, &mut rngs, CPU), "batch", "at least 1", "0");
}

#[test]
fn t_shift_and_bcast_right_arguments() {
    let t = t3([0.1, 0.2, 0.3]);
    invalid(t_shift(&t, 0.0), "s", "> 0", "0");
    invalid(t_shift(&t, f64::NAN), "s", "finite", "NaN");
    invalid(bcast_right(&Tensor::ones([2, 2], (Kind::Float, CPU)), 3), "v", "[B] vector", "[2, 2]");
}

#[test]
fn interface_settings_out_of_their_domain() {
    invalid(SiT::new(SiTConfig { t_shift_base: 0.0, ..Default::default() }), "t_shift_base", "> 0", "0");
    invalid(Edm::new(EdmConfig { base: BaseConfig { x_sigma: f64::INFINITY, ..Default::default() }, ..Default::default() }), "x_sigma", "finite", "inf");
    invalid(MeanFlow::new(MeanFlowConfig { fm_portion: 1.5, ..Default::default() }), "fm_portion", "[0, 1]", "1.5");
}

#[test]
fn random_draw_arguments() {
    let mut rngs = Rngs::new(&[("noise", 0)]).unwrap();
    invalid(rngs.uniform("noise", &[2], 1.0, 0.0, CPU), "minval, maxval", "minval < maxval", "[1, 0)");
    invalid(rngs.normal("noise", &[2, -3], CPU), "shape", "non-negative", "[2, -3]");
    // 2^62 elements: refused up front instead of a `Vec` capacity-overflow panic.
    invalid(rngs.normal("noise", &[1 << 31, 1 << 31], CPU), "shape", "fits in memory", "[2147483648, 2147483648]");
    // No stream of that name and no `default` to fall back to.
    assert!(matches!(rngs.normal("time", &[2], CPU), Err(Error::Rng(_))));
}

#[test]
fn jvp_tangents_must_be_float_and_on_the_primal_device() {
    let mut f = |p: &[Tensor]| -> diffuse_spec::Result<Tensor> { Ok(p[0].shallow_clone()) };
    let p = Tensor::ones([2], (Kind::Float, CPU));
    invalid(jvp(JvpBackend::DoubleBackward, &mut f, &[p.shallow_clone()], &[Some(Tensor::ones([2], (Kind::Int64, CPU)))]), "tangents[0]", "a float tensor", "Int64");
    let pi = Tensor::ones([2], (Kind::Int64, CPU));
    invalid(jvp(JvpBackend::ForwardAd, &mut f, &[pi], &[Some(p.shallow_clone())]), "primals[0]", "a float tensor", "Int64");
    invalid(jvp(JvpBackend::DoubleBackward, &mut f, &[p.shallow_clone()], &[Some(Tensor::ones([3], (Kind::Float, CPU)))]), "tangents[0]", "shape [2]", "[3]");
}

#[test]
fn cuda_tensors_without_a_gpu_or_on_the_wrong_device() {
    // With a GPU: an input on CUDA given to a CPU network names the device; without one,
    // nothing to check here (the CLI's `--device cuda` error is tested in tests/cli.rs).
    if !tch::Cuda::is_available() {
        eprintln!("SKIPPED: no GPU, so no tensor can live on another device");
        return;
    }
    let net = probe();
    let xc = x().to_device(Device::Cuda(0));
    invalid(net.forward(&xc, &t3([0.1, 0.2, 0.3]), Cond::default(), Pass::eval()), "x", "device Cpu", "Cuda(0)");
}
