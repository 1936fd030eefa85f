"""Times jax.random.normal and jax.random.uniform(key(0), (n,)) float32 under jax.jit on CPU
(jax 0.5.1), with XLA's default CPU threading.

Prints one line per draw and size: `jax_rng_<normal|uniform>/<n> <median seconds>` (the median
of max(10, min(1000, 10^6 / n)) runs after a warm-up that compiles), for benches/compare_rng to
set beside the crate's criterion times. Each output is a fresh device buffer, as for the crate.

Usage: python benches/jax_rng.py [N ...]   (default 10000 1000000 10000000)
"""
import statistics
import sys
import time

import jax

sizes = [int(s) for s in sys.argv[1:]] or [10_000, 1_000_000, 10_000_000]
key = jax.random.key(0)
draws = {
    "normal": lambda k, n: jax.random.normal(k, (n,)),
    "uniform": lambda k, n: jax.random.uniform(k, (n,)),
}
for name, draw in draws.items():
    for n in sizes:
        f = jax.jit(lambda k, n=n, draw=draw: draw(k, n))
        f(key).block_until_ready()
        ts = []
        for _ in range(max(10, min(1000, 1_000_000 // n))):
            t0 = time.perf_counter()
            f(key).block_until_ready()
            ts.append(time.perf_counter() - t0)
        print(f"jax_rng_{name}/{n} {statistics.median(ts):.7f}", flush=True)
