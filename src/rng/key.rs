//! Typed threefry2x32 PRNG keys with JAX 0.5.1's `jax.random` semantics.
//!
//! A [`Key`] is the two-word key data of a `jax.random.key(...)` of the
//! default `threefry2x32` implementation. Splitting, folding and drawing
//! mirror `jax/_src/prng.py` and `jax/_src/random.py` bit for bit, in either
//! [`PrngMode`].
//!
//! Shapes: every draw here takes only the flat element count `n` (the product
//! of the shape), values laid out in C (row-major) order. That is exact in
//! both modes: the partitionable layout hashes the row-major flat index
//! (`iota_2x32_shape` computes `sum(index_d * stride_d)`), and the legacy
//! layout hashes `iota(prod(shape))` and reshapes. A scalar shape `()` is
//! `n = 1`. `split(key, (a, b))` likewise equals `split(key, a*b)` reshaped.

#[cfg(doc)]
use super::dist::{normal_f32_from_bits, uniform_f32_from_bits};
use super::dist::uniform_bounds;
use super::host::{self, DrawOptions, Map, Plan};
#[cfg(doc)]
use super::host::HostPath;
use super::threefry::{hash_index, hash_iota_into, threefry2x32};
use crate::error::Result;

/// Which threefry counter layout JAX uses (`jax_threefry_partitionable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrngMode {
    /// `jax_threefry_partitionable=True`, the default since jax 0.5.0 and the
    /// mode of the v1 golden files. Element `i` of a draw hashes the 64-bit
    /// counter `(i >> 32, i & 0xffffffff)` and 32-bit bits are the xor of the
    /// two output words; split key `i` is the hash of counter `i` itself.
    Partitionable,
    /// `jax_threefry_partitionable=False`, the layout before jax 0.5.0:
    /// `threefry_2x32(key, iota(n))` pairs count `i` with count `ceil(n/2)+i`
    /// and concatenates the two output halves; split hashes `iota(2 num)`.
    Legacy,
}

/// A threefry2x32 PRNG key: the data of `jax.random.key(seed)` and of the
/// keys derived from it (uint32 `[2]`, as `jax.random.key_data` shows it).
///
/// Keys are plain values (`Copy`): drawing from a key does not change it, and
/// the same key always gives the same draws, as in JAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    data: [u32; 2],
}

impl Key {
    /// `jax.random.key(seed)` with 64-bit mode off (`jax_enable_x64=False`,
    /// JAX's default): data `[0, seed mod 2^32]`.
    ///
    /// `random_seed` converts a Python int to int64 and then, in 32-bit mode,
    /// to int32 (wrapping), and `threefry_seed` returns
    /// `[seed >> 32 (logical, = 0 for int32), seed & 0xffffffff]`. So
    /// `key(-1) = [0, 4294967295]`, `key(2^31) = [0, 2147483648]` and
    /// `key(2^32 + 5) = key(5) = [0, 5]`: seeds congruent modulo 2^32 give
    /// the same key. (Python ints outside the int64 range raise in JAX; they
    /// cannot be passed here.) Mirrors `jax.random.key` /
    /// `prng.threefry_seed`.
    pub fn from_seed(seed: i64) -> Key {
        Key {
            data: [0, seed as u32],
        }
    }

    /// `jax.random.key(seed)` with `jax_enable_x64=True`: data
    /// `[(seed >> 32) as u32, seed as u32]`, the int64 bit pattern split into
    /// two words (`key(-1) = [4294967295, 4294967295]`,
    /// `key(2^32 + 5) = [1, 5]`). Mirrors `prng.threefry_seed` on an int64.
    pub fn from_seed_x64(seed: i64) -> Key {
        let s = seed as u64;
        Key {
            data: [(s >> 32) as u32, s as u32],
        }
    }

    /// Wraps raw key data, as `jax.random.wrap_key_data(data)` does for the
    /// threefry2x32 implementation.
    pub fn from_data(data: [u32; 2]) -> Key {
        Key { data }
    }

    /// The raw key data, as `jax.random.key_data(key)` returns it.
    pub fn data(&self) -> [u32; 2] {
        self.data
    }

    /// `jax.random.fold_in(key, data)`: `threefry2x32(key, [0, data])`.
    ///
    /// `data` is the 32-bit value JAX folds in (`jnp.uint32(data)`; a
    /// negative Python int arrives as its two's complement). The result does
    /// not depend on the mode. Mirrors `prng.threefry_fold_in`.
    pub fn fold_in(&self, data: u32) -> Key {
        self.fold_in_with(PrngMode::Partitionable, data)
    }

    /// [`Key::fold_in`] under an explicit mode; both modes give the same key
    /// (`threefry_2x32(key, threefry_seed(uint32 data))` hashes the single
    /// counter pair `(0, data)` either way).
    pub fn fold_in_with(&self, mode: PrngMode, data: u32) -> Key {
        let _ = mode;
        // `hash_counts(key, &[0, data])` is this one block (n = 2, h = 1), without its Vec.
        Key {
            data: threefry2x32(self.data, [0, data]),
        }
    }

    /// `jax.random.split(key, num)` in the partitionable mode: `num` new
    /// keys, key `i` = `threefry2x32(key, [i >> 32, i & 0xffffffff])`.
    /// `split(key, (a, b))` is this with `num = a*b`, row-major.
    pub fn split(&self, num: usize) -> Vec<Key> {
        self.split_with(PrngMode::Partitionable, num)
    }

    /// `jax.random.split(key, num)` under `mode`.
    ///
    /// Partitionable: as [`Key::split`] (`_threefry_split_foldlike`).
    /// Legacy: `threefry_2x32(key, iota(2 num))` reshaped to `[num, 2]`, so
    /// key `j` is words `2j, 2j+1` of the concatenated halves
    /// (`_threefry_split_original`). Legacy requires `2 num < 2^32` (the
    /// uint32 iota of JAX); larger counts panic.
    pub fn split_with(&self, mode: PrngMode, num: usize) -> Vec<Key> {
        match mode {
            PrngMode::Partitionable => (0..num as u64)
                .map(|i| Key {
                    data: hash_index(self.data, i),
                })
                .collect(),
            PrngMode::Legacy => {
                let n2 = num.checked_mul(2).expect("split: 2*num overflows");
                assert!(
                    n2 as u64 <= u64::from(u32::MAX),
                    "legacy split needs 2*num < 2^32 (uint32 iota)"
                );
                let mut words = vec![0u32; n2];
                hash_iota_into(self.data, &mut words);
                words
                    .chunks_exact(2)
                    .map(|w| Key { data: [w[0], w[1]] })
                    .collect()
            }
        }
    }

    /// `jax.random.bits(key, shape)` (uint32) in the partitionable mode, with
    /// `n = prod(shape)` values in C order: element `i` is `y0 ^ y1` for
    /// `[y0, y1] = threefry2x32(key, [i >> 32, i & 0xffffffff])`.
    pub fn bits(&self, n: usize) -> Vec<u32> {
        self.bits_with(PrngMode::Partitionable, n)
    }

    /// `jax.random.bits(key, shape)` (uint32) under `mode`, `n = prod(shape)`.
    ///
    /// Partitionable: as [`Key::bits`] (`_threefry_random_bits_partitionable`).
    /// Legacy (`_threefry_random_bits_original`): for `n < 2^32 - 1`,
    /// `threefry_2x32(key, iota(n))`; for larger `n` the count is cut into
    /// blocks of `2^32 - 1`, each hashed under its own key of
    /// `split(key, nblocks + 1)` (legacy split), the last key for the
    /// remainder. Depends only on `n`, not on the shape.
    pub fn bits_with(&self, mode: PrngMode, n: usize) -> Vec<u32> {
        let mut out = vec![0u32; n];
        self.fill(mode, Plan::auto(), &mut out, Map::Bits);
        out
    }

    /// The legacy draw of `out.len()` words, then `map` (`_threefry_random_bits_original`).
    fn legacy(&self, plan: Plan, out: &mut [u32], map: Map) {
        const BLOCK: u64 = u32::MAX as u64;
        let n = out.len() as u64;
        let nblocks = n / BLOCK;
        if nblocks == 0 {
            host::hash_iota(plan, self.data, out);
        } else {
            let keys = self.split_with(PrngMode::Legacy, nblocks as usize + 1);
            // Blocks of 2^32 - 1 words, each under its own key; the last key hashes the
            // remainder (unused when there is none).
            for (chunk, k) in out.chunks_mut(BLOCK as usize).zip(&keys) {
                host::hash_iota(plan, k.data, chunk);
            }
        }
        host::map_in_place(plan, out, map);
    }

    /// Fills `out` with `map` of the draw of `out.len()` words under `mode`.
    fn fill(&self, mode: PrngMode, plan: Plan, out: &mut [u32], map: Map) {
        match mode {
            PrngMode::Partitionable => host::fill_partitionable(plan, self.data, out, map),
            PrngMode::Legacy => self.legacy(plan, out, map),
        }
    }

    /// [`Key::bits_with`] into `out` (`n = out.len()`), on the path and threads of `opts`.
    /// Every path and thread count gives the same bits; a forced [`HostPath`] this CPU
    /// lacks is [`Error::Unsupported`](crate::Error::Unsupported).
    pub fn fill_bits(&self, mode: PrngMode, out: &mut [u32], opts: &DrawOptions) -> Result<()> {
        self.fill(mode, opts.resolve()?, out, Map::Bits);
        Ok(())
    }

    /// [`Key::uniform_with`] into `out` (`n = out.len()`), on the path and threads of
    /// `opts` (same values on every path).
    pub fn fill_uniform(&self, mode: PrngMode, out: &mut [f32], minval: f32, maxval: f32, opts: &DrawOptions) -> Result<()> {
        let (lo, scale) = uniform_bounds(minval, maxval);
        self.fill(mode, opts.resolve()?, host::as_words(out), Map::Uniform { lo, scale });
        Ok(())
    }

    /// [`Key::normal_with`] into `out` (`n = out.len()`), on the path and threads of `opts`
    /// (same values on every path).
    pub fn fill_normal(&self, mode: PrngMode, out: &mut [f32], opts: &DrawOptions) -> Result<()> {
        self.fill(mode, opts.resolve()?, host::as_words(out), Map::Normal);
        Ok(())
    }

    /// `jax.random.uniform(key, shape, float32, minval, maxval)` in the
    /// partitionable mode: `n = prod(shape)` values on the half-open
    /// `[minval, maxval)`, each [`uniform_f32_from_bits`] of [`Key::bits`].
    pub fn uniform(&self, n: usize, minval: f32, maxval: f32) -> Vec<f32> {
        self.uniform_with(PrngMode::Partitionable, n, minval, maxval)
    }

    /// `jax.random.uniform(key, shape, float32, minval, maxval)` under `mode`:
    /// [`uniform_f32_from_bits`] of [`Key::bits_with`]. Mirrors `_uniform`.
    pub fn uniform_with(&self, mode: PrngMode, n: usize, minval: f32, maxval: f32) -> Vec<f32> {
        let mut out = vec![0f32; n];
        let (lo, scale) = uniform_bounds(minval, maxval);
        self.fill(mode, Plan::auto(), host::as_words(&mut out), Map::Uniform { lo, scale });
        out
    }

    /// `jax.random.normal(key, shape, float32)` in the partitionable mode:
    /// `n = prod(shape)` standard normal values, each
    /// [`normal_f32_from_bits`] of [`Key::bits`].
    pub fn normal(&self, n: usize) -> Vec<f32> {
        self.normal_with(PrngMode::Partitionable, n)
    }

    /// `jax.random.normal(key, shape, float32)` under `mode`:
    /// `sqrt(2) * erfinv(u)` with `u` uniform on `[nextafter(-1, 0), 1)`
    /// ([`normal_f32_from_bits`] of [`Key::bits_with`]). Mirrors
    /// `_normal_real`.
    pub fn normal_with(&self, mode: PrngMode, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        self.fill(mode, Plan::auto(), host::as_words(&mut out), Map::Normal);
        out
    }
}

#[cfg(test)]
mod tests {
    //! Known answers computed with jax 0.5.1 / jaxlib 0.5.1 on CPU. Each block
    //! names the exact one-liner that printed its values (run with that
    //! version's python: `python -c "<one-liner>"`); float draws are compared
    //! as float32 bit patterns, printed by `.view(np.uint32)`.
    use super::*;
    use crate::rng::{DrawThreads, HostPath};

    const P: PrngMode = PrngMode::Partitionable;
    const L: PrngMode = PrngMode::Legacy;

    fn f32_bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// 64-bit FNV-1a over little-endian bytes, as `fnv1a64` of
    /// spec/scripts/rng_digest.py.
    fn fnv1a64(words: impl IntoIterator<Item = u32>) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for w in words {
            for b in w.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }

    #[test]
    fn key0_uniform_and_normal_match_the_notes() {
        // The reference's key(0) uniform(3) and normal(3) (jax 0.5.1).
        let k = Key::from_seed(0);
        assert_eq!(
            k.uniform(3, 0.0, 1.0),
            vec![0.947667, 0.9785799, 0.33229148]
        );
        assert_eq!(k.normal(3), vec![1.6226422, 2.0252647, -0.43359444]);
    }

    #[test]
    fn seeds() {
        // import jax; print([jax.random.key_data(jax.random.key(s)).tolist() for s in [0, -1, 2**31-1, 123456789, 2**31, 2**32+5, -2**33-7, 2**63-1]])
        let seeds = [
            0,
            -1,
            (1 << 31) - 1,
            123456789,
            1 << 31,
            (1 << 32) + 5,
            -(1 << 33) - 7,
            i64::MAX,
        ];
        let want = [
            [0, 0],
            [0, 4294967295],
            [0, 2147483647],
            [0, 123456789],
            [0, 2147483648],
            [0, 5],
            [0, 4294967289],
            [0, 4294967295],
        ];
        for (s, w) in seeds.iter().zip(want) {
            assert_eq!(Key::from_seed(*s).data(), w, "seed {s}");
        }
        // With jax_enable_x64=True:
        // import jax; jax.config.update('jax_enable_x64', True); print([jax.random.key_data(jax.random.key(s)).tolist() for s in [0, -1, 2**31-1, 2**32+5, -2**33-7]])
        // -> [[0, 0], [4294967295, 4294967295], [0, 2147483647], [1, 5], [4294967293, 4294967289]]
        assert_eq!(Key::from_seed_x64(-1).data(), [u32::MAX, u32::MAX]);
        assert_eq!(Key::from_seed_x64((1 << 32) + 5).data(), [1, 5]);
        assert_eq!(
            Key::from_seed_x64(-(1 << 33) - 7).data(),
            [4294967293, 4294967289]
        );
        assert_eq!(Key::from_data([3, 4]).data(), [3, 4]);
    }

    #[test]
    fn fold_in() {
        // import jax; k=jax.random.key; print([jax.random.key_data(jax.random.fold_in(k(s), d)).tolist() for s, d in [(0, 0), (7, 4294967295), (123456789, 1), (-1, 2**31)]])
        let cases = [
            (0, 0, [1797259609, 2579123966]),
            (7, 4294967295, [3658129989, 1719350670]),
            (123456789, 1, [3209854053, 248229405]),
            (-1, 1 << 31, [1120780062, 2493241946]),
        ];
        for (s, d, w) in cases {
            let k = Key::from_seed(s);
            assert_eq!(k.fold_in(d).data(), w, "seed {s} data {d}");
            assert_eq!(k.fold_in_with(L, d).data(), w, "legacy, seed {s} data {d}");
        }
    }

    #[test]
    fn split_partitionable() {
        // import jax; k=jax.random.key; print([jax.random.key_data(jax.random.split(k(s), n)).tolist() for s, n in [(0, 2), (123456789, 3), (-1, 1), (2**31-1, 5)]])
        let want: [(i64, &[[u32; 2]]); 4] = [
            (0, &[[1797259609, 2579123966], [928981903, 3453687069]]),
            (
                123456789,
                &[
                    [104406182, 1336039183],
                    [3209854053, 248229405],
                    [1967704197, 330388035],
                ],
            ),
            (-1, &[[2973345818, 897673333]]),
            (
                (1 << 31) - 1,
                &[
                    [3894554595, 3657610310],
                    [2391852627, 3342111533],
                    [1746298583, 1015193934],
                    [911888559, 1412594465],
                    [1902026303, 3344708116],
                ],
            ),
        ];
        for (s, w) in want {
            let got: Vec<[u32; 2]> = Key::from_seed(s)
                .split(w.len())
                .iter()
                .map(Key::data)
                .collect();
            assert_eq!(got, w, "seed {s}");
        }
        // Partitionable split key i is fold_in(key, i).
        let k = Key::from_seed(123456789);
        assert_eq!(k.split(3)[1], k.fold_in(1));
    }

    #[test]
    fn split_legacy() {
        // import jax; jax.config.update('jax_threefry_partitionable', False); k=jax.random.key; print([jax.random.key_data(jax.random.split(k(s), n)).tolist() for s, n in [(0, 2), (123456789, 3), (-1, 1), (2**31-1, 5)]])
        let want: [(i64, &[[u32; 2]]); 4] = [
            (0, &[[4146024105, 967050713], [2718843009, 1272950319]]),
            (
                123456789,
                &[
                    [3699939943, 4114915894],
                    [527307847, 1761669608],
                    [3705924199, 2007508512],
                ],
            ),
            (-1, &[[3461607691, 1112781462]]),
            (
                (1 << 31) - 1,
                &[
                    [303216893, 1224382616],
                    [3311079598, 1812234564],
                    [2809244550, 3623161199],
                    [1894794971, 347547348],
                    [1002116039, 2959838117],
                ],
            ),
        ];
        for (s, w) in want {
            let got: Vec<[u32; 2]> = Key::from_seed(s)
                .split_with(L, w.len())
                .iter()
                .map(Key::data)
                .collect();
            assert_eq!(got, w, "seed {s}");
        }
        assert!(Key::from_seed(0).split_with(L, 0).is_empty());
    }

    #[test]
    fn bits_both_modes_odd_shapes() {
        // Shapes (), (1,), (7,), (2, 3), (5,): only the flat size matters.
        let cases: [(i64, usize); 5] =
            [(0, 1), (0, 1), ((1 << 31) - 1, 7), (123456789, 6), (-1, 5)];
        // import jax; k=jax.random.key; print([jax.random.bits(k(s), sh).ravel().tolist() for s, sh in [(0, ()), (0, (1,)), (2**31-1, (7,)), (123456789, (2, 3)), (-1, (5,))]])
        let part: [&[u32]; 5] = [
            &[4070199207],
            &[4070199207],
            &[
                840997797, 1235506558, 1419036569, 1650994062, 3053628459, 3320296850, 38724216,
            ],
            &[
                1234914217, 2979648120, 1727634118, 3045616527, 1956778536, 3263888465,
            ],
            &[2226700399, 2348827549, 2002407339, 3973470413, 1347664280],
        ];
        // import jax; jax.config.update('jax_threefry_partitionable', False); k=jax.random.key; print([jax.random.bits(k(s), sh).ravel().tolist() for s, sh in [(0, ()), (0, (1,)), (2**31-1, (7,)), (123456789, (2, 3)), (-1, (5,))]])
        let legacy: [&[u32]; 5] = [
            &[1797259609],
            &[1797259609],
            &[
                1902026303, 2160435544, 1186109730, 184418900, 3344708116, 1892165980, 1049780142,
            ],
            &[
                3699939943, 4114915894, 527307847, 1761669608, 3705924199, 2007508512,
            ],
            &[567453946, 923363222, 858957570, 3439652919, 1208350418],
        ];
        for (i, &(s, n)) in cases.iter().enumerate() {
            let k = Key::from_seed(s);
            assert_eq!(k.bits(n), part[i], "partitionable case {i}");
            assert_eq!(k.bits_with(L, n), legacy[i], "legacy case {i}");
        }
        assert!(Key::from_seed(0).bits(0).is_empty());
        assert!(Key::from_seed(0).bits_with(L, 0).is_empty());
    }

    #[test]
    fn uniform_both_modes() {
        let cases: [(i64, usize, f32, f32); 3] = [
            (0, 3, 0.0, 1.0),
            (123456789, 6, -2.0, 3.0),
            (-1, 5, 0.5, 0.75),
        ];
        // import jax, numpy as np; k=jax.random.key; print([np.asarray(jax.random.uniform(k(s), sh, minval=a, maxval=b)).ravel().view(np.uint32).tolist() for s, sh, a, b in [(0, (3,), 0., 1.), (123456789, (2, 3), -2., 3.), (-1, (5,), 0.5, 0.75)]])
        let part: [&[u32]; 3] = [
            &[1064475214, 1064993846, 1051337244],
            &[
                3205494670, 1069285517, 1010303104, 1069929737, 1049515188, 1072061302,
            ],
            &[1059139120, 1059258384, 1058920084, 1060844950, 1058280686],
        ];
        // import jax, numpy as np; jax.config.update('jax_threefry_partitionable', False); k=jax.random.key; print([np.asarray(jax.random.uniform(k(s), sh, minval=a, maxval=b)).ravel().view(np.uint32).tolist() for s, sh, a, b in [(0, (3,), 0., 1.), (123456789, (2, 3), -2., 3.), (-1, (5,), 0.5, 0.75)]])
        let legacy: [&[u32]; 3] = [
            &[1064771406, 1050746356, 1059196480],
            &[
                1075030720, 1077056970, 3216075982, 1028672256, 1075059940, 1051496828,
            ],
            &[1057518762, 1057866330, 1057803434, 1060323644, 1058144638],
        ];
        for (i, &(s, n, a, b)) in cases.iter().enumerate() {
            let k = Key::from_seed(s);
            assert_eq!(
                f32_bits(&k.uniform(n, a, b)),
                part[i],
                "partitionable case {i}"
            );
            assert_eq!(
                f32_bits(&k.uniform_with(L, n, a, b)),
                legacy[i],
                "legacy case {i}"
            );
        }
    }

    #[test]
    fn normal_both_modes() {
        let cases: [(i64, usize); 4] = [(0, 3), ((1 << 31) - 1, 7), (123456789, 6), (-1, 1)];
        // import jax, numpy as np; k=jax.random.key; print([np.asarray(jax.random.normal(k(s), sh)).ravel().view(np.uint32).tolist() for s, sh in [(0, (3,)), (2**31-1, (7,)), (123456789, (2, 3)), (-1, ())]])
        let part: [&[u32]; 4] = [
            &[1070576317, 1073847792, 3202220055],
            &[
                3210432406, 3205458629, 3202395476, 3197534024, 1057908243, 1061141878, 3222756194,
            ],
            &[
                3205465415, 1057073959, 3195894391, 1057816803, 3185863130, 1060422189,
            ],
            &[1027436428],
        ];
        // import jax, numpy as np; jax.config.update('jax_threefry_partitionable', False); k=jax.random.key; print([np.asarray(jax.random.normal(k(s), sh)).ravel().view(np.uint32).tolist() for s, sh in [(0, (3,)), (2**31-1, (7,)), (123456789, (2, 3)), (-1, ())]])
        let legacy: [&[u32]; 4] = [
            &[1072199044, 3203865186, 1051592177],
            &[
                3188929147, 1006088422, 3206030001, 3218856198, 1061460571, 3189319525, 3207672033,
            ],
            &[
                1066082183, 1071466924, 3214189390, 3194523270, 1066135252, 3181870592,
            ],
            &[1057003878],
        ];
        for (i, &(s, n)) in cases.iter().enumerate() {
            let k = Key::from_seed(s);
            assert_eq!(f32_bits(&k.normal(n)), part[i], "partitionable case {i}");
            assert_eq!(f32_bits(&k.normal_with(L, n)), legacy[i], "legacy case {i}");
        }
    }

    /// Digests printed by `python spec/scripts/rng_digest.py` (jax 0.5.1), through the
    /// default draws (`Key::normal`, ...). The 10^7-normal stream is hashed only in
    /// optimized builds; debug builds hash its first 10^6 values against their own JAX
    /// digest.
    #[test]
    fn long_stream_digests() {
        digests_on(None);
    }

    /// [`long_stream_digests`] with every host path forced in turn (the `fill_*` draws),
    /// on 1 and on 3 threads.
    #[test]
    fn long_stream_digests_on_every_host_path() {
        for path in HostPath::ALL {
            if !path.is_available() {
                eprintln!("NOT RUN on this CPU: host path {path:?}");
                assert!(Key::from_seed(0).fill_normal(P, &mut [0.0; 4], &DrawOptions::with_path(path)).is_err());
                continue;
            }
            for threads in [1, 3] {
                let t = DrawThreads::Fixed(std::num::NonZeroUsize::new(threads).unwrap());
                digests_on(Some(DrawOptions::with_path(path).with_threads(t)));
            }
        }
    }

    /// The digests through the default draws (`None`) or `fill_*` with `opts`.
    fn digests_on(opts: Option<DrawOptions>) {
        let normal = |k: Key, mode, n| match opts {
            None => k.normal_with(mode, n),
            Some(o) => {
                let mut v = vec![0f32; n];
                k.fill_normal(mode, &mut v, &o).unwrap();
                v
            }
        };
        let uniform = |k: Key, mode, n, a, b| match opts {
            None => k.uniform_with(mode, n, a, b),
            Some(o) => {
                let mut v = vec![0f32; n];
                k.fill_uniform(mode, &mut v, a, b, &o).unwrap();
                v
            }
        };
        let bits = |k: Key, mode, n| match opts {
            None => k.bits_with(mode, n),
            Some(o) => {
                let mut v = vec![0u32; n];
                k.fill_bits(mode, &mut v, &o).unwrap();
                v
            }
        };
        let f = |v: Vec<f32>| fnv1a64(v.iter().map(|x| x.to_bits()));
        let normal_seed = Key::from_seed(20250101);
        let ctx = format!("{opts:?}");
        if cfg!(debug_assertions) {
            // normal seed=20250101 n=1000000 mode=partitionable
            assert_eq!(f(normal(normal_seed, P, 1_000_000)), 0x996f_3620_ea89_313f, "{ctx}");
        } else {
            // normal seed=20250101 n=10000000 mode=partitionable
            let v = normal(normal_seed, P, 10_000_000);
            assert_eq!(fnv1a64(v.iter().map(|x| x.to_bits())), 0x3e96_fd27_0951_6f7f, "{ctx}");
            // normal seed=20250101 n=1000000 mode=partitionable
            assert_eq!(fnv1a64(v[..1_000_000].iter().map(|x| x.to_bits())), 0x996f_3620_ea89_313f, "{ctx}");
        }
        let u = Key::from_seed(31337);
        // uniform seed=31337 n=100000 minval=0.0 maxval=1.0 mode=partitionable
        assert_eq!(f(uniform(u, P, 100_000, 0.0, 1.0)), 0xce9b_4eda_b661_63c2, "{ctx}");
        // uniform seed=31337 n=100001 minval=-2.0 maxval=3.0 mode=partitionable
        assert_eq!(f(uniform(u, P, 100_001, -2.0, 3.0)), 0x9830_818e_679e_66b0, "{ctx}");
        // bits seed=4242 n=100000 mode=partitionable
        assert_eq!(fnv1a64(bits(Key::from_seed(4242), P, 100_000)), 0xefec_33f7_47d4_c7de, "{ctx}");
        // normal seed=20250101 n=100001 mode=legacy
        assert_eq!(f(normal(normal_seed, L, 100_001)), 0xa93d_1d9f_a49e_a181, "{ctx}");
        // uniform seed=31337 n=100001 minval=-2.0 maxval=3.0 mode=legacy
        assert_eq!(f(uniform(u, L, 100_001, -2.0, 3.0)), 0x59b6_752d_9a4c_a8bf, "{ctx}");
        // bits seed=4242 n=100001 mode=legacy
        assert_eq!(fnv1a64(bits(Key::from_seed(4242), L, 100_001)), 0xfdac_b196_9437_6ed8, "{ctx}");
    }

    #[test]
    fn uniform_flushes_subnormals() {
        // import jax, numpy as np; f=np.float32; print([np.asarray(jax.random.uniform(jax.random.key(0), (4,), minval=f(a), maxval=f(b))).view(np.uint32).tolist() for a, b in [(0, 2e-38), (-1e-39, 1e-39)]])
        let k = Key::from_seed(0);
        assert_eq!(
            f32_bits(&k.uniform(4, 0.0, 2e-38)),
            [13525555, 13966759, 0, 0]
        );
        assert_eq!(f32_bits(&k.uniform(4, -1e-39, 1e-39)), [0, 0, 0, 0]);
    }

    #[test]
    fn modes_differ_and_keys_are_values() {
        let k = Key::from_seed(5);
        assert_ne!(k.bits(4), k.bits_with(L, 4));
        assert_eq!(k.split_with(P, 2), k.split(2));
        let k2 = k;
        assert_eq!(k.normal(2), k2.normal(2));
    }
}
