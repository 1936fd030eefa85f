"""The reference's uniform time grid as jax computes it, for tests/uniform_grid_jax.rs.

Run with jax==0.5.1 / jaxlib==0.5.1 on an x86-64 CPU (from the repository root):

    python spec/scripts/uniform_grid_table.py > tests/data/uniform_grid_jax-0.5.1.txt

The grid is the reference sampler's `sample_t(steps)` for `sampling_time_dist = uniform`:
`t = jnp.linspace(t_start, t_end, steps)` (a jitted function of the float32 bounds), then
`s * t / (1 + (s - 1) * t)` with `s = sqrt(t_shift_cur / t_shift_base)`, op by op (eager),
as `spec/diffuse_spec_ref/samplers.py` restates it.

Output, one record per line:

    digest <t_start> <t_end> <t_shift_base> <t_shift_cur> <steps> <FNV-1a 64 of the grid>
    grid <t_start> <t_end> <t_shift_base> <t_shift_cur> <steps> <hex bits of every point ...>

The digest is FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the
little-endian bytes of the float32 bit patterns, in order. Settings are printed as Python's
`repr`, which round-trips through a float64 parser.
"""

import math
import random

import jax
import jax.numpy as jnp
import numpy as np

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK = (1 << 64) - 1


def fnv1a64(arr):
    h = FNV_OFFSET
    for b in np.ascontiguousarray(arr, dtype="<f4").tobytes():
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def grid(t_start, t_end, t_shift_base, t_shift_cur, steps):
    t = jnp.linspace(t_start, t_end, steps)
    s = math.sqrt(t_shift_cur / t_shift_base)
    return np.asarray(s * t / (1 + (s - 1) * t), dtype=np.float32)


def cases():
    d = (1.0, 0.0, 4096.0, 4096.0)
    out = []
    # The defaults at small sizes (a sampler asks for num_sampling_steps + 1 points).
    for steps in [2, 3, 5, 9, 11, 17, 21, 33, 51, 101, 129, 201, 224]:
        out.append(d + (steps,))
    # Settings of the golden cases and the demo: shifted, started below 1, ended above 0.
    out += [
        (1.0, 0.0, 4096.0, 1024.0, 7),
        (1.0, 0.0, 4096.0, 16384.0, 11),
        (0.97, 0.0, 4096.0, 4096.0, 33),
        (0.98, 0.04, 4096.0, 4096.0, 21),
        (1.0, 0.05, 4096.0, 4096.0, 11),
        (0.8, 0.0, 4096.0, 2048.0, 6),
    ]
    rng = random.Random(20250516)
    for _ in range(24):
        a = rng.uniform(0.3, 1.0)
        b = rng.uniform(0.0, 0.9 * a) if rng.random() < 0.7 else 0.0
        cur = 4096.0 * rng.choice([1.0, 0.25, 4.0, rng.uniform(0.1, 10.0)])
        out.append((a, b, 4096.0, cur, rng.randrange(2, 225)))
    # Longer grids, where XLA's CPU backend vectorises linspace (see the Rust test).
    out += [d + (225,), d + (226,), d + (501,), d + (1001,), d + (1003,), d + (1025,), (0.97, 0.0, 4096.0, 1024.0, 1001)]
    return out


def main():
    print(f"# jax {jax.__version__}, jaxlib {jax.lib.__version__}, numpy {np.__version__}, backend {jax.default_backend()}")
    for c in cases():
        g = grid(*c)
        print("digest", *map(repr, c), f"{fnv1a64(g):016x}")
    for c in [(1.0, 0.0, 4096.0, 4096.0, 1001), (1.0, 0.0, 4096.0, 4096.0, 1003)]:
        g = grid(*c)
        print("grid", *map(repr, c), *(f"{b:08x}" for b in g.view(np.uint32)))


if __name__ == "__main__":
    main()
