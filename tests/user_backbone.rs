//! A user's own network as a backbone, driven through the interfaces as the reference's unit
//! tests drive theirs: extra inputs passed through `Cond` (the reference's `net(x_t, t, *args)`
//! with `x, n`), the conditioning a backbone declares, and MeanFlow's pieces (`target`,
//! `neg_y`) for given inputs.

use diffuse_spec::interfaces::{Interface, MeanFlow, MeanFlowConfig, SiT, SiTConfig, Time};
use diffuse_spec::networks::{Accepts, Backbone, Cond, NetOutput, Pass, ProbeMlp, ProbeMlpConfig};
use diffuse_spec::rng::Rngs;
use diffuse_spec::{Error, Result};
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

/// The reference tests' oracle: it is handed the data `x` and the noise `n` as extra inputs
/// and returns the exact velocity `n - x` of the linear path, whatever `(x_t, t)`.
struct Oracle;

impl Backbone for Oracle {
    fn forward(&self, _x_t: &Tensor, _t: &Tensor, cond: Cond<'_>, _pass: Pass<'_>) -> Result<NetOutput> {
        let get = |name: &str| cond.extra(name).ok_or_else(|| Error::invalid(format!("extra.{name}"), "the oracle's input", "none"));
        Ok(get("n")?.f_sub(get("x")?)?.into())
    }
    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![]
    }
    fn accepts(&self) -> Accepts<'_> {
        // MeanFlow passes dt = t - r; the oracle ignores it.
        Accepts { dt: true, extra: &["x", "n"], ..Accepts::NOTHING }
    }
}

fn streams() -> Rngs {
    Rngs::new(&[("time", 11), ("noise", 12), ("label_dropout", 13)]).unwrap()
}

fn data() -> Tensor {
    Rngs::new(&[("data", 5)]).unwrap().normal("data", &[6, 4, 2], CPU).unwrap()
}

/// SiT with the oracle: the loss is exactly zero, and the noise the oracle was given is the
/// noise the loss drew (the draws are known in advance from a fork of the streams).
#[test]
fn sit_loss_of_an_oracle_given_x_and_n_is_zero() {
    let sit = SiT::new(SiTConfig::default()).unwrap();
    let x = data();
    let mut rngs = streams();
    let mut peek = rngs.fork();
    let _t = sit.sample_t(6, &mut peek, CPU).unwrap();
    let n = sit.sample_n(&x.size(), &mut peek, CPU).unwrap();
    let extra = [("x", &x), ("n", &n)];
    let o = sit.loss(&Oracle, &x, Cond::none().with_extra(&extra), &mut rngs).unwrap();
    assert!(o.n.equal(&n));
    assert_eq!(o.loss.abs().max().double_value(&[]), 0.0);
    // pred passes the extras through too.
    let v = sit.pred(&Oracle, &o.x_t, Time::from(&o.t), Cond::none().with_extra(&extra)).unwrap();
    assert!(v.equal(&(&n - &x)));
}

/// MeanFlow with the oracle (unguided): `u = n - x` does not depend on `(x_t, t, dt)`, so the
/// JVP term vanishes and the target is `n - x`: the loss is exactly zero.
#[test]
fn meanflow_loss_of_an_oracle_given_x_and_n_is_zero() {
    let mf = MeanFlow::new(MeanFlowConfig { guidance_scale: 1.0, guidance_mixture_ratio: 0.0, ..Default::default() }).unwrap();
    let x = data();
    let mut rngs = streams();
    let mut peek = rngs.fork();
    let _tr = mf.sample_t_r(6, &mut peek, CPU).unwrap();
    let n = mf.sample_n(&x.size(), &mut peek, CPU).unwrap();
    let extra = [("x", &x), ("n", &n)];
    let o = mf.loss(&Oracle, &x, Cond::none().with_extra(&extra), &mut rngs).unwrap();
    assert!(o.target.equal(&(&n - &x)));
    assert_eq!(o.loss.abs().max().double_value(&[]), 0.0);
}

/// Built-in backbones take no extra inputs and refuse them by name; so is a label given to a
/// network that takes none, and MeanFlow refuses a caller's `dt`.
#[test]
fn undeclared_conditioning_is_refused_by_name() {
    let probe = ProbeMlp::init(ProbeMlpConfig { channels: 2, hidden: 4, freqs: 2 }, 0, CPU).unwrap();
    let sit = SiT::new(SiTConfig::default()).unwrap();
    let x = data();
    let extra = [("x", &x)];
    let e = sit.loss(&probe, &x, Cond::none().with_extra(&extra), &mut streams()).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument { name, got, .. } if name == "extra.x" && got.contains("`x`")), "{e}");
    let y = Tensor::zeros([6], (Kind::Int64, CPU));
    let e = sit.loss(&Oracle, &x, Cond::labels(Some(&y)), &mut streams()).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "y"), "{e}");
    let mf = MeanFlow::new(MeanFlowConfig::default()).unwrap();
    let e = mf.loss(&Oracle, &x, Cond::labels(Some(&y)), &mut streams()).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "y"), "{e}");
    let dt = Tensor::zeros([6], (Kind::Float, CPU));
    let e = mf.loss(&probe, &x, Cond { dt: Some(&dt), ..Cond::default() }, &mut streams()).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "dt"), "{e}");
    let dup = [("x", &x), ("x", &x)];
    let e = sit.pred(&Oracle, &x, Time::Scalar(0.5), Cond::none().with_extra(&dup)).unwrap_err();
    assert!(e.to_string().contains("each extra input once"), "{e}");
}

/// MeanFlow's `target(x, n, t, r, ...)` for given inputs is the target its loss regresses on
/// (same draws: the guidance forwards', the condition drop's), and `u` the loss's network
/// output; `neg_y` defaults to the null class.
#[test]
fn meanflow_target_for_given_inputs_is_the_loss_target() {
    let probe = ProbeMlp::init(ProbeMlpConfig { channels: 2, hidden: 8, freqs: 3 }, 1, CPU).unwrap();
    let mf = MeanFlow::new(MeanFlowConfig { guidance_scale: 2.0, guidance_mixture_ratio: 0.3, ..Default::default() }).unwrap();
    let x = data();
    let y = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]);
    let cond = Cond::labels(Some(&y));
    let mut a = streams();
    let o = mf.loss(&probe, &x, cond, &mut a).unwrap();
    let mut b = streams();
    let (t, r) = mf.sample_t_r(6, &mut b, CPU).unwrap();
    let n = mf.sample_n(&x.size(), &mut b, CPU).unwrap();
    let tg = mf.target(&probe, &x, &n, &t, &r, cond, None, &mut b).unwrap();
    assert!(tg.target.equal(&o.target) && tg.u.equal(&o.net_out));
    assert_eq!(a.counter("label_dropout").unwrap(), b.counter("label_dropout").unwrap());
    // neg_y: the null class by default; another one changes the guided target.
    let null = y.full_like(1000);
    let same = mf.loss_with_neg_y(&probe, &x, cond, Some(&null), &mut streams()).unwrap();
    assert!(same.target.equal(&o.target));
    let other = mf.loss_with_neg_y(&probe, &x, cond, Some(&y.full_like(7)), &mut streams()).unwrap();
    assert!(!other.target.equal(&o.target));
}
