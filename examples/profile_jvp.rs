//! Where the time of a MeanFlow (and an sCT) training step goes, part by part, on the bench-s
//! DiT (`benches/common/mod.rs`), for `docs/benchmarks.md`:
//!
//! ```text
//! cargo run --release --example profile_jvp -- [--jvp fused|double_backward|forward_ad]
//!     [--attention fused|math] [--reps N] [--device cpu|cuda] [--only SUBSTRING]
//! ```
//!
//! Each part runs `--reps` times, interleaved with the others (A B C ... A B C), and the
//! median is printed: the DiT forward without a graph (eval and train mode), with a graph,
//! with its backward; MeanFlow's guided velocity (two no-grad eval forwards at the reference
//! defaults), the JVP alone (the chosen backend; for `fused`, also under `no_grad`, which is
//! the tangent's cost plus a forward without a graph), the JVP with the backward of a loss on
//! its primal, and the whole step as `benches/compare` times it; the same for sCT. One thread
//! unless `OMP_NUM_THREADS` says otherwise. Each part is reported as the median wall time, the
//! best wall time and the median CPU time of the calling thread (which, on a shared machine,
//! leaves out the time the core served other processes).

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{sync, Config, Net, Step, StepOptions, TrainStep};
use diffuse_spec::golden::parse_device;
use diffuse_spec::interfaces::{MeanFlow, Sct};
use diffuse_spec::jvp::{network_jvp, JvpBackend, NetTangents};
use diffuse_spec::networks::{Attention, Backbone, Cond, Dit, LayerNorm, Pass};
use diffuse_spec::rng::Rngs;
use diffuse_spec::{Error, Result};
use tch::{Device, Kind, Tensor};

type Part<'a> = (&'static str, Box<dyn FnMut() -> Result<()> + 'a>);

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// This thread's CPU time in ms (CLOCK_THREAD_CPUTIME_ID = 3 on Linux): on a shared machine it
/// leaves out the time other processes hold the core (with one libtorch thread, all the work
/// of a part runs on this thread).
fn thread_cpu_ms() -> f64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid pointer to a timespec-layout struct (64-bit Linux).
    unsafe { clock_gettime(3, &mut ts) };
    ts.sec as f64 * 1e3 + ts.nsec as f64 * 1e-6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn run_parts(title: &str, parts: &mut Vec<Part<'_>>, reps: usize, device: Device, only: Option<&str>) -> Result<()> {
    if let Some(o) = only {
        parts.retain(|(name, _)| name.contains(o));
    }
    for (_, f) in parts.iter_mut() {
        f()?; // warm-up
    }
    let mut times = vec![Vec::with_capacity(reps); parts.len()];
    let mut cpu = vec![Vec::with_capacity(reps); parts.len()];
    for _ in 0..reps {
        for (i, (_, f)) in parts.iter_mut().enumerate() {
            sync(device);
            let (t0, c0) = (Instant::now(), thread_cpu_ms());
            f()?;
            sync(device);
            times[i].push(t0.elapsed().as_secs_f64() * 1e3);
            cpu[i].push(thread_cpu_ms() - c0);
        }
    }
    println!("{title}");
    println!("  {:<58} {:>9} {:>9} {:>9}", "part", "wall ms", "best ms", "cpu ms");
    for (((name, _), t), c) in parts.iter().zip(times.iter_mut()).zip(cpu.iter_mut()) {
        let best = t.iter().cloned().fold(f64::INFINITY, f64::min);
        println!("  {name:<58} {:>9.1} {best:>9.1} {:>9.1}", median(t), median(c));
    }
    Ok(())
}

fn grads(loss: &Tensor, net: &dyn Backbone) -> Result<()> {
    let params: Vec<Tensor> = net.parameters().into_iter().map(|(_, p)| p).collect();
    let refs: Vec<&Tensor> = params.iter().collect();
    drop(Tensor::f_run_backward(&[loss], &refs, false, false)?);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let jvp = JvpBackend::from_name(&arg("--jvp").unwrap_or_else(|| "fused".into()))?;
    let attention = match arg("--attention").as_deref() {
        None | Some("fused") => Attention::Fused,
        Some("math") => Attention::Math,
        Some(o) => return Err(Error::invalid("--attention", "fused or math", o)),
    };
    let only = arg("--only");
    let reps: usize = arg("--reps").and_then(|r| r.parse().ok()).unwrap_or(8);
    let device = parse_device(&arg("--device").unwrap_or_else(|| "cpu".into()))?;
    let cfg = Config::BenchS;
    let (x, y) = common::data(cfg, device)?;
    let b = cfg.batch();
    println!("bench-s DiT, batch {b}, {:?} attention, libtorch LayerNorm, JVP {}, {} thread(s), {reps} reps", attention, jvp.name(), tch::get_num_threads());

    // MeanFlow
    let net = Dit::init(cfg.dit(true), 0, device)?.with_attention(attention).with_layer_norm(LayerNorm::Fused);
    let mf = MeanFlow::new(common::meanflow_config(jvp))?;
    let mut rngs = Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)])?;
    let (t, r) = mf.sample_t_r(b, &mut rngs, device)?;
    let n = mf.sample_n(&x.size(), &mut rngs, device)?;
    let x_t = mf.sample_x_t(&x, &n, &t)?;
    let dt = t.f_sub(&r)?;
    let ones = t.f_ones_like()?;
    let v = n.f_sub(&x)?;
    let cond = Cond { y: Some(&y), dt: Some(&dt), ..Cond::default() };
    let tan = NetTangents { x: &v, t: &ones, dt: Some(&ones) };
    let streams = || Rngs::new(&[("label_dropout", 9)]);
    let mut step = TrainStep::new(cfg, Net::Dit, Step::MeanFlowFused, device, StepOptions { attention: Some(attention), layer_norm: None, batch: None })?;
    let mut step_db = TrainStep::new(cfg, Net::Dit, Step::MeanFlowDb, device, StepOptions::default())?;
    let mut parts: Vec<Part<'_>> = vec![
        ("DiT forward, no graph, eval", Box::new(|| tch::no_grad(|| net.call(&x_t, &t, cond, Pass::eval()).map(drop)))),
        ("DiT forward with graph, train (label dropout)", Box::new(|| {
            let mut s = streams()?;
            net.call(&x_t, &t, cond, Pass::train(&mut s)).map(drop)
        })),
        ("DiT forward + backward of mean(out^2)", Box::new(|| {
            let mut s = streams()?;
            let o = net.call(&x_t, &t, cond, Pass::train(&mut s))?.out;
            grads(&o.f_square()?.f_mean(Kind::Float)?, &net)
        })),
        ("MeanFlow guided velocity (2 eval forwards, no graph)", Box::new(|| {
            let mut s = Rngs::new(&[("time", 1), ("noise", 2), ("label_dropout", 3)])?;
            mf.insta_velocity(&net, &x, &n, &t, Cond::labels(Some(&y)), None, &mut s).map(drop)
        })),
        ("JVP alone (primal with graph + tangent)", Box::new(|| {
            let mut s = streams()?;
            network_jvp(jvp, &net, &x_t, &t, cond, tan, Pass::train(&mut s)).map(drop)
        })),
        ("JVP under no_grad (a forward without graph + tangent)", Box::new(|| {
            let mut s = streams()?;
            tch::no_grad(|| network_jvp(jvp, &net, &x_t, &t, cond, tan, Pass::train(&mut s)).map(drop))
        })),
        ("JVP + backward of mean((u - target)^2)", Box::new(|| {
            let mut s = streams()?;
            let (o, d) = network_jvp(jvp, &net, &x_t, &t, cond, tan, Pass::train(&mut s))?;
            let target = v.f_sub(&d)?;
            grads(&o.out.f_sub(&target)?.f_square()?.f_mean(Kind::Float)?, &net)
        })),
        ("whole MeanFlow step (benches/compare's)", Box::new(|| step.run().map(drop))),
        ("whole MeanFlow step, double backward, math attention", Box::new(|| step_db.run().map(drop))),
    ];
    run_parts("MeanFlow (reference defaults: w = 1, kappa = 0.5)", &mut parts, reps, device, only.as_deref())?;
    drop(parts);

    // sCT
    let net = Dit::init(cfg.dit(false), 0, device)?.with_attention(attention).with_layer_norm(LayerNorm::Fused);
    let sct = Sct::with_default_head(common::sct_config(jvp), device)?;
    let tt = Tensor::f_rand([b], (Kind::Float, device))?;
    let dxdt = x.f_randn_like()?;
    let mut step = TrainStep::new(cfg, Net::Dit, Step::SctFused, device, StepOptions { attention: Some(attention), layer_norm: None, batch: None })?;
    let mut parts: Vec<Part<'_>> = vec![
        ("DiT forward + backward of mean(out^2)", Box::new(|| {
            let mut s = streams()?;
            let o = net.call(&x, &tt, Cond::labels(Some(&y)), Pass::train(&mut s))?.out;
            grads(&o.f_square()?.f_mean(Kind::Float)?, &net)
        })),
        ("sCT JVP alone (primal with graph + tangent)", Box::new(|| {
            let mut s = streams()?;
            sct.network_jvp(&net, &x, &tt, &dxdt, Cond::labels(Some(&y)), Pass::train(&mut s)).map(drop)
        })),
        ("whole sCT step (benches/compare's)", Box::new(|| step.run().map(drop))),
    ];
    run_parts("sCT (paper defaults, step 0)", &mut parts, reps, device, only.as_deref())?;
    Ok(())
}
