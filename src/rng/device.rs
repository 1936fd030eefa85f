//! Partitionable draws computed by libtorch tensor ops on any device, bit-identical to the
//! host path.
//!
//! Threefry-2x32 is exact in integer arithmetic: the 32-bit words live in int64 tensors,
//! every sum is masked back to 32 bits (`(a + b) & 0xffffffff`, both below 2^32 so the
//! int64 sum is exact) and a rotation is `((x << r) & 0xffffffff) | (x >> (32 - r))`.
//!
//! The float32 maps need one thing elementwise tensor ops do not offer: a fused
//! multiply-add, rounded once. libtorch has no exact `fma` op (`addcmul` and friends leave
//! contraction to the compiler), so [`fma`] computes it exactly from float64 ops: the
//! product of two float32 is exact in float64; the sum `s = p + c` and its rounding error
//! `e` (Knuth's TwoSum, exact) give the float64 rounding of `p + c` *to odd* (`s`, or its
//! neighbour towards `e` when `s` is even and `e != 0`), and rounding that to float32
//! gives the correctly rounded `fma` (Boldo & Melquiond, "Emulation of FMA and correctly
//! rounded sums: proved algorithms using rounding to odd", IEEE TC 2008: 53 >= 24 + 2
//! bits). The square root is the float32 rounding of a float64 one ([`sqrt`]: libtorch's
//! float32 CPU `sqrt` is not always correctly rounded). Everything else is one IEEE
//! operation per tensor op (`+ - * /`, comparisons, selects, bit casts), each a kernel of
//! its own, so no compiler can contract two of them; division is tensor by tensor (libtorch's CUDA kernel replaces division by
//! a *scalar* with a reciprocal multiply). Subnormals are flushed exactly where `dist.rs`
//! flushes them.
//!
//! Cost: about 170 integer ops for Threefry and some 900 for the normal map (each of its
//! 33 emulated FMAs is two dozen float64 / int64 ops), all memory-bound passes over the
//! draw, so on a CPU device it is far slower than the host path. Whether it is faster than
//! the host path plus a host-to-device copy on a GPU has not been measured (no GPU was at
//! hand): it is therefore not the default (see [`TensorDraws`]). Its exactness is tested
//! on the CPU device here (the normal map on all 2^23 inputs, draws against the host) and
//! on CUDA by `tests/cuda_rng.rs` where libtorch sees a GPU.

use std::sync::atomic::{AtomicU8, Ordering};

use tch::{Device, Kind, Tensor};

use super::dist::uniform_bounds;
use super::dist::{ERFINV_GE5, ERFINV_LT5, LOG1P_DEN, LOG1P_NUM, LOG1P_SMALL, NORMAL_UNIFORM_LO, SQRT_2_F32};
use super::dist::{LOG_P0, LOG_P1, LOG_P2, LOG_P3, LOG_P4, LOG_P5, LOG_P6, LOG_P7, LOG_P8, LOG_Q1, LOG_Q2, LOG_SQRTHF};
use super::threefry::{KS_PARITY, ROTATIONS};
use crate::error::Result;

/// Where the `*_tensor` draws ([`Key::normal_tensor`](super::Key::normal_tensor), ...,
/// and so [`Rngs`](super::Rngs)) compute their values for a non-CPU device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TensorDraws {
    /// On the host (the AVX2 / scalar paths), then copied to the device. The default.
    #[default]
    Host,
    /// By tensor ops on the device itself (this module), bit-identical to the host.
    /// CPU-device draws stay on the host path either way (it is the faster one there).
    OnDevice,
}

static TENSOR_DRAWS: AtomicU8 = AtomicU8::new(0);

/// Sets where later `*_tensor` draws for non-CPU devices are computed (process-wide, read
/// at each draw; it changes where the work is done, never the values).
pub fn set_tensor_draws(mode: TensorDraws) {
    TENSOR_DRAWS.store(matches!(mode, TensorDraws::OnDevice) as u8, Ordering::Relaxed);
}

/// The setting of [`set_tensor_draws`] (default [`TensorDraws::Host`]).
pub fn tensor_draws() -> TensorDraws {
    if TENSOR_DRAWS.load(Ordering::Relaxed) == 1 {
        TensorDraws::OnDevice
    } else {
        TensorDraws::Host
    }
}

const M32: i64 = 0xffff_ffff;

/// `(x + c) & 0xffffffff` for words `x` and a word or word tensor `c`.
fn add32(x: &Tensor, c: &Tensor) -> Result<Tensor> {
    Ok(x.f_add(c)?.f_bitwise_and(M32)?)
}

fn add32_const(x: &Tensor, c: u32) -> Result<Tensor> {
    Ok(x.f_add_scalar(i64::from(c))?.f_bitwise_and(M32)?)
}

fn rotl32(x: &Tensor, r: u32) -> Result<Tensor> {
    let hi = x.f_bitwise_left_shift_tensor_scalar(i64::from(r))?.f_bitwise_and(M32)?;
    Ok(hi.f_bitwise_or_tensor(&x.f_bitwise_right_shift_tensor_scalar(i64::from(32 - r))?)?)
}

/// [`super::threefry::threefry2x32`] on int64 tensors of 32-bit words.
fn threefry(key: [u32; 2], x0: &Tensor, x1: &Tensor) -> Result<(Tensor, Tensor)> {
    let ks = [key[0], key[1], key[0] ^ key[1] ^ KS_PARITY];
    let mut a = add32_const(x0, ks[0])?;
    let mut b = add32_const(x1, ks[1])?;
    for g in 0..5usize {
        for &r in &ROTATIONS[g % 2] {
            a = add32(&a, &b)?;
            b = rotl32(&b, r)?.f_bitwise_xor_tensor(&a)?;
        }
        a = add32_const(&a, ks[(g + 1) % 3])?;
        b = add32_const(&b, ks[(g + 2) % 3].wrapping_add(g as u32 + 1))?;
    }
    Ok((a, b))
}

/// The partitionable bits of elements `start..start + n` as an int64 tensor on `device`.
pub(super) fn bits_from(key: [u32; 2], start: u64, n: usize, device: Device) -> Result<Tensor> {
    let start = i64::try_from(start).map_err(|_| crate::Error::invalid("start", "an index below 2^63", start))?;
    let n = i64::try_from(n).map_err(|_| crate::Error::invalid("n", "a count below 2^63", n))?;
    let idx = Tensor::f_arange_start(start, start + n, (Kind::Int64, device))?;
    let (y0, y1) = threefry(key, &idx.f_bitwise_right_shift_tensor_scalar(32)?, &idx.f_bitwise_and(M32)?)?;
    Ok(y0.f_bitwise_xor_tensor(&y1)?)
}

// ---------------------------------------------------------------------------------------
// float32 maps
// ---------------------------------------------------------------------------------------

/// The float32 scalar `x` as a 0-dim tensor on `device`.
fn k(x: f32, device: Device) -> Result<Tensor> {
    Ok(Tensor::f_scalar_tensor(f64::from(x), (Kind::Float, device))?)
}

/// `fma(a, b, c)` of float32 tensors, rounded once (see the module doc).
fn fma(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    let (a, b, c) = (a.f_to_kind(Kind::Double)?, b.f_to_kind(Kind::Double)?, c.f_to_kind(Kind::Double)?);
    let p = a.f_mul(&b)?; // exact: 24 + 24 bits
    let s = p.f_add(&c)?;
    // TwoSum: e = (p - (s - bb)) + (c - bb) with bb = s - p is exactly p + c - s.
    let bb = s.f_sub(&p)?;
    let e = p.f_sub(&s.f_sub(&bb)?)?.f_add(&c.f_sub(&bb)?)?;
    // Round to odd: when inexact and the last bit of s is even, step one ulp towards e
    // (+1 on the bit pattern when e has the sign of s, -1 otherwise).
    let sb = s.f_view_dtype(Kind::Int64)?;
    let even = sb.f_bitwise_and(1)?.f_eq(0)?;
    let inexact = e.f_ne(0.0)?;
    let step = e.f_gt(0.0)?.f_eq_tensor(&s.f_gt(0.0)?)?.f_to_kind(Kind::Int64)?.f_mul_scalar(2)?.f_sub_scalar(1)?;
    let step = step.f_mul(&even.f_logical_and(&inexact)?.f_to_kind(Kind::Int64)?)?;
    Ok(sb.f_add(&step)?.f_view_dtype(Kind::Double)?.f_to_kind(Kind::Float)?)
}

/// The correctly rounded float32 square root, as the float32 rounding of a float64 one.
///
/// libtorch's CPU `sqrt` on float32 is not always correctly rounded (it was 1 ulp off for
/// inputs of the normal map's tail); rounding the float64 root to float32 is, for float32
/// input: `sqrt(x)` is never within 2^-50 relative of a float32 rounding boundary (the
/// square of a 25-bit midpoint is not a float32), far more than the float64 root's error.
fn sqrt(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_to_kind(Kind::Double)?.f_sqrt()?.f_to_kind(Kind::Float)?)
}

/// `flush_denormal`: subnormal lanes become a zero of their sign (`x * 0`).
fn flush(x: &Tensor) -> Result<Tensor> {
    let sub = x.f_abs()?.f_lt(f64::from(f32::MIN_POSITIVE))?;
    Ok(x.f_mul_scalar(0.0)?.f_where_self(&sub, x)?)
}

/// `xla_max_f32(lo, r)` for the scalar `lo`.
fn xla_max_scalar(lo: f32, r: &Tensor, device: Device) -> Result<Tensor> {
    if lo.is_nan() {
        return Ok(r.f_full_like(f64::from(f32::NAN))?);
    }
    let lo_t = k(lo, device)?;
    // Equal values differ only for +-0, where the bitwise AND (+0) wins.
    let and = r.f_view_dtype(Kind::Int)?.f_bitwise_and(i64::from(lo.to_bits() as i32))?.f_view_dtype(Kind::Float)?;
    let out = and.f_where_self(&r.f_eq(f64::from(lo))?, &lo_t)?;
    let out = r.f_where_self(&r.f_gt(f64::from(lo))?, &out)?;
    Ok(k(f32::NAN, device)?.f_where_self(&r.f_isnan()?, &out)?)
}

/// `unit_f32_from_bits` of int64 words.
fn unit(bits: &Tensor) -> Result<Tensor> {
    let m = bits.f_bitwise_right_shift_tensor_scalar(9)?.f_bitwise_or(0x3f80_0000)?;
    Ok(m.f_to_kind(Kind::Int)?.f_view_dtype(Kind::Float)?.f_sub_scalar(1.0)?)
}

/// `uniform_f32_from_parts(bits, lo, scale)`.
fn uniform_parts(bits: &Tensor, lo: f32, scale: f32, device: Device) -> Result<Tensor> {
    let r = flush(&fma(&unit(bits)?, &k(scale, device)?, &k(lo, device)?)?)?;
    xla_max_scalar(lo, &r, device)
}

/// `xla_log_f32`.
fn log(x: &Tensor, device: Device) -> Result<Tensor> {
    let c = |v: f32| k(v, device);
    let x = flush(x)?;
    let xc = c(f32::MIN_POSITIVE)?.f_where_self(&x.f_le(f64::from(f32::MIN_POSITIVE))?, &x)?;
    let bits = xc.f_view_dtype(Kind::Int)?;
    // Positive x: the arithmetic shift is the logical one; other lanes are overwritten below.
    let e = bits.f_bitwise_right_shift_tensor_scalar(23)?.f_sub_scalar(127)?.f_to_kind(Kind::Float)?.f_add_scalar(1.0)?;
    let m = bits.f_bitwise_and(i64::from(0x807f_ffff_u32 as i32))?.f_bitwise_or(0x3f00_0000)?.f_view_dtype(Kind::Float)?;
    let small = m.f_lt(f64::from(LOG_SQRTHF))?;
    let t = m.f_sub_scalar(1.0)?;
    let e = e.f_sub_scalar(1.0)?.f_where_self(&small, &e)?;
    let t = t.f_add(&m)?.f_where_self(&small, &t)?;
    let y = fma(&t, &c(LOG_P0)?, &c(LOG_P1)?)?;
    let y1 = fma(&t, &c(LOG_P3)?, &c(LOG_P4)?)?;
    let y2 = fma(&t, &c(LOG_P6)?, &c(LOG_P7)?)?;
    let y = fma(&t, &y, &c(LOG_P2)?)?;
    let y1 = fma(&t, &y1, &c(LOG_P5)?)?;
    let y2 = fma(&t, &y2, &c(LOG_P8)?)?;
    let t2 = t.f_mul(&t)?;
    let t3 = t2.f_mul(&t)?;
    let y = fma(&t3, &y, &y1)?;
    let y = fma(&t3, &y, &y2)?;
    let r = fma(&t3, &y, &e.f_mul(&c(LOG_Q1)?)?)?;
    let head = fma(&c(-0.5)?, &t2, &t)?;
    let s = head.f_add(&r)?;
    let res = fma(&e, &c(LOG_Q2)?, &s)?;
    // The special cases, in the scalar order: NaN or negative, zero, +inf.
    let res = c(f32::INFINITY)?.f_where_self(&x.f_eq(f64::INFINITY)?, &res)?;
    let res = c(f32::NEG_INFINITY)?.f_where_self(&x.f_eq(0.0)?, &res)?;
    let bad = x.f_isnan()?.f_logical_or(&x.f_lt(0.0)?)?;
    Ok(c(f32::from_bits(u32::MAX))?.f_where_self(&bad, &res)?)
}

/// `xla_log1p_f32`: both branches, selected on `|z| < sqrt(2) - 1`.
fn log1p(z: &Tensor, device: Device) -> Result<Tensor> {
    let c = |v: f32| k(v, device);
    let z = flush(z)?;
    let small = z.f_abs()?.f_lt(f64::from(LOG1P_SMALL))?;
    let z2 = z.f_mul(&z)?;
    let mut num = z.f_full_like(f64::from(LOG1P_NUM[0]))?;
    let mut den = z.f_full_like(f64::from(LOG1P_DEN[0]))?;
    for i in 1..7 {
        num = fma(&z, &num, &c(LOG1P_NUM[i])?)?;
        den = fma(&z, &den, &c(LOG1P_DEN[i])?)?;
    }
    let ratio = num.f_div(&den)?;
    let z3 = z.f_mul(&z2)?;
    let tail = fma(&z3, &ratio, &z2.f_mul(&c(0.5)?)?.f_neg()?)?;
    let near = flush(&z.f_add(&tail)?)?;
    let far = log(&z.f_add(&c(1.0)?)?, device)?;
    Ok(near.f_where_self(&small, &far)?)
}

/// `erfinv_f32`: both coefficient sets, selected on `log1p(-x^2) > -5`.
fn erfinv(x: &Tensor, device: Device) -> Result<Tensor> {
    let c = |v: f32| k(v, device);
    let x = flush(x)?;
    let lp = log1p(&x.f_mul(&x.f_neg()?)?, device)?;
    let lt5 = lp.f_gt(-5.0)?;
    let v_lt = c(-2.5)?.f_sub(&lp)?;
    let v_ge = sqrt(&lp.f_neg()?)?.f_sub(&c(3.0)?)?;
    let v = v_lt.f_where_self(&lt5, &v_ge)?;
    let coef = |i: usize| -> Result<Tensor> { Ok(c(ERFINV_LT5[i])?.f_where_self(&lt5, &c(ERFINV_GE5[i])?)?) };
    let mut p = coef(0)?.f_expand_as(&x)?;
    for i in 1..9 {
        p = fma(&v, &p, &coef(i)?)?;
    }
    let p = c(f32::INFINITY)?.f_where_self(&x.f_abs()?.f_eq(1.0)?, &p)?;
    flush(&x.f_mul(&p)?)
}

/// `normal_f32_from_bits` of int64 words.
fn normal_of(bits: &Tensor, device: Device) -> Result<Tensor> {
    let u = uniform_parts(bits, NORMAL_UNIFORM_LO, 2.0, device)?;
    Ok(erfinv(&u, device)?.f_mul(&k(SQRT_2_F32, device)?)?)
}

/// `jax.random.bits` (partitionable) of `n` words on `device`, as int64.
pub(super) fn bits(key: [u32; 2], n: usize, device: Device) -> Result<Tensor> {
    bits_from(key, 0, n, device)
}

/// `jax.random.uniform` (partitionable) of `n` values on `device`.
pub(super) fn uniform(key: [u32; 2], n: usize, minval: f32, maxval: f32, device: Device) -> Result<Tensor> {
    let (lo, scale) = uniform_bounds(minval, maxval);
    uniform_parts(&bits(key, n, device)?, lo, scale, device)
}

/// `jax.random.normal` (partitionable) of `n` values on `device`.
pub(super) fn normal(key: [u32; 2], n: usize, device: Device) -> Result<Tensor> {
    normal_of(&bits(key, n, device)?, device)
}

#[cfg(test)]
mod tests {
    //! The device path on the CPU device against the host path, bit for bit. (On CUDA:
    //! `tests/cuda_rng.rs`.)
    use super::*;
    use crate::rng::dist::{normal_f32_from_bits, uniform_f32_from_bits};
    use crate::rng::threefry::hash_index;

    fn words(t: &Tensor) -> Vec<u32> {
        let t = t.f_to_kind(Kind::Float).unwrap();
        Vec::<f32>::try_from(&t).unwrap().iter().map(|x| x.to_bits()).collect()
    }

    fn assert_same(what: &str, got: &[u32], want: &[u32]) {
        assert_eq!(got.len(), want.len());
        let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
        if let Some(&i) = bad.first() {
            panic!("{what}: {} of {} differ, first at {i}: {:#010x} vs {:#010x}", bad.len(), got.len(), got[i], want[i]);
        }
    }

    #[test]
    fn threefry_bits_match_the_host_including_the_high_counter_word() {
        let key = [0x1234_5678, 0x9abc_def0];
        for start in [0u64, (1 << 32) - 40, 5 << 32] {
            let t = bits_from(key, start, 1000, Device::Cpu).unwrap();
            let got: Vec<u32> = Vec::<i64>::try_from(&t).unwrap().iter().map(|&w| w as u32).collect();
            let want: Vec<u32> = (0..1000).map(|j| {
                let y = hash_index(key, start + j);
                y[0] ^ y[1]
            }).collect();
            assert_eq!(got, want, "start {start}");
        }
    }

    #[test]
    fn fma_is_rounded_once() {
        // Cases where mul-then-add rounds differently from the fused result.
        let a = [1.0f32 + f32::EPSILON, 0.1, 3.0e-20, -7.5, 1.0e30, 0.3333333];
        let b = [1.0f32 - f32::EPSILON, 0.7, 4.0e-20, 1.0e-8, 1.0e-30, 3.0];
        let c = [-1.0f32, -0.07, 1.0e-45, 7.5e-8, -1.0, -1.0];
        let t = |v: &[f32]| Tensor::from_slice(v);
        let got = words(&fma(&t(&a), &t(&b), &t(&c)).unwrap());
        let want: Vec<u32> = (0..a.len()).map(|i| a[i].mul_add(b[i], c[i]).to_bits()).collect();
        assert_eq!(got, want);
        // Random operands over wide exponent ranges (a deterministic LCG).
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let w = (s >> 32) as u32;
            // Keep exponents away from overflow: bits 0x0080_0000 .. 0x5f00_0000 (+-).
            f32::from_bits((w & 0x8000_0000) | (0x0080_0000 + (w & 0x7fff_ffff) % 0x5e80_0000))
        };
        let n = 200_000;
        let (a, b, c): (Vec<f32>, Vec<f32>, Vec<f32>) = (0..n).map(|_| (next(), next(), next())).fold((vec![], vec![], vec![]), |mut acc, (x, y, z)| {
            acc.0.push(x);
            acc.1.push(y);
            acc.2.push(z);
            acc
        });
        let got = words(&fma(&t(&a), &t(&b), &t(&c)).unwrap());
        let want: Vec<u32> = (0..n).map(|i| a[i].mul_add(b[i], c[i]).to_bits()).collect();
        assert_same("random fma", &got, &want);
    }

    /// The words `m << 9` for every mantissa `m` in `lo..hi`, as int64.
    fn mantissas(lo: i64, hi: i64) -> Tensor {
        Tensor::f_arange_start(lo, hi, (Kind::Int64, Device::Cpu)).unwrap().f_bitwise_left_shift_tensor_scalar(9).unwrap()
    }

    /// Chunks of the 2^23 mantissas (small chunks keep libtorch's temporaries in reused
    /// memory instead of fresh pages).
    const CHUNK: i64 = 1 << 18;

    /// The device normal map on all 2^23 inputs against the host map (itself checked
    /// against JAX's digest in `host.rs`), on the CPU device.
    #[test]
    fn normal_map_exhaustive_on_the_cpu_device() {
        for lo in (0..1i64 << 23).step_by(CHUNK as usize) {
            let got = words(&normal_of(&mantissas(lo, lo + CHUNK), Device::Cpu).unwrap());
            let want: Vec<u32> = (lo as u32..(lo + CHUNK) as u32).map(|m| normal_f32_from_bits(m << 9).to_bits()).collect();
            assert_same(&format!("device normal map, mantissas from {lo}"), &got, &want);
        }
    }

    #[test]
    fn uniform_map_ranges_on_the_cpu_device() {
        let bits = mantissas(0, 1 << 23);
        for (a, b) in [(0.0f32, 1.0f32), (-2.0, 3.0), (0.0, 2e-38), (-1e-39, 1e-39), (-0.0, 1.0), (f32::NAN, 1.0), (1e30, 3e38)] {
            let (lo, scale) = uniform_bounds(a, b);
            let got = words(&uniform_parts(&bits, lo, scale, Device::Cpu).unwrap());
            let want: Vec<u32> = (0..1u32 << 23).map(|m| uniform_f32_from_bits(m << 9, a, b).to_bits()).collect();
            assert_same(&format!("device uniform[{a}, {b})"), &got, &want);
        }
    }

    #[test]
    fn draws_match_the_host() {
        let key = crate::rng::Key::from_seed(20250101);
        let n = 100_003;
        assert_same("normal", &words(&normal(key.data(), n, Device::Cpu).unwrap()), &key.normal(n).iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        assert_same("uniform", &words(&uniform(key.data(), n, -2.0, 3.0, Device::Cpu).unwrap()), &key.uniform(n, -2.0, 3.0).iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        let b: Vec<u32> = Vec::<i64>::try_from(&bits(key.data(), n, Device::Cpu).unwrap()).unwrap().iter().map(|&w| w as u32).collect();
        assert_eq!(b, key.bits(n));
    }
}
