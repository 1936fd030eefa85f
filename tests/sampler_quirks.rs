//! The samplers' quirks (Q1, Q5, Q6, Q13, Q14) shown where they bite, their named corrections,
//! guidance, the random draws of Euler-Maruyama, and input validation.

use diffuse_spec::interfaces::{AnyInterface, Edm, EdmConfig, MeanFlow, MeanFlowConfig, Sct, SctConfig, SiT, SiTConfig};
use diffuse_spec::networks::{Accepts, Backbone, Cond, NetOutput, Pass};
use diffuse_spec::rng::Rngs;
use diffuse_spec::samplers::{
    AnySampler, ConstantCoeff, DiffusionCoeff, Euler, EulerJump, EulerJumpOptions, EulerMaruyama, EulerMaruyamaOptions, GridKind, GridKwargs, Heun, HeunOptions,
    HeunVariant, JumpGuidance, LastStepLabels, Model, Sample, SampleArgs, Sampler, SamplerConfig,
};
use diffuse_spec::{Error, Result};
use tch::{Kind, Tensor};

/// `v(x, t, y) = lambda x + c [y != 1000]`: a label shifts the velocity by `c`, so guidance
/// with scale `w` shifts it by `w c`.
struct Field {
    lambda: f64,
    c: f64,
}

impl Backbone for Field {
    fn forward(&self, x: &Tensor, _t: &Tensor, cond: Cond<'_>, _p: Pass<'_>) -> Result<NetOutput> {
        let b = x.size()[0];
        let on = match cond.y {
            Some(y) => y.f_ne(1000)?.f_to_kind(Kind::Float)?,
            None => Tensor::f_zeros([b], (Kind::Float, x.device()))?,
        };
        let mut shape = vec![b];
        shape.extend(std::iter::repeat_n(1, x.dim() - 1));
        Ok(NetOutput { out: x.f_mul_scalar(self.lambda)?.f_add(&on.f_reshape(&shape)?.f_mul_scalar(self.c)?)?, features: vec![] })
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![]
    }
    fn accepts(&self) -> Accepts<'_> {
        // labels, and MeanFlow's dt (which it ignores)
        Accepts { labels: true, dt: true, ..Accepts::NOTHING }
    }
}

fn uniform(steps: i64, kw: GridKwargs) -> SamplerConfig {
    SamplerConfig { num_sampling_steps: steps, sampling_time_dist: GridKind::Uniform, sampling_time_kwargs: kw }
}

fn x0() -> Tensor {
    Tensor::from_slice(&[0.5f32, -1.0, 1.5, 0.25, -0.75, 2.0]).reshape([2, 3, 1])
}

fn labels() -> Tensor {
    Tensor::from_slice(&[3i64, 7])
}

fn sit() -> SiT {
    SiT::new(SiTConfig::default()).unwrap()
}

/// Q1, guided: the reference's second slope is `g(x', t') + w (d(x, t) - g(x', t'))`; the true
/// Heun's is the guided slope at the predicted point. Checked on one step by hand.
#[test]
fn heun_second_slope_q1() {
    let (lambda, c, w) = (0.8, 0.3, 2.5);
    let net = Field { lambda, c };
    let iface = sit();
    let y = labels();
    let args = SampleArgs::new(Model::new(&iface, &net), None, w, Some(&y)).unwrap();
    let x = x0();
    let (t, tn) = (1.0f32, 0.75f32);
    let h = (tn - t) as f64;
    let reference = Heun::new(uniform(4, GridKwargs::default()), HeunOptions::default()).unwrap();
    let corrected = Heun::new(uniform(4, GridKwargs::default()), HeunOptions { variant: HeunVariant::True }).unwrap();
    let a = reference.forward(&mut Rngs::with_default(0), &args, &x, t, tn).unwrap();
    let b = corrected.forward(&mut Rngs::with_default(0), &args, &x, t, tn).unwrap();
    // Guided slope D(x) = lambda x + w c; the predictor x' = x + h D(x).
    let d1 = &x * lambda + w * c;
    let xp = &x + &d1 * h;
    let ref_d2 = &xp * lambda + w * (&x * lambda + c - &xp * lambda);
    let true_d2 = &xp * lambda + w * c;
    let want_a = &x + (&d1 + ref_d2) * (0.5 * h);
    let want_b = &x + (&d1 + true_d2) * (0.5 * h);
    assert!(a.allclose(&want_a, 1e-6, 1e-6, false), "{a} vs {want_a}");
    assert!(b.allclose(&want_b, 1e-6, 1e-6, false), "{b} vs {want_b}");
    assert!(!a.allclose(&b, 1e-4, 1e-4, false));
}

/// Guidance: `d = g + w (d - g)` with null labels for the guidance pass; `w = 1` never calls the
/// guidance model; without labels guidance changes nothing.
#[test]
fn euler_guidance_blends_with_the_null_class() {
    let (lambda, c, w) = (0.5, 0.4, 3.0);
    let net = Field { lambda, c };
    let iface = sit();
    let y = labels();
    let model = Model::new(&iface, &net);
    let e = Euler::new(uniform(1, GridKwargs::default())).unwrap();
    let x = x0();
    let out = e.sample(&mut Rngs::with_default(0), model, &x, None, w, Some(&y)).unwrap();
    // One step 1 -> 0: x + (0 - 1)(lambda x + w c).
    let want = &x - (&x * lambda + w * c);
    assert!(out.allclose(&want, 1e-6, 1e-6, false));
    let unlabelled = e.sample(&mut Rngs::with_default(0), model, &x, None, w, None).unwrap();
    assert!(unlabelled.allclose(&(&x - &x * lambda), 1e-6, 1e-6, false));
    // A separate guidance model is used for the unconditional pass.
    let other = Field { lambda: 0.0, c: 0.0 };
    let g = Model::new(&iface, &other);
    let out = e.sample(&mut Rngs::with_default(0), model, &x, Some(g), w, Some(&y)).unwrap();
    let want = &x - w * (&x * lambda + c);
    assert!(out.allclose(&want, 1e-6, 1e-6, false));
}

fn em(kw: GridKwargs, opts: EulerMaruyamaOptions) -> Result<EulerMaruyama> {
    EulerMaruyama::new(uniform(6, kw), opts)
}

/// Q5: `linear_kl` is infinite at the default `t_start = 1`; the crate refuses the grid.
#[test]
fn euler_maruyama_refuses_an_infinite_coefficient_q5() {
    let err = em(GridKwargs::default(), EulerMaruyamaOptions::default()).unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { name, .. } if name == "diffusion_coeff"), "{err}");
    assert!(em(GridKwargs { t_start: Some(0.98), ..Default::default() }, EulerMaruyamaOptions::default()).is_ok());
    // The other coefficients are finite at t = 1.
    for coeff in [DiffusionCoeff::Linear, DiffusionCoeff::Cos, DiffusionCoeff::Concave] {
        assert!(em(GridKwargs::default(), EulerMaruyamaOptions { diffusion_coeff: coeff, ..Default::default() }).is_ok());
    }
}

/// Q13: `constant` is refused unless asked for by name; then `w(t) = norm`.
#[test]
fn euler_maruyama_constant_coefficient_q13() {
    let opts = EulerMaruyamaOptions { diffusion_coeff: DiffusionCoeff::Constant, diffusion_coeff_norm: 0.3, ..Default::default() };
    assert!(matches!(em(GridKwargs::default(), opts), Err(Error::Unsupported { .. })));
    let s = em(GridKwargs::default(), EulerMaruyamaOptions { constant_coeff: ConstantCoeff::Norm, ..opts }).unwrap();
    assert_eq!(s.diffusion_coeff(0.7), 0.3);
    let net = Field { lambda: 0.5, c: 0.0 };
    let iface = sit();
    let out = s.sample(&mut Rngs::with_default(1), Model::new(&iface, &net), &x0(), None, 1.0, None).unwrap();
    assert!(out.isfinite().all().int64_value(&[]) == 1);
}

/// The coefficients, as the reference writes them.
#[test]
fn diffusion_coefficients() {
    let t = 0.3f32;
    let pi = std::f64::consts::PI;
    let close = |a: f32, b: f64| ((a as f64) - b).abs() < 1e-6 * b.abs().max(1.0);
    assert!(close(DiffusionCoeff::LinearKl.eval(t, 2.0), 2.0 * (0.09 / 0.7 + 0.3)));
    assert!(close(DiffusionCoeff::Linear.eval(t, 2.0), 0.6));
    assert!(close(DiffusionCoeff::Cos.eval(t, 0.5), 0.25 * (0.5 * (pi * 0.3).cos() + 1.0).powi(2)));
    assert!(close(DiffusionCoeff::Concave.eval(t, 0.5), 0.25 * (0.5 * (pi * 0.3).sin() + 1.0).powi(2)));
    assert!(DiffusionCoeff::LinearKl.eval(1.0, 1.0).is_infinite());
}

/// Q6: the reference's last step gives the guidance model the conditional labels, so with the
/// guidance model equal to the model the last step is unguided; `LastStepLabels::Null` guides it.
#[test]
fn euler_maruyama_last_step_labels_q6() {
    let net = Field { lambda: 0.5, c: 0.4 };
    let iface = sit();
    let y = labels();
    let model = Model::new(&iface, &net);
    let kw = GridKwargs { t_start: Some(0.9), t_end: Some(0.05), ..Default::default() };
    let faithful = em(kw, EulerMaruyamaOptions::default()).unwrap();
    let corrected = em(kw, EulerMaruyamaOptions { last_step_labels: LastStepLabels::Null, ..Default::default() }).unwrap();
    let guided = SampleArgs::new(model, None, 2.0, Some(&y)).unwrap();
    let unguided = SampleArgs::new(model, None, 1.0, Some(&y)).unwrap();
    let x = x0();
    let step = |s: &EulerMaruyama, a: &SampleArgs<SiT>| s.last_step(&mut Rngs::with_default(0), a, &x, 0.2, 0.05).unwrap();
    assert!(step(&faithful, &guided).equal(&step(&faithful, &unguided)));
    assert!(!step(&corrected, &guided).allclose(&step(&faithful, &guided), 1e-4, 1e-4, false));
}

/// Euler-Maruyama draws one normal of `x`'s shape per non-last step from the `default` stream:
/// same seed, same sample; another seed, another sample; the counter ends at `steps - 1`.
#[test]
fn euler_maruyama_draws_from_the_default_stream() {
    let net = Field { lambda: 0.5, c: 0.0 };
    let iface = sit();
    let model = Model::new(&iface, &net);
    let s = em(GridKwargs { t_start: Some(0.95), ..Default::default() }, EulerMaruyamaOptions::default()).unwrap();
    let mut r1 = Rngs::with_default(5);
    let a = s.sample(&mut r1, model, &x0(), None, 1.0, None).unwrap();
    let b = s.sample(&mut Rngs::with_default(5), model, &x0(), None, 1.0, None).unwrap();
    let c = s.sample(&mut Rngs::with_default(6), model, &x0(), None, 1.0, None).unwrap();
    assert!(a.equal(&b) && !a.equal(&c));
    assert_eq!(r1.counter("default").unwrap(), 5);
}

/// Q14: Euler-jump ignores guidance by default and refuses it on request. (With SiT, which has
/// no average velocity, it does not compile; through `AnySampler` it is an error.)
#[test]
fn euler_jump_guidance_q14() {
    let net = Field { lambda: 0.5, c: 0.4 };
    let mf = MeanFlow::new(MeanFlowConfig::default()).unwrap();
    let model = Model::new(&mf, &net);
    let jump = EulerJump::new(uniform(2, GridKwargs::default()), EulerJumpOptions::default()).unwrap();
    let unguided = jump.sample(&mut Rngs::with_default(0), model, &x0(), None, 1.0, None).unwrap();
    assert!(jump.sample(&mut Rngs::with_default(0), model, &x0(), None, 3.0, None).unwrap().equal(&unguided));
    let strict = EulerJump::new(uniform(2, GridKwargs::default()), EulerJumpOptions { guidance: JumpGuidance::Refuse }).unwrap();
    assert!(matches!(strict.sample(&mut Rngs::with_default(0), model, &x0(), None, 3.0, None), Err(Error::Unsupported { .. })));
    let settings = serde_json::json!({"num_sampling_steps": 2, "sampling_time_dist": "uniform"}).as_object().cloned().unwrap();
    let any = AnySampler::from_settings("euler_jump", &settings).unwrap();
    let e = any.sample(&mut Rngs::with_default(0), &AnyInterface::SiT(sit()), &net, &x0(), 1.0, None).unwrap_err();
    assert!(matches!(&e, Error::Unsupported { why, .. } if why.contains("average velocity")), "{e}");
    // Euler-Maruyama through AnySampler needs a score, which sCT has not.
    let settings = serde_json::json!({"num_sampling_steps": 2, "sampling_time_dist": "uniform", "diffusion_coeff": "linear"}).as_object().cloned().unwrap();
    let sct = Sct::with_default_head(SctConfig::default(), tch::Device::Cpu).unwrap();
    let any = AnySampler::from_settings("euler-maruyama", &settings).unwrap();
    assert!(matches!(any.sample(&mut Rngs::with_default(0), &AnyInterface::Sct(sct), &net, &x0(), 1.0, None), Err(Error::Unsupported { .. })));
}

/// EDM on the exp grid: the sample starts at `x * sigma_max` and the network is never asked for
/// sigma = 0; the exp grid takes one step more than asked (Q4).
#[test]
fn heun_on_the_exp_grid_with_edm() {
    let net = Field { lambda: 0.0, c: 0.0 };
    let edm = Edm::new(EdmConfig::default()).unwrap();
    let h = Heun::new(SamplerConfig::new(5, GridKind::Exp), HeunOptions::default()).unwrap();
    assert_eq!(h.timegrid().unwrap().len(), 7);
    let out = h.sample(&mut Rngs::with_default(0), Model::new(&edm, &net), &x0(), None, 1.0, None).unwrap();
    assert!(out.isfinite().all().int64_value(&[]) == 1);
}

#[test]
fn invalid_inputs_are_errors() {
    let invalid = |r: Result<EulerMaruyama>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(matches!(Euler::new(uniform(0, GridKwargs::default())), Err(Error::InvalidArgument { .. })));
    assert!(matches!(Euler::new(uniform(-3, GridKwargs::default())), Err(Error::InvalidArgument { .. })));
    assert!(matches!(Euler::new(uniform(4, GridKwargs { t_start: Some(0.2), t_end: Some(0.5), ..Default::default() })), Err(Error::InvalidArgument { .. })));
    let exp = |kw: GridKwargs| Heun::new(SamplerConfig { num_sampling_steps: 4, sampling_time_dist: GridKind::Exp, sampling_time_kwargs: kw }, HeunOptions::default());
    assert!(matches!(exp(GridKwargs { sigma_min: Some(-0.1), ..Default::default() }), Err(Error::InvalidArgument { .. })));
    assert!(matches!(exp(GridKwargs { rho: Some(0.0), ..Default::default() }), Err(Error::InvalidArgument { .. })));
    let kw = GridKwargs { t_start: Some(0.9), ..Default::default() };
    assert!(invalid(em(kw, EulerMaruyamaOptions { diffusion_coeff_norm: f64::NAN, ..Default::default() })));
    // Sampling-time checks: dtype, labels, guidance scale.
    let net = Field { lambda: 0.5, c: 0.0 };
    let iface = sit();
    let model = Model::new(&iface, &net);
    let e = Euler::new(uniform(3, GridKwargs::default())).unwrap();
    let mut r = Rngs::with_default(0);
    assert!(matches!(e.sample(&mut r, model, &x0().to_kind(Kind::Double), None, 1.0, None), Err(Error::InvalidArgument { .. })));
    assert!(matches!(e.sample(&mut r, model, &x0(), None, 1.0, Some(&Tensor::from_slice(&[1i64, 2, 3]))), Err(Error::InvalidArgument { .. })));
    assert!(matches!(e.sample(&mut r, model, &x0(), None, f64::NAN, None), Err(Error::InvalidArgument { .. })));
    // Names.
    let settings = |v: serde_json::Value| v.as_object().cloned().unwrap();
    let ok = settings(serde_json::json!({"num_sampling_steps": 4, "sampling_time_dist": "uniform"}));
    assert!(matches!(AnySampler::from_settings("dpm++", &ok), Err(Error::Unknown { .. })));
    let bad = settings(serde_json::json!({"num_sampling_steps": 4, "sampling_time_dist": "uniform", "diffusion_coeff": "sqrt"}));
    assert!(matches!(AnySampler::from_settings("euler-maruyama", &bad), Err(Error::Unknown { .. })));
    let heun_true = settings(serde_json::json!({"num_sampling_steps": 4, "sampling_time_dist": "exp", "variant": "true"}));
    match AnySampler::from_settings("heun", &heun_true).unwrap() {
        AnySampler::Heun(h) => assert_eq!(h.options().variant, HeunVariant::True),
        other => panic!("{other:?}"),
    }
}
