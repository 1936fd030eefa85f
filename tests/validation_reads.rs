//! Device-to-host reads of input validation, counted per `loss` and `pred` at each level
//! (`validate::host_reads`, a per-thread counter every validation read goes through).
//!
//! `Full` batches the value checks of each validation point (the interface's inputs; each
//! network forward's inputs) into one read; `Cheap` checks shapes, dtypes, devices and
//! conditioning only, and must read nothing. Run with `--nocapture` for the table.

use diffuse_spec::interfaces::{
    AverageVelocity, BaseConfig, Edm, EdmConfig, Interface, LogVarHead, MeanFlow, MeanFlowConfig, Scd, ScdConfig, Score, Sct, SctConfig, SiT, SiTConfig, Teacher, TeacherConvention,
    Time,
};
use diffuse_spec::jvp::JvpBackend;
use diffuse_spec::networks::{Backbone, Cond, Dit, DitConfig, ProbeMlp, ProbeMlpConfig};
use diffuse_spec::rng::Rngs;
use diffuse_spec::samplers::{Euler, GridKind, Model, Sample, SamplerConfig};
use diffuse_spec::validate::{host_reads, Validation};
use diffuse_spec::Error;
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn probe() -> ProbeMlp {
    ProbeMlp::init(ProbeMlpConfig { channels: 3, hidden: 8, freqs: 2 }, 0, CPU).unwrap()
}

fn streams() -> Rngs {
    Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)]).unwrap()
}

fn base(level: Validation) -> BaseConfig {
    BaseConfig { validation: level, ..Default::default() }
}

fn sct_cfg(level: Validation) -> SctConfig {
    SctConfig { base: BaseConfig { validation: level, ..BaseConfig::sct() }, ..Default::default() }
}

/// The reads `f` makes on this thread.
fn reads<T>(f: impl FnOnce() -> diffuse_spec::Result<T>) -> u64 {
    let before = host_reads();
    f().unwrap();
    host_reads() - before
}

struct Counts {
    what: &'static str,
    loss: u64,
    pred: u64,
}

/// `(loss, pred)` reads of every interface at `level`, with the probe network (which checks
/// its inputs' values) and, for SiT, a DiT (which checks shapes only).
fn counts(level: Validation) -> Vec<Counts> {
    let net = probe();
    let x = Tensor::ones([4, 5, 3], (Kind::Float, CPU)) * 0.3;
    let y = Tensor::from_slice(&[1i64, 2, 3, 1000]);
    let cond = Cond::labels(Some(&y));
    let t = Tensor::from_slice(&[0.2f32, 0.4, 0.6, 0.8]);
    let mut out = Vec::new();
    let mut push = |what, loss, pred| out.push(Counts { what, loss, pred });

    let sit = SiT::new(SiTConfig { base: base(level), ..Default::default() }).unwrap();
    push("SiT", reads(|| sit.loss(&net, &x, cond, &mut streams())), reads(|| sit.pred(&net, &x, Time::from(&t), cond)));
    push("SiT score", 0, reads(|| sit.score(&net, &x, Time::from(&t), cond)));
    push("SiT, scalar t", 0, reads(|| sit.pred(&net, &x, Time::Scalar(0.5), cond)));

    let edm = Edm::new(EdmConfig { base: base(level), ..Default::default() }).unwrap();
    push("EDM", reads(|| edm.loss(&net, &x, cond, &mut streams())), reads(|| edm.pred(&net, &x, Time::from(&t), cond)));

    let mf = MeanFlow::new(MeanFlowConfig { base: base(level), ..Default::default() }).unwrap();
    push("MeanFlow (mixture guidance)", reads(|| mf.loss(&net, &x, cond, &mut streams())), reads(|| mf.pred(&net, &x, Time::from(&t), cond)));
    push("MeanFlow u(x, t, r)", 0, reads(|| mf.average_velocity(&net, &x, Time::from(&t), Time::from(&(&t * 0.5)), cond)));
    let fad = MeanFlow::new(MeanFlowConfig { base: base(level), jvp: JvpBackend::ForwardAd, ..Default::default() }).unwrap();
    push("MeanFlow (mixture, forward AD)", reads(|| fad.loss(&net, &x, cond, &mut streams())), 0);
    let plain = MeanFlow::new(MeanFlowConfig { base: base(level), guidance_mixture_ratio: 0.0, ..Default::default() }).unwrap();
    push("MeanFlow (no guidance)", reads(|| plain.loss(&net, &x, cond, &mut streams())), 0);

    let sct = Sct::new(sct_cfg(level), LogVarHead::init(4, CPU, Kind::Float).unwrap()).unwrap();
    push("sCT", reads(|| sct.loss(&net, &x, cond, &mut streams())), reads(|| sct.pred(&net, &x, Time::from(&t), cond)));

    let teacher = Teacher::new(TeacherConvention::SiT(SiT::new(SiTConfig::default()).unwrap()), Box::new(probe())).unwrap();
    let scd = Scd::new(ScdConfig { sct: sct_cfg(level), ..Default::default() }, LogVarHead::init(4, CPU, Kind::Float).unwrap(), teacher).unwrap();
    push("sCD (SiT teacher)", reads(|| scd.loss(&net, &x, cond, &mut streams())), reads(|| scd.pred(&net, &x, Time::from(&t), cond)));

    let dcfg = DitConfig { input_size: 4, patch_size: 2, in_channels: 3, hidden_size: 8, depth: 1, num_heads: 2, freq_embed_size: 4, ..DitConfig::default() };
    let dit = Dit::init(dcfg, 0, CPU).unwrap();
    let xi = Tensor::ones([4, 4, 4, 3], (Kind::Float, CPU));
    push("SiT on a DiT", reads(|| sit.loss(&dit, &xi, cond, &mut streams())), reads(|| sit.pred(&dit, &xi, Time::from(&t), cond)));

    let euler = Euler::new(SamplerConfig::new(4, GridKind::Uniform)).unwrap();
    let noise = Tensor::ones([4, 5, 3], (Kind::Float, CPU));
    push("Euler, 4 steps, SiT", 0, reads(|| tch::no_grad(|| euler.sample(&mut Rngs::with_default(0), Model::new(&sit, &net), &noise, None, 1.0, Some(&y)))));
    out
}

#[test]
fn reads_per_loss_and_pred_at_each_level() {
    let full = counts(Validation::Full);
    let cheap = counts(Validation::Cheap);
    println!("{:<32} {:>10} {:>10} {:>11} {:>11}", "", "loss full", "pred full", "loss cheap", "pred cheap");
    for (f, c) in full.iter().zip(&cheap) {
        println!("{:<32} {:>10} {:>10} {:>11} {:>11}", f.what, f.loss, f.pred, c.loss, c.pred);
    }
    // Cheap reads nothing, anywhere.
    for c in &cheap {
        assert_eq!((c.loss, c.pred), (0, 0), "{}: cheap validation read from the device", c.what);
    }
    // Full: one read per validation point — the interface's inputs, each probe forward's
    // inputs (a DiT checks no values), EDM's drawn sigmas with its loss.
    let want: &[(&str, u64, u64)] = &[
        ("SiT", 2, 2),
        ("SiT score", 0, 2),
        ("SiT, scalar t", 0, 2),
        ("EDM", 3, 2),
        ("MeanFlow (mixture guidance)", 4, 2),
        ("MeanFlow u(x, t, r)", 0, 2),
        ("MeanFlow (mixture, forward AD)", 5, 0),
        ("MeanFlow (no guidance)", 2, 0),
        ("sCT", 2, 2),
        ("sCD (SiT teacher)", 3, 2),
        ("SiT on a DiT", 1, 1),
        ("Euler, 4 steps, SiT", 0, 8),
    ];
    for (f, &(what, loss, pred)) in full.iter().zip(want) {
        assert_eq!((f.what, f.loss, f.pred), (what, loss, pred));
    }
}

/// Cheap still refuses what costs no read (shapes, dtypes, conditioning), and lets values
/// through: NaN data flows into the loss, as in the reference.
#[test]
fn cheap_checks_structure_only() {
    let net = probe();
    let sit = SiT::new(SiTConfig { base: base(Validation::Cheap), ..Default::default() }).unwrap();
    let nan = Tensor::full([2, 5, 3], f64::NAN, (Kind::Float, CPU));
    let loss = sit.loss(&net, &nan, Cond::none(), &mut streams()).unwrap().loss;
    assert!(loss.isnan().all().int64_value(&[]) == 1);
    let full = SiT::new(SiTConfig::default()).unwrap();
    assert!(full.loss(&net, &nan, Cond::none(), &mut streams()).unwrap_err().to_string().contains("finite"));
    // Structural refusals at both levels.
    let ints = Tensor::ones([2, 5, 3], (Kind::Int64, CPU));
    assert!(matches!(sit.loss(&net, &ints, Cond::none(), &mut streams()), Err(Error::InvalidArgument { name, .. }) if name == "x"));
    let gw = Tensor::ones([2], (Kind::Float, CPU));
    let x = Tensor::ones([2, 5, 3], (Kind::Float, CPU));
    let e = sit.pred(&net, &x, Time::Scalar(0.5), Cond { gw: Some(&gw), ..Cond::default() }).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument { name, .. } if name == "gw"), "{e}");
    // A time outside the domain is refused on the host even at Cheap when it is a scalar.
    assert!(sit.pred(&net, &x, Time::Scalar(1.5), Cond::none()).is_err());
    assert!(sit.pred(&net, &x, Time::from(&Tensor::from_slice(&[1.5f32, 0.5])), Cond::none()).is_ok());
    // The network's own value checks follow the level the interface passes it.
    assert!(net.call(&nan, &gw, Cond::none(), diffuse_spec::networks::Pass::eval()).is_err());
    assert!(net.call(&nan, &gw, Cond::none(), diffuse_spec::networks::Pass::eval().with_validation(Validation::Cheap)).is_ok());
}
