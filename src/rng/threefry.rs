//! The Threefry-2x32 block function and the two ways JAX 0.5.1 feeds it counters.
//!
//! Mirrors `jax/_src/prng.py` (jax 0.5.1):
//!
//! * [`threefry2x32`] is `_threefry2x32_lowering`: 20 rounds (5 groups of 4)
//!   with key injection after every group, all arithmetic modulo 2^32.
//! * [`hash_counts`] is `threefry_2x32(keypair, count)`: the flat count array
//!   is padded with one `0` when its length is odd, cut into a first and a
//!   second half, each position `i` hashes the pair `(first[i], second[i])`,
//!   and the output is the first outputs followed by the second outputs, the
//!   padding dropped. This is the non-partitionable ("legacy") layout.
//! * [`hash_index`] hashes one 64-bit flat index split into `(hi, lo)` words,
//!   as `iota_2x32_shape` + `threefry2x32_p` do in the partitionable layout
//!   (`jax_threefry_partitionable=True`, the 0.5.1 default).

/// Rotation amounts of the first and second half of each 8-round cycle.
pub(super) const ROTATIONS: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];

/// Key-schedule parity constant of Threefry (`0x1BD11BDA`).
pub(super) const KS_PARITY: u32 = 0x1BD1_1BDA;

/// One mix round: `x0 += x1; x1 = rotl(x1, r) ^ x0` (`apply_round`).
#[inline(always)]
fn apply_round(x: &mut [u32; 2], rot: u32) {
    x[0] = x[0].wrapping_add(x[1]);
    x[1] = x[1].rotate_left(rot) ^ x[0];
}

/// Threefry-2x32 with 20 rounds, JAX's `threefry2x32_p` on one lane.
///
/// `key` is the raw key data `[k0, k1]` and `x` the counter pair `[x0, x1]`.
/// The key schedule is `ks = [k0, k1, k0 ^ k1 ^ 0x1BD11BDA]`; the input is
/// whitened with `ks[0], ks[1]`, then 5 groups of 4 rounds (rotations
/// `13 15 26 6` and `17 29 16 24` alternating) each followed by the
/// injection `x0 += ks[(g+1)%3]; x1 += ks[(g+2)%3] + (g+1)` for group `g`.
/// Mirrors `_threefry2x32_lowering` in `jax/_src/prng.py`.
#[inline(always)]
pub fn threefry2x32(key: [u32; 2], x: [u32; 2]) -> [u32; 2] {
    let ks = [key[0], key[1], key[0] ^ key[1] ^ KS_PARITY];
    let mut v = [x[0].wrapping_add(ks[0]), x[1].wrapping_add(ks[1])];
    for g in 0..5u32 {
        for &r in &ROTATIONS[(g % 2) as usize] {
            apply_round(&mut v, r);
        }
        let gi = g as usize;
        v[0] = v[0].wrapping_add(ks[(gi + 1) % 3]);
        v[1] = v[1].wrapping_add(ks[(gi + 2) % 3]).wrapping_add(g + 1);
    }
    v
}

/// Hash of the flat 64-bit index `i` in the partitionable layout.
///
/// Returns `threefry2x32(key, [(i >> 32) as u32, i as u32])`. In
/// `_threefry_random_bits_partitionable` element `i` of a 32-bit draw is
/// `out[0] ^ out[1]`; in `_threefry_split_foldlike` key `i` is `out` itself.
#[inline(always)]
pub fn hash_index(key: [u32; 2], i: u64) -> [u32; 2] {
    threefry2x32(key, [(i >> 32) as u32, i as u32])
}

/// `threefry_2x32(keypair, count)` of `jax/_src/prng.py` on a flat count array.
///
/// With `h = ceil(n / 2)` and the count array padded to `2h` with a `0`,
/// position `i < h` hashes `(count[i], count[h + i])` into `(y0[i], y1[i])`;
/// the result is `concat(y0, y1)` truncated to `n`. (The padding value is 0,
/// not the next index.) The plain statement of the rule, kept as the test
/// reference of [`hash_iota_into`] (legacy split and bits); `fold_in`
/// (count `[0, data]`) is its single block `threefry2x32(key, [0, data])`.
#[cfg(test)]
pub fn hash_counts(key: [u32; 2], count: &[u32]) -> Vec<u32> {
    let n = count.len();
    let h = n.div_ceil(2);
    let mut out = vec![0u32; n];
    for i in 0..h {
        let x1 = if h + i < n { count[h + i] } else { 0 };
        let y = threefry2x32(key, [count[i], x1]);
        out[i] = y[0];
        if h + i < n {
            out[h + i] = y[1];
        }
    }
    out
}

/// [`hash_counts`] of `iota(n)` (`0, 1, ..., n-1` as `u32`) written into `out`
/// (`out.len() == n`, `n < 2^32`), without building the count array.
///
/// Pairs are `(i, h + i)` for `h = ceil(n/2)`, except that for odd `n` the
/// last pair is `(h - 1, 0)` (the padding). This is the legacy
/// `threefry_2x32(key, lax.iota(np.uint32, n))` of
/// `_threefry_random_bits_original` and `_threefry_split_original`.
pub fn hash_iota_into(key: [u32; 2], out: &mut [u32]) {
    let n = out.len();
    debug_assert!(n as u64 <= u64::from(u32::MAX));
    let h = n.div_ceil(2);
    let (first, second) = out.split_at_mut(h);
    for (i, f) in first.iter_mut().enumerate() {
        let hi = h + i;
        let x1 = if hi < n { hi as u32 } else { 0 };
        let y = threefry2x32(key, [i as u32, x1]);
        *f = y[0];
        if let Some(s) = second.get_mut(i) {
            *s = y[1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of the Random123 reference (Threefry-2x32, 20
    /// rounds), the same ones `tests/random_test.py::testThreefry2x32` of JAX
    /// checks.
    #[test]
    fn random123_known_answers() {
        assert_eq!(threefry2x32([0, 0], [0, 0]), [0x6b20_0159, 0x99ba_4efe]);
        assert_eq!(
            threefry2x32([u32::MAX, u32::MAX], [u32::MAX, u32::MAX]),
            [0x1cb9_96fc, 0xbb00_2be7]
        );
        assert_eq!(
            threefry2x32([0x1319_8a2e, 0x0370_7344], [0x243f_6a88, 0x85a3_08d3]),
            [0xc492_3a9c, 0x483d_f7a0]
        );
    }

    #[test]
    fn hash_counts_layout_even_and_odd() {
        let key = [3, 7];
        // Even: pairs (0,2), (1,3).
        let even = hash_counts(key, &[0, 1, 2, 3]);
        let a = threefry2x32(key, [0, 2]);
        let b = threefry2x32(key, [1, 3]);
        assert_eq!(even, vec![a[0], b[0], a[1], b[1]]);
        // Odd: pairs (0,2), (1,pad 0); the padded output is dropped.
        let odd = hash_counts(key, &[0, 1, 2]);
        let a = threefry2x32(key, [0, 2]);
        let b = threefry2x32(key, [1, 0]);
        assert_eq!(odd, vec![a[0], b[0], a[1]]);
        // The iota shortcut agrees with the general function.
        for n in 0..12usize {
            let count: Vec<u32> = (0..n as u32).collect();
            let mut out = vec![0; n];
            hash_iota_into(key, &mut out);
            assert_eq!(out, hash_counts(key, &count), "n = {n}");
        }
    }

    #[test]
    fn hash_index_splits_hi_lo() {
        let key = [11, 12];
        let i = (5u64 << 32) | 9;
        assert_eq!(hash_index(key, i), threefry2x32(key, [5, 9]));
    }
}
