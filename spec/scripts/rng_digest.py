"""Digests of long jax.random streams, for the Rust tests of src/rng/key.rs.

Run with jax==0.5.1 / jaxlib==0.5.1 (CPU):

    python spec/scripts/rng_digest.py [--dump-normal PATH]

Each line prints one draw and the 64-bit FNV-1a digest (offset basis
0xcbf29ce484222325, prime 0x100000001b3) of the little-endian bytes of its
values (uint32 bits, or the float32 bit patterns), in C order. The Rust test
`long_stream_digests` in src/rng/key.rs hashes its own draws the same way and
compares with the values printed here.

--dump-normal PATH also saves the 10^7 partitionable normals to PATH (.npy),
for an ulp comparison.
"""

import sys

import jax
import numpy as np

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK = (1 << 64) - 1


def fnv1a64(arr):
    """FNV-1a over the little-endian bytes of a 4-byte array."""
    data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    h = FNV_OFFSET
    prime = FNV_PRIME
    mask = MASK
    for b in data:
        h = ((h ^ b) * prime) & mask
    return h


# (op, seed, n, extra, partitionable)
DRAWS = [
    ("normal", 20250101, 10_000_000, None, True),
    ("normal", 20250101, 1_000_000, None, True),
    ("uniform", 31337, 100_000, (0.0, 1.0), True),
    ("uniform", 31337, 100_001, (-2.0, 3.0), True),
    ("bits", 4242, 100_000, None, True),
    ("normal", 20250101, 100_001, None, False),
    ("uniform", 31337, 100_001, (-2.0, 3.0), False),
    ("bits", 4242, 100_001, None, False),
]


def draw(op, seed, n, extra):
    key = jax.random.key(seed)
    if op == "normal":
        return np.asarray(jax.random.normal(key, (n,)))
    if op == "uniform":
        lo, hi = extra
        return np.asarray(jax.random.uniform(key, (n,), minval=lo, maxval=hi))
    return np.asarray(jax.random.bits(key, (n,)))


def main():
    assert jax.__version__ == "0.5.1", jax.__version__
    dump = None
    if len(sys.argv) == 3 and sys.argv[1] == "--dump-normal":
        dump = sys.argv[2]
    for op, seed, n, extra, part in DRAWS:
        with jax.threefry_partitionable(part):
            out = draw(op, seed, n, extra)
        assert out.dtype in (np.float32, np.uint32), out.dtype
        mode = "partitionable" if part else "legacy"
        rng = "" if extra is None else f" minval={extra[0]} maxval={extra[1]}"
        print(f"{op} seed={seed} n={n}{rng} mode={mode} fnv1a64=0x{fnv1a64(out):016x}", flush=True)
        if dump and op == "normal" and n == 10_000_000 and part:
            np.save(dump, out)


if __name__ == "__main__":
    main()
