//! Samplers without gradients: one step (`sampler_step`) and a full 32-step run
//! (`sampler_32`), named `<sampler>-<interface>/<backbone>/<device>`, on the probe and the
//! `bench-s` DiT on CPU, and on the `bench-xl` DiT-XL/2 when libtorch sees a CUDA device.
//! Unguided (scale 1), eval mode, fused attention and LayerNorm. Euler-Maruyama calls the network twice
//! per step (drift = pred and score). About 7 minutes on 2 shared cores, most of it the
//! DiT's 32-step runs; `cargo bench --bench samplers -- probe` runs the probe only.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{sync, Config, Net, SamplerBench, SamplerKind};
use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode};
use tch::Device;

fn bench(c: &mut Criterion, cfg: Config, net: Net, device: Device, label: &str) {
    for kind in SamplerKind::ALL {
        let s = match SamplerBench::new(cfg, net, kind, 32, device) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping {}/{label}: {e}", kind.name());
                continue;
            }
        };
        // One untimed step sizes the measurements: 10 samples of one call each.
        let t0 = Instant::now();
        drop(black_box(s.one_step().expect("sampler step")));
        sync(device);
        let step = t0.elapsed();
        let mut g = c.benchmark_group("sampler_step");
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        g.warm_up_time(step.max(Duration::from_millis(100)));
        g.measurement_time((step * 12).max(Duration::from_millis(500)));
        g.bench_function(format!("{}/{label}", kind.name()), |b| {
            b.iter(|| {
                drop(black_box(s.one_step().expect("sampler step")));
                sync(device);
            })
        });
        g.finish();
        let mut g = c.benchmark_group("sampler_32");
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        // A 32-step run costs about 32 steps (Heun's exp grid takes 33, quirk Q4).
        g.warm_up_time(step);
        g.measurement_time((step * 33 * 10).max(Duration::from_millis(500)));
        g.bench_function(format!("{}/{label}", kind.name()), |b| {
            b.iter(|| {
                drop(black_box(s.sample().expect("sampling")));
                sync(device);
            })
        });
        g.finish();
    }
}

fn samplers(c: &mut Criterion) {
    bench(c, Config::BenchS, Net::Probe, Device::Cpu, "probe/cpu");
    bench(c, Config::BenchS, Net::Dit, Device::Cpu, "dit-s/cpu");
    if tch::Cuda::is_available() {
        bench(c, Config::BenchXl, Net::Dit, Device::Cuda(0), "dit-xl/cuda");
    } else {
        eprintln!("no CUDA device: the bench-xl (DiT-XL/2) samplers are skipped");
    }
}

criterion_group!(benches, samplers);
criterion_main!(benches);
