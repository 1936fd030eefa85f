//! `jax.random`-exact draws on CPU: float32 `normal` and `uniform` of 10^4, 10^6 and 10^7
//! values, with the default options and on every host path this CPU has on one thread.
//! `benches/compare_rng` runs this next to JAX's own time for the same draws.
//!
//! Benchmark ids: `rng_<draw>/<config>/<n>`, `<config>` = `default` (`DrawOptions::default()`:
//! the detected path and the `DrawThreads::FollowTorch` budget, what `Key::normal` and
//! `Rngs` use) or `<path>_t1` with `<path>` one of `avx2_fma`, `scalar_fma`, `portable`
//! (forced, one thread). The scalar paths skip 10^7 (seconds per sample; 10^6 shows their
//! rate). `RNG_BENCH_QUICK=1` keeps only `default` and the detected path.

use std::num::NonZeroUsize;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diffuse_spec::rng::{DrawOptions, DrawThreads, HostPath, Key, PrngMode};

fn configs() -> Vec<(String, DrawOptions)> {
    let quick = std::env::var_os("RNG_BENCH_QUICK").is_some();
    // What `Key::normal` and `Rngs` use: the detected path, `DrawThreads::FollowTorch`.
    let mut out = vec![("default".to_string(), DrawOptions::default())];
    for path in HostPath::ALL {
        if !path.is_available() || (quick && path != HostPath::detected()) {
            continue;
        }
        let opts = DrawOptions::with_path(path).with_threads(DrawThreads::Fixed(NonZeroUsize::MIN));
        out.push((format!("{}_t1", path.name()), opts));
    }
    out
}

fn draws(c: &mut Criterion) {
    let key = Key::from_seed(0);
    for draw in ["normal", "uniform"] {
        let mut g = c.benchmark_group(format!("rng_{draw}"));
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        for (name, opts) in configs() {
            for n in [10_000usize, 1_000_000, 10_000_000] {
                if n == 10_000_000 && name != "default" && !name.starts_with(HostPath::detected().name()) {
                    continue;
                }
                g.throughput(Throughput::Elements(n as u64));
                g.bench_with_input(BenchmarkId::new(&name, n), &n, |b, &n| {
                    // A fresh output per draw, as `Key::normal` returns one.
                    b.iter(|| {
                        let mut v = vec![0f32; n];
                        match draw {
                            "normal" => key.fill_normal(PrngMode::Partitionable, &mut v, &opts).unwrap(),
                            _ => key.fill_uniform(PrngMode::Partitionable, &mut v, 0.0, 1.0, &opts).unwrap(),
                        }
                        v
                    });
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, draws);
criterion_main!(benches);
