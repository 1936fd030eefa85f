//! One training step (sample t / noise, loss, gradients of every parameter) per interface,
//! named `<interface>/<backbone>/<device>`:
//! - `probe/cpu` and `dit-s/cpu` (the `bench-s` configuration: DiT 16x16x4, patch 2,
//!   hidden 192, depth 6, 3 heads, batch 16, float32);
//! - `dit-xl/cuda` and `dit-xl-bf16/cuda` (`bench-xl`: DiT-XL/2, 32x32x4, batch 256, float32
//!   and bf16 autocast), only when libtorch sees a CUDA device. A step that fails (at batch
//!   256 in float32 the activations alone are estimated at ~180 GB, more than one H200 holds)
//!   is reported as skipped; `examples/bench_step --batch N` measures smaller batches.
//!
//! SiT, EDM, REPA and the fused-JVP steps of MeanFlow / sCT use the fused attention, the
//! autograd JVPs (double backward, forward AD) the math path (they need it); all
//! use libtorch's fused LayerNorm (`LayerNorm::Fused`; the reference's fast-variance
//! arithmetic is the crate's default).
//! `benches/compare` times the same steps against JAX and PyTorch eager.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{sync, Config, Net, Step, StepOptions, TrainStep};
use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode};
use diffuse_spec::precision::autocast_bf16;
use tch::Device;

const STEPS: [Step; 8] = [Step::Sit, Step::Edm, Step::MeanFlowFused, Step::MeanFlowDb, Step::MeanFlowFad, Step::SctFused, Step::SctDb, Step::Repa];

fn bench_one(c: &mut Criterion, cfg: Config, net: Net, step: Step, device: Device, bf16: bool, label: &str) {
    let mut s = match TrainStep::new(cfg, net, step, device, StepOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping {}/{label}: {e}", step.name());
            return;
        }
    };
    let run = |s: &mut TrainStep| -> diffuse_spec::Result<()> {
        let r = if bf16 { autocast_bf16(|| s.run()) } else { s.run() };
        drop(black_box(r?));
        sync(device);
        Ok(())
    };
    // One untimed step sizes the measurement (10 samples of one step each) and skips a
    // configuration that does not run here (e.g. out of device memory).
    let t0 = Instant::now();
    if let Err(e) = run(&mut s) {
        eprintln!("skipping {}/{label}: {e}", step.name());
        return;
    }
    let took = t0.elapsed();
    let mut g = c.benchmark_group("train_step");
    g.sample_size(10);
    // One step per sample (a 10-sample linear sweep would take 55 steps).
    g.sampling_mode(SamplingMode::Flat);
    g.warm_up_time(took.max(Duration::from_millis(200)));
    g.measurement_time((took * 12).max(Duration::from_millis(500)));
    g.bench_function(format!("{}/{label}", step.name()), |b| {
        b.iter(|| run(&mut s).expect("training step"))
    });
    g.finish();
}

fn train_step(c: &mut Criterion) {
    for step in STEPS {
        bench_one(c, Config::BenchS, Net::Probe, step, Device::Cpu, false, "probe/cpu");
        bench_one(c, Config::BenchS, Net::Dit, step, Device::Cpu, false, "dit-s/cpu");
    }
    if tch::Cuda::is_available() {
        let dev = Device::Cuda(0);
        for step in STEPS {
            bench_one(c, Config::BenchXl, Net::Dit, step, dev, false, "dit-xl/cuda");
            bench_one(c, Config::BenchXl, Net::Dit, step, dev, true, "dit-xl-bf16/cuda");
        }
    } else {
        eprintln!("no CUDA device: the bench-xl (DiT-XL/2) steps are skipped");
    }
}

criterion_group!(benches, train_step);
criterion_main!(benches);
