//! `jax.random.normal`-exact draws: 10^6 and 10^7 float32 on CPU.
//! `benches/compare_rng` runs this next to JAX's own time for the same draw.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diffuse_spec::rng::Key;

fn normal(c: &mut Criterion) {
    let mut g = c.benchmark_group("rng_normal");
    g.sample_size(10);
    for n in [1_000_000usize, 10_000_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let key = Key::from_seed(0);
            b.iter(|| key.normal(n));
        });
    }
    g.finish();
}

criterion_group!(benches, normal);
criterion_main!(benches);
