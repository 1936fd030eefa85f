//! The x86-64 AVX2 + FMA lanes of the bulk draws: Threefry-2x32 on eight counters at once
//! and the float32 maps of [`super::dist`] on eight values at once.
//!
//! Every function here restates its scalar counterpart in `threefry.rs` / `dist.rs`
//! operation for operation: the same products, sums, fused multiply-adds (`vfmadd`, one
//! rounding, like [`f32::mul_add`]), divisions and square roots (IEEE-exact in both),
//! the same denormal flushes at the same places, and both sides of every branch computed
//! and blended per lane. Nothing is approximated differently, so each lane is bit-identical
//! to the scalar map; the tests of `host.rs` check that on all 2^23 inputs of the normal
//! map and several uniform ranges, and on the JAX digests, with this path forced.
//!
//! All functions carry `#[target_feature(enable = "avx2,fma")]`: they may only run on a
//! CPU with both, which `host.rs` checks (`is_x86_feature_detected!`) before calling
//! [`fill_partitionable`], [`hash_iota_into`] or [`map_bits_in_place`] (the only entry
//! points, `unsafe` for exactly that reason). Inside, the only `unsafe` operations are
//! unaligned loads and stores on slices whose bounds are checked next to them.

use std::arch::x86_64::*;

use super::dist::{NORMAL_UNIFORM_LO, SQRT_2_F32};
use super::dist::{ERFINV_GE5, ERFINV_LT5, LOG1P_DEN, LOG1P_NUM, LOG1P_SMALL};
use super::dist::{LOG_P0, LOG_P1, LOG_P2, LOG_P3, LOG_P4, LOG_P5, LOG_P6, LOG_P7, LOG_P8, LOG_Q1, LOG_Q2, LOG_SQRTHF};
use super::host::Map;
use super::threefry::KS_PARITY;

/// Lanes per vector (`__m256i` of `u32`, `__m256` of `f32`).
pub(super) const W: usize = 8;
/// Vectors hashed together per step of the partitionable loop: two independent Threefry
/// chains interleaved, so the integer units are not left waiting on one chain's latency.
const U: usize = 2;
/// Elements per step of the partitionable loop.
const STEP: usize = W * U;

// ---------------------------------------------------------------------------------------
// Threefry-2x32
// ---------------------------------------------------------------------------------------

/// The broadcast key schedule: the whitening words and, for group `g`, the injected words
/// `ks[(g+1)%3]` and `ks[(g+2)%3] + g + 1` (wrapping), as `threefry2x32` adds them.
struct Schedule {
    k0: __m256i,
    k1: __m256i,
    inj0: [__m256i; 5],
    inj1: [__m256i; 5],
}

#[target_feature(enable = "avx2,fma")]
fn schedule(key: [u32; 2]) -> Schedule {
    let ks = [key[0], key[1], key[0] ^ key[1] ^ KS_PARITY];
    let b = |v: u32| _mm256_set1_epi32(v as i32);
    let mut inj0 = [_mm256_setzero_si256(); 5];
    let mut inj1 = [_mm256_setzero_si256(); 5];
    for g in 0..5usize {
        inj0[g] = b(ks[(g + 1) % 3]);
        inj1[g] = b(ks[(g + 2) % 3].wrapping_add(g as u32 + 1));
    }
    Schedule { k0: b(ks[0]), k1: b(ks[1]), inj0, inj1 }
}

/// `rotl(x, L)` for `L + R = 32` by two shifts; rotations by 16 and 24 are byte
/// permutations of each little-endian word (`[b0 b1 b2 b3]` to `[b2 b3 b0 b1]` and
/// `[b1 b2 b3 b0]`), one shuffle.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn rotl<const L: i32, const R: i32>(x: __m256i) -> __m256i {
    match L {
        16 => _mm256_shuffle_epi8(x, _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)),
        24 => _mm256_shuffle_epi8(x, _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12)),
        _ => _mm256_or_si256(_mm256_slli_epi32::<L>(x), _mm256_srli_epi32::<R>(x)),
    }
}

/// One mix round on every chain: `x0 += x1; x1 = rotl(x1, L) ^ x0`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn round<const L: i32, const R: i32, const N: usize>(x0: &mut [__m256i; N], x1: &mut [__m256i; N]) {
    for u in 0..N {
        x0[u] = _mm256_add_epi32(x0[u], x1[u]);
        x1[u] = _mm256_xor_si256(rotl::<L, R>(x1[u]), x0[u]);
    }
}

/// Key injection after group `g`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn inject<const N: usize>(s: &Schedule, g: usize, x0: &mut [__m256i; N], x1: &mut [__m256i; N]) {
    for u in 0..N {
        x0[u] = _mm256_add_epi32(x0[u], s.inj0[g]);
        x1[u] = _mm256_add_epi32(x1[u], s.inj1[g]);
    }
}

/// [`super::threefry::threefry2x32`] on `N` vectors of eight counter pairs each.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn threefry<const N: usize>(s: &Schedule, x0: &mut [__m256i; N], x1: &mut [__m256i; N]) {
    for u in 0..N {
        x0[u] = _mm256_add_epi32(x0[u], s.k0);
        x1[u] = _mm256_add_epi32(x1[u], s.k1);
    }
    for g in 0..5 {
        if g % 2 == 0 {
            round::<13, 19, N>(x0, x1);
            round::<15, 17, N>(x0, x1);
            round::<26, 6, N>(x0, x1);
            round::<6, 26, N>(x0, x1);
        } else {
            round::<17, 15, N>(x0, x1);
            round::<29, 3, N>(x0, x1);
            round::<16, 16, N>(x0, x1);
            round::<24, 8, N>(x0, x1);
        }
        inject(s, g, x0, x1);
    }
}

/// Lane offsets `0..8`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn iota() -> __m256i {
    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
}

// ---------------------------------------------------------------------------------------
// float32 maps (see dist.rs for the formulas and their provenance)
// ---------------------------------------------------------------------------------------

#[target_feature(enable = "avx2,fma")]
#[inline]
fn splat(x: f32) -> __m256 {
    _mm256_set1_ps(x)
}

/// `flush_denormal`: lanes with a zero exponent field keep only their sign.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn flush(x: __m256) -> __m256 {
    let xi = _mm256_castps_si256(x);
    let exp = _mm256_and_si256(xi, _mm256_set1_epi32(0x7f80_0000));
    let zero_exp = _mm256_cmpeq_epi32(exp, _mm256_setzero_si256());
    let kill = _mm256_and_si256(zero_exp, _mm256_set1_epi32(0x7fff_ffff));
    _mm256_castsi256_ps(_mm256_andnot_si256(kill, xi))
}

/// `xla_max_f32(a, b)`: NaN (`f32::NAN`'s bits) if either is NaN, the bitwise AND when
/// equal (`max(-0, +0) = +0`), else the larger.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn xla_max(a: __m256, b: __m256) -> __m256 {
    // `max_ps(b, a)` is `b > a ? b : a`: right for unequal, ordered lanes.
    let m = _mm256_max_ps(b, a);
    let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b);
    let m = _mm256_blendv_ps(m, _mm256_and_ps(a, b), eq);
    let unord = _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b);
    _mm256_blendv_ps(m, splat(f32::NAN), unord)
}

/// `unit_f32_from_bits`: `from_bits(bits >> 9 | 0x3f800000) - 1`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn unit(bits: __m256i) -> __m256 {
    let m = _mm256_or_si256(_mm256_srli_epi32::<9>(bits), _mm256_set1_epi32(0x3f80_0000));
    _mm256_sub_ps(_mm256_castsi256_ps(m), splat(1.0))
}

/// `uniform_f32_from_bits` with `lo = flush(minval)` and `scale = flush(flush(maxval) - lo)`
/// computed once by the caller: `xla_max(lo, flush(fma(f, scale, lo)))`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn uniform(bits: __m256i, lo: __m256, scale: __m256) -> __m256 {
    xla_max(lo, flush(_mm256_fmadd_ps(unit(bits), scale, lo)))
}

/// `xla_log_f32`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn log(x: __m256) -> __m256 {
    let x = flush(x);
    let xc = _mm256_blendv_ps(x, splat(f32::MIN_POSITIVE), _mm256_cmp_ps::<_CMP_LE_OQ>(x, splat(f32::MIN_POSITIVE)));
    let bits = _mm256_castps_si256(xc);
    let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127));
    let e = _mm256_add_ps(_mm256_cvtepi32_ps(e), splat(1.0));
    let m = _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x807f_ffff_u32 as i32)), _mm256_set1_epi32(0x3f00_0000));
    let m = _mm256_castsi256_ps(m);
    let small = _mm256_cmp_ps::<_CMP_LT_OQ>(m, splat(LOG_SQRTHF));
    let t = _mm256_sub_ps(m, splat(1.0));
    let e = _mm256_blendv_ps(e, _mm256_sub_ps(e, splat(1.0)), small);
    let t = _mm256_blendv_ps(t, _mm256_add_ps(t, m), small);
    let y = _mm256_fmadd_ps(t, splat(LOG_P0), splat(LOG_P1));
    let y1 = _mm256_fmadd_ps(t, splat(LOG_P3), splat(LOG_P4));
    let y2 = _mm256_fmadd_ps(t, splat(LOG_P6), splat(LOG_P7));
    let y = _mm256_fmadd_ps(t, y, splat(LOG_P2));
    let y1 = _mm256_fmadd_ps(t, y1, splat(LOG_P5));
    let y2 = _mm256_fmadd_ps(t, y2, splat(LOG_P8));
    let t2 = _mm256_mul_ps(t, t);
    let t3 = _mm256_mul_ps(t2, t);
    let y = _mm256_fmadd_ps(t3, y, y1);
    let y = _mm256_fmadd_ps(t3, y, y2);
    let r = _mm256_fmadd_ps(t3, y, _mm256_mul_ps(e, splat(LOG_Q1)));
    let head = _mm256_fmadd_ps(splat(-0.5), t2, t);
    let s = _mm256_add_ps(head, r);
    let res = _mm256_fmadd_ps(e, splat(LOG_Q2), s);
    // The special cases, in the scalar order: NaN or negative, zero, +inf.
    let res = _mm256_blendv_ps(res, splat(f32::INFINITY), _mm256_cmp_ps::<_CMP_EQ_OQ>(x, splat(f32::INFINITY)));
    let res = _mm256_blendv_ps(res, splat(f32::NEG_INFINITY), _mm256_cmp_ps::<_CMP_EQ_OQ>(x, _mm256_setzero_ps()));
    let bad = _mm256_or_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x), _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps()));
    _mm256_blendv_ps(res, _mm256_castsi256_ps(_mm256_set1_epi32(-1)), bad)
}

/// `xla_log1p_f32`: both branches, blended on `|z| < sqrt(2) - 1`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn log1p(z: __m256) -> __m256 {
    let z = flush(z);
    let abs = _mm256_and_ps(z, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
    let small = _mm256_cmp_ps::<_CMP_LT_OQ>(abs, splat(LOG1P_SMALL));
    let z2 = _mm256_mul_ps(z, z);
    let mut num = splat(LOG1P_NUM[0]);
    let mut den = splat(LOG1P_DEN[0]);
    for i in 1..7 {
        num = _mm256_fmadd_ps(z, num, splat(LOG1P_NUM[i]));
        den = _mm256_fmadd_ps(z, den, splat(LOG1P_DEN[i]));
    }
    let ratio = _mm256_div_ps(num, den);
    let z3 = _mm256_mul_ps(z, z2);
    let half = _mm256_xor_ps(_mm256_mul_ps(z2, splat(0.5)), splat(-0.0));
    let tail = _mm256_fmadd_ps(z3, ratio, half);
    let near = flush(_mm256_add_ps(z, tail));
    let far = log(_mm256_add_ps(z, splat(1.0)));
    _mm256_blendv_ps(far, near, small)
}

/// `erfinv_f32`: both coefficient sets, chosen per lane on `log1p(-x^2) > -5`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn erfinv(x: __m256) -> __m256 {
    let x = flush(x);
    let lp = log1p(_mm256_mul_ps(x, _mm256_xor_ps(x, splat(-0.0))));
    let lt5 = _mm256_cmp_ps::<_CMP_GT_OQ>(lp, splat(-5.0));
    let v_lt = _mm256_sub_ps(splat(-2.5), lp);
    let v_ge = _mm256_sub_ps(_mm256_sqrt_ps(_mm256_xor_ps(lp, splat(-0.0))), splat(3.0));
    let v = _mm256_blendv_ps(v_ge, v_lt, lt5);
    let mut p = _mm256_blendv_ps(splat(ERFINV_GE5[0]), splat(ERFINV_LT5[0]), lt5);
    for i in 1..9 {
        let c = _mm256_blendv_ps(splat(ERFINV_GE5[i]), splat(ERFINV_LT5[i]), lt5);
        p = _mm256_fmadd_ps(v, p, c);
    }
    let abs = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff)));
    let p = _mm256_blendv_ps(p, splat(f32::INFINITY), _mm256_cmp_ps::<_CMP_EQ_OQ>(abs, splat(1.0)));
    flush(_mm256_mul_ps(x, p))
}

/// `normal_f32_from_bits`: `erfinv(uniform(bits, nextafter(-1, 0), 1)) * sqrt(2)`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn normal(bits: __m256i) -> __m256 {
    // flush(1 - (-0.99999994)) = 2 exactly, and both bounds are normal numbers.
    let u = uniform(bits, splat(NORMAL_UNIFORM_LO), splat(2.0));
    _mm256_mul_ps(erfinv(u), splat(SQRT_2_F32))
}

/// The map of one vector of bits, as `u32` lanes (float results as their bit patterns).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn apply(map: &Lanes, bits: __m256i) -> __m256i {
    match *map {
        Lanes::Bits => bits,
        Lanes::Uniform { lo, scale } => _mm256_castps_si256(uniform(bits, lo, scale)),
        Lanes::Normal => _mm256_castps_si256(normal(bits)),
    }
}

/// [`Map`] with its constants broadcast.
enum Lanes {
    Bits,
    Uniform { lo: __m256, scale: __m256 },
    Normal,
}

#[target_feature(enable = "avx2,fma")]
fn lanes(map: Map) -> Lanes {
    match map {
        Map::Bits => Lanes::Bits,
        Map::Uniform { lo, scale } => Lanes::Uniform { lo: splat(lo), scale: splat(scale) },
        Map::Normal => Lanes::Normal,
    }
}

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

/// Stores one vector at `out[at..at + 8]`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn store(out: &mut [u32], at: usize, v: __m256i) {
    let dst = &mut out[at..at + W];
    // SAFETY: `dst` is eight in-bounds `u32`s (the slice above checked it); the store is
    // unaligned, so no alignment is required.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}

/// `out[j] = map(y0 ^ y1)` for `[y0, y1] = threefry2x32(key, [(start + j) >> 32, start + j])`,
/// the partitionable draw of elements `start..start + out.len()`. Float maps write their
/// float32 bit patterns.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fill_partitionable(key: [u32; 2], start: u64, out: &mut [u32], map: Map) {
    let s = schedule(key);
    let l = lanes(map);
    let n = out.len();
    let mut j = 0;
    while j + STEP <= n {
        let i = start + j as u64;
        let lo = i as u32;
        if lo > u32::MAX - (STEP as u32 - 1) {
            // The low word wraps inside this step (the high word changes): scalar lanes.
            super::host::fill_partitionable_scalar(key, i, &mut out[j..j + STEP], map);
            j += STEP;
            continue;
        }
        let hi = _mm256_set1_epi32((i >> 32) as u32 as i32);
        let mut x0 = [hi; U];
        let mut x1 = [_mm256_setzero_si256(); U];
        for (u, x) in x1.iter_mut().enumerate() {
            *x = _mm256_add_epi32(_mm256_set1_epi32(lo.wrapping_add((u * W) as u32) as i32), iota());
        }
        threefry(&s, &mut x0, &mut x1);
        for u in 0..U {
            store(out, j + u * W, apply(&l, _mm256_xor_si256(x0[u], x1[u])));
        }
        j += STEP;
    }
    super::host::fill_partitionable_scalar(key, start + j as u64, &mut out[j..], map);
}

/// `hash_iota_into` for the pair positions `i0..i0 + first.len()` of a legacy draw of
/// `n` counts with `h = ceil(n / 2)`: position `i` hashes `(i, h + i)` (the last one of
/// an odd `n` hashes `(h - 1, 0)`), writing `y0` to `first` and `y1` to `second` (which
/// is shorter by one at the odd end).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hash_iota_into(key: [u32; 2], h: u32, i0: u32, first: &mut [u32], second: &mut [u32]) {
    let s = schedule(key);
    // Whole steps only where every position has its second word (`second` is full).
    let full = first.len().min(second.len());
    let mut j = 0;
    while j + STEP <= full {
        let mut x0 = [_mm256_setzero_si256(); U];
        let mut x1 = [_mm256_setzero_si256(); U];
        for u in 0..U {
            x0[u] = _mm256_add_epi32(_mm256_set1_epi32(i0.wrapping_add((j + u * W) as u32) as i32), iota());
            x1[u] = _mm256_add_epi32(x0[u], _mm256_set1_epi32(h as i32));
        }
        threefry(&s, &mut x0, &mut x1);
        for u in 0..U {
            store(first, j + u * W, x0[u]);
            store(second, j + u * W, x1[u]);
        }
        j += STEP;
    }
    let rest = j.min(second.len());
    super::host::hash_iota_scalar(key, h, i0.wrapping_add(j as u32), &mut first[j..], &mut second[rest..]);
}

/// Applies `map` (a float map) in place to raw bits, eight at a time, the scalar map on
/// the tail. Used by the legacy layout, which hashes first and maps afterwards.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn map_bits_in_place(words: &mut [u32], map: Map) {
    let l = lanes(map);
    let n = words.len();
    let mut j = 0;
    while j + W <= n {
        let src = &words[j..j + W];
        // SAFETY: `src` is eight in-bounds `u32`s; the load is unaligned.
        let v = unsafe { _mm256_loadu_si256(src.as_ptr().cast()) };
        store(words, j, apply(&l, v));
        j += W;
    }
    for w in &mut words[j..] {
        *w = map.scalar(*w);
    }
}
