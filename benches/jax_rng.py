"""Times jax.random.normal(key(0), (n,)) float32 under jax.jit on CPU (jax 0.5.1).

Prints one line per size: `jax_rng_normal/<n> <median seconds>` (median of 10 runs after
a warm-up that compiles), for benches/compare_rng to set beside the crate's criterion time.
"""
import statistics
import sys
import time

import jax

sizes = [int(s) for s in sys.argv[1:]] or [1_000_000, 10_000_000]
key = jax.random.key(0)
for n in sizes:
    f = jax.jit(lambda k, n=n: jax.random.normal(k, (n,)))
    f(key).block_until_ready()
    ts = []
    for _ in range(10):
        t0 = time.perf_counter()
        f(key).block_until_ready()
        ts.append(time.perf_counter() - t0)
    print(f"jax_rng_normal/{n} {statistics.median(ts):.6f}", flush=True)
