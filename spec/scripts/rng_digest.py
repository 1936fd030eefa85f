"""Digests of long jax.random streams, for the Rust tests of src/rng/key.rs.

Run with jax==0.5.1 / jaxlib==0.5.1 (CPU):

    python spec/scripts/rng_digest.py [--dump-normal PATH]
    python spec/scripts/rng_digest.py --maps

Each line prints one draw and the 64-bit FNV-1a digest (offset basis
0xcbf29ce484222325, prime 0x100000001b3) of the little-endian bytes of its
values (uint32 bits, or the float32 bit patterns), in C order. The Rust test
`long_stream_digests` in src/rng/key.rs hashes its own draws the same way and
compares with the values printed here.

--dump-normal PATH also saves the 10^7 partitionable normals to PATH (.npy),
for an ulp comparison.

--maps prints instead the SHA-256 of the little-endian float32 values of
`jax.random.normal` and `jax.random.uniform` over all 2^23 inputs of their
maps: the words `m << 9` for every 23-bit mantissa `m` (the maps drop the low
9 bits, so these are all the values they can return). The words come from a
PRNG implementation registered with `jax.extend.random.define_prng_impl`
whose `random_bits` returns them, so the float32 part runs through
`jax.random`'s own `_normal_real` / `_uniform` and XLA's compiled kernel, as
for a threefry key. The tests `normal_map_exhaustive_on_every_path` and
`uniform_map_exhaustive_on_every_path` of src/rng/host.rs compare with them.
"""

import hashlib
import sys

import jax
import jax.numpy as jnp
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


def all_mantissa_maps():
    """SHA-256 of the normal and uniform maps over the 2^23 words `m << 9`."""
    from jax import lax
    from jax.extend.random import define_prng_impl

    n = 1 << 23

    def random_bits(key, bit_width, shape):
        assert bit_width == 32 and shape == (n,), (bit_width, shape)
        return lax.shift_left(lax.iota(np.uint32, n), np.uint32(9))

    impl = define_prng_impl(
        key_shape=(1,),
        seed=lambda s: jnp.array([s], np.uint32),
        split=lambda k, shape: jnp.zeros(shape + (1,), np.uint32),
        random_bits=random_bits,
        fold_in=lambda k, d: k,
        name="all_mantissas",
    )
    key = jax.random.key(0, impl=impl)

    def sha(a):
        return hashlib.sha256(np.ascontiguousarray(a).astype("<f4").tobytes()).hexdigest()

    out = np.asarray(jax.jit(lambda k: jax.random.normal(k, (n,)))(key))
    print(f"normal_map all 2^23 mantissas: sha256 {sha(out)}", flush=True)
    for lo, hi in [(0.0, 1.0), (-2.0, 3.0), (0.0, 2e-38)]:
        f = jax.jit(lambda k, lo=lo, hi=hi: jax.random.uniform(k, (n,), minval=lo, maxval=hi))
        print(f"uniform_map minval={lo} maxval={hi} all 2^23 mantissas: sha256 {sha(np.asarray(f(key)))}", flush=True)


def main():
    assert jax.__version__ == "0.5.1", jax.__version__
    if sys.argv[1:] == ["--maps"]:
        all_mantissa_maps()
        return
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
