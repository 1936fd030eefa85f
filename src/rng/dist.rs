//! Bit-exact float32 maps from random bits to `uniform` and `normal` draws,
//! as JAX 0.5.1 (jaxlib 0.5.1, XLA CPU) computes them.
//!
//! JAX's `_uniform` / `_normal_real` (`jax/_src/random.py`) are compiled by
//! XLA into one fused loop. The float32 arithmetic of that loop is reproduced
//! here operation for operation, including which multiply-adds the compiler
//! contracts into fused multiply-adds (one rounding, [`f32::mul_add`]) and
//! which it leaves as a rounded product followed by a rounded sum. The
//! sequence was read off the machine code XLA emits for `jax.random.normal`
//! on x86-64 (`XLA_FLAGS=--xla_dump_to=...`) and checked against JAX on all
//! 2^23 possible inputs of the normal map (0 ulp everywhere).
//!
//! Nothing here calls the platform's `log`, `log1p` or `erfinv`: the
//! polynomial approximations XLA uses are spelled out in float32.
//!
//! Denormals: XLA's CPU runtime executes with the x86 DAZ and FTZ flags set
//! (subnormal operands read as zero, subnormal results written as zero). The
//! public functions here apply the same flush to their inputs and results
//! (and [`uniform_f32_from_bits`] to each step), so they agree with JAX also
//! for subnormal arguments, e.g. `log(1e-40) = -inf` and
//! `erfinv(1.2e-38) = 0`. Internal intermediates are not flushed; for the
//! `normal` map this is proven harmless by the exhaustive check, and for the
//! standalone functions by 2*10^7 random float32 inputs each.

/// Smallest positive normal float32, `2^-126` (bits `0x0080_0000`).
const MIN_NORMAL: f32 = f32::MIN_POSITIVE;

/// Lower end of the uniform draw behind `normal`: `nextafter(-1, 0)` in
/// float32, `-0.99999994` (bits `0xbf7f_ffff`).
pub const NORMAL_UNIFORM_LO: f32 = -0.999_999_94_f32;

/// `sqrt(2)` rounded to float32, `1.4142135` (bits `0x3fb5_04f3`), the factor
/// `np.array(np.sqrt(2), float32)` of `_normal_real`.
pub const SQRT_2_F32: f32 = std::f32::consts::SQRT_2;

// XLA CPU `log` (xla/service/cpu polynomial approximation "log_f32", after
// Eigen's SSE `plog`, Cephes coefficients). Bit patterns are the float32
// constants of the emitted code; the comment gives the decimal of the source.
/// `cephes_SQRTHF` = 0.707106781186547524.
pub(super) const LOG_SQRTHF: f32 = f32::from_bits(0x3f35_04f3);
/// `cephes_log_p0` = 7.0376836292E-2.
pub(super) const LOG_P0: f32 = f32::from_bits(0x3d90_21bb);
/// `cephes_log_p1` = -1.1514610310E-1.
pub(super) const LOG_P1: f32 = f32::from_bits(0xbdeb_d1b8);
/// `cephes_log_p2` = 1.1676998740E-1.
pub(super) const LOG_P2: f32 = f32::from_bits(0x3def_251a);
/// `cephes_log_p3` = -1.2420140846E-1.
pub(super) const LOG_P3: f32 = f32::from_bits(0xbdfe_5d4f);
/// `cephes_log_p4` = 1.4249322787E-1.
pub(super) const LOG_P4: f32 = f32::from_bits(0x3e11_e9bf);
/// `cephes_log_p5` = -1.6668057665E-1.
pub(super) const LOG_P5: f32 = f32::from_bits(0xbe2a_ae50);
/// `cephes_log_p6` = 2.0000714765E-1.
pub(super) const LOG_P6: f32 = f32::from_bits(0x3e4c_ceac);
/// `cephes_log_p7` = -2.4999993993E-1.
pub(super) const LOG_P7: f32 = f32::from_bits(0xbe7f_fffc);
/// `cephes_log_p8` = 3.3333331174E-1.
pub(super) const LOG_P8: f32 = f32::from_bits(0x3eaa_aaaa);
/// `cephes_log_q1` = -2.12194440e-4.
pub(super) const LOG_Q1: f32 = f32::from_bits(0xb95e_8083);
/// `cephes_log_q2` = 0.693359375.
pub(super) const LOG_Q2: f32 = f32::from_bits(0x3f31_8000);

// XLA `EmitLog1p` (elemental_ir_emitter.cc): Cephes log1p rational
// approximation, coefficients highest degree first, leading 1 / 4.527e-5
// included.
/// `kAntilogarithmIsSmallThreshold` = sqrt(2) - 1 = 0.41421356237309504880.
pub(super) const LOG1P_SMALL: f32 = f32::from_bits(0x3ed4_13cd);
/// `kNumeratorCoeffs`: 4.5270000862445199635215E-5, 4.9854102823193375972212E-1,
/// 6.5787325942061044846969E0, 2.9911919328553073277375E1,
/// 6.0949667980987787057556E1, 5.7112963590585538103336E1,
/// 2.0039553499201281259648E1.
pub(super) const LOG1P_NUM: [f32; 7] = [
    f32::from_bits(0x383d_e04b),
    f32::from_bits(0x3eff_40c5),
    f32::from_bits(0x40d2_84fa),
    f32::from_bits(0x41ef_4b9c),
    f32::from_bits(0x4273_cc76),
    f32::from_bits(0x4264_73ad),
    f32::from_bits(0x41a0_5101),
];
/// `kDenominatorCoeffs`: 1, 1.5062909083469192043167E1,
/// 8.3047565967967209469434E1, 2.2176239823732856465394E2,
/// 3.0909872225312059774938E2, 2.1642788614495947685003E2,
/// 6.0118660497603843919306E1.
pub(super) const LOG1P_DEN: [f32; 7] = [
    1.0,
    f32::from_bits(0x4171_01ad),
    f32::from_bits(0x42a6_185b),
    f32::from_bits(0x435d_c32d),
    f32::from_bits(0x439a_8ca3),
    f32::from_bits(0x4358_6d8a),
    f32::from_bits(0x4270_7982),
];

// Giles' single-precision erfinv ("Approximating the erfinv function", GPU
// Computing Gems), as `materializeErfInvF32` (CHLO -> StableHLO) writes it,
// coefficients highest degree first.
/// `w < 5` set: 2.81022636e-08, 3.43273939e-07, -3.5233877e-06,
/// -4.39150654e-06, 0.00021858087, -0.00125372503, -0.00417768164,
/// 0.246640727, 1.50140941.
pub(super) const ERFINV_LT5: [f32; 9] = [
    f32::from_bits(0x32f1_6588),
    f32::from_bits(0x34b8_4b36),
    f32::from_bits(0xb66c_7357),
    f32::from_bits(0xb693_5ac1),
    f32::from_bits(0x3965_32db),
    f32::from_bits(0xbaa4_5408),
    f32::from_bits(0xbb88_e4ef),
    f32::from_bits(0x3e7c_8f63),
    f32::from_bits(0x3fc0_2e2f),
];
/// `w >= 5` set: -0.000200214257, 0.000100950558, 0.00134934322,
/// -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047, 1.00167406,
/// 2.83297682.
pub(super) const ERFINV_GE5: [f32; 9] = [
    f32::from_bits(0xb951_f09b),
    f32::from_bits(0x38d3_b56b),
    f32::from_bits(0x3ab0_dc72),
    f32::from_bits(0xbb70_bde7),
    f32::from_bits(0x3bbc_127b),
    f32::from_bits(0xbbf9_c5d7),
    f32::from_bits(0x3c1a_a57e),
    f32::from_bits(0x3f80_36db),
    f32::from_bits(0x4035_4f7e),
];

/// XLA CPU's denormal flush (DAZ on operands, FTZ on results): a subnormal
/// `x` becomes a zero of the same sign; anything else is returned unchanged.
#[inline(always)]
fn flush_denormal(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// XLA's `maximum(a, b)` on float32 (LLVM `llvm.maximum`): NaN if either is
/// NaN, `-0 < +0`, otherwise the larger.
#[inline(always)]
fn xla_max_f32(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a == b {
        // Equal values have equal bits except for +-0, where +0 wins.
        f32::from_bits(a.to_bits() & b.to_bits())
    } else if a > b {
        a
    } else {
        b
    }
}

/// Maps 32 random bits to a float32 in the half-open interval `[0, 1)`.
///
/// `f32::from_bits(bits >> 9 | 0x3f80_0000) - 1`: the top 23 bits become the
/// mantissa of a number in `[1, 2)`, and subtracting 1 is exact, so the result
/// is `(bits >> 9) * 2^-23`. Mirrors the first half of `_uniform` in
/// `jax/_src/random.py` (`float_bits`, `bitcast_convert_type`, `- 1.`).
#[inline(always)]
pub fn unit_f32_from_bits(bits: u32) -> f32 {
    f32::from_bits((bits >> 9) | 0x3f80_0000) - 1.0
}

/// Maps 32 random bits to a float32 uniform on the half-open `[minval, maxval)`.
///
/// `max(minval, fma(f, maxval - minval, minval))` with `f` =
/// [`unit_f32_from_bits`]: `maxval - minval` is rounded to float32 first, the
/// product and the sum are rounded once together (XLA contracts
/// `floats * (maxval - minval) + minval` into one FMA), and the clamp is XLA's
/// NaN-propagating `maximum` (`-0 < +0`). Subnormal bounds, differences and
/// results are flushed to zero as XLA CPU does. Because of rounding the
/// result can equal `maxval` when the range is wide relative to `minval`;
/// JAX has the same property. Mirrors `_uniform` in `jax/_src/random.py`.
#[inline(always)]
pub fn uniform_f32_from_bits(bits: u32, minval: f32, maxval: f32) -> f32 {
    let (lo, scale) = uniform_bounds(minval, maxval);
    uniform_f32_from_parts(bits, lo, scale)
}

/// The per-draw constants of [`uniform_f32_from_bits`]: `lo = flush(minval)` and
/// `scale = flush(flush(maxval) - lo)`, computed once for a whole draw.
#[inline(always)]
pub(super) fn uniform_bounds(minval: f32, maxval: f32) -> (f32, f32) {
    let lo = flush_denormal(minval);
    (lo, flush_denormal(flush_denormal(maxval) - lo))
}

/// [`uniform_f32_from_bits`] given the constants of [`uniform_bounds`]:
/// `max(lo, flush(fma(f, scale, lo)))`.
#[inline(always)]
pub(super) fn uniform_f32_from_parts(bits: u32, lo: f32, scale: f32) -> f32 {
    xla_max_f32(lo, flush_denormal(unit_f32_from_bits(bits).mul_add(scale, lo)))
}

/// XLA CPU's float32 natural logarithm (Eigen/Cephes `plog`), bit for bit.
///
/// For `x` in the normal range: write `x = m * 2^e` with `m` in `[0.5, 1)`;
/// if `m < sqrt(1/2)` use `m' = 2m`, `e' = e - 1`; with `t = m' - 1` (so
/// `t` in `[sqrt(1/2) - 1, sqrt(2) - 1)`) evaluate the degree-8 Cephes
/// polynomial as three FMA pieces combined with `t^3`, then
/// `log x = (t - t^2/2) + (t^3 P(t) + e q1) + e q2` with
/// `q1 + q2 = ln 2` split for extra precision. Subnormal inputs are read as
/// `0` (XLA's denormals-are-zero), so they give `-inf`; `log(0) = -inf`, `log(+inf) = +inf`, negative or NaN input gives
/// NaN (with all bits set, like XLA). Mirrors the `log_f32` routine XLA's CPU
/// backend (jaxlib 0.5.1) emits for `log`.
#[inline(always)]
pub fn xla_log_f32(x: f32) -> f32 {
    let x = flush_denormal(x);
    if x.is_nan() || x < 0.0 {
        return f32::from_bits(u32::MAX);
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return f32::INFINITY;
    }
    // XLA clamps to the smallest normal (a no-op once subnormals are flushed).
    let xc = if x <= MIN_NORMAL { MIN_NORMAL } else { x };
    let bits = xc.to_bits();
    let mut e = ((bits >> 23) as i32 - 127) as f32 + 1.0;
    let m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
    let small = m < LOG_SQRTHF;
    let mut t = m - 1.0;
    if small {
        e -= 1.0;
        t += m;
    }
    let y = t.mul_add(LOG_P0, LOG_P1);
    let y1 = t.mul_add(LOG_P3, LOG_P4);
    let y2 = t.mul_add(LOG_P6, LOG_P7);
    let y = t.mul_add(y, LOG_P2);
    let y1 = t.mul_add(y1, LOG_P5);
    let y2 = t.mul_add(y2, LOG_P8);
    let t2 = t * t;
    let t3 = t2 * t;
    let y = t3.mul_add(y, y1);
    let y = t3.mul_add(y, y2);
    let r = t3.mul_add(y, e * LOG_Q1);
    let head = (-0.5f32).mul_add(t2, t);
    let s = head + r;
    e.mul_add(LOG_Q2, s)
}

/// XLA's float32 `log1p`, bit for bit (`EmitLog1p`, CPU backend).
///
/// For `|z| < 0.41421357` (`sqrt(2) - 1` in float32) the Cephes rational
/// approximation `z + (z^3 N(z)/D(z) - z^2/2)`, with `N`, `D` of degree 6
/// evaluated by FMA Horner, `z^3 = z * (z*z)` rounded, and
/// `z^3 * (N/D) - z^2/2` as one FMA; otherwise [`xla_log_f32`]`(1 + z)`.
/// Subnormal input and output are flushed to zero (XLA CPU's DAZ/FTZ).
/// Mirrors `ElementalIrEmitter::EmitLog1p` in XLA.
#[inline(always)]
pub fn xla_log1p_f32(z: f32) -> f32 {
    let z = flush_denormal(z);
    if z.abs() < LOG1P_SMALL {
        let z2 = z * z;
        // The leading `0 * z + c0` is not contracted by XLA; it is `c0` for
        // every finite `z` (|z| < 0.42 here), so start from `c0`.
        let mut num = LOG1P_NUM[0];
        let mut den = LOG1P_DEN[0];
        for i in 1..7 {
            num = z.mul_add(num, LOG1P_NUM[i]);
            den = z.mul_add(den, LOG1P_DEN[i]);
        }
        let ratio = num / den;
        let z3 = z * z2;
        let tail = z3.mul_add(ratio, -(z2 * 0.5));
        flush_denormal(z + tail)
    } else {
        xla_log_f32(z + 1.0)
    }
}

/// XLA's float32 inverse error function, bit for bit (CPU backend).
///
/// Giles' single-precision approximation: `w = -log1p(-x*x)` (with
/// [`xla_log1p_f32`]); if `w < 5` then `v = w - 2.5` and the first
/// coefficient set, else `v = sqrt(w) - 3` and the second; `p` by Horner
/// with one FMA per step (`p = fma(v, p, c_i)`); the result is `x * p`, and
/// `x * inf` (`+-inf`) when `|x| == 1`. Defined on `[-1, 1]`; NaN outside.
/// Subnormal input and output are flushed to zero (XLA CPU's DAZ/FTZ).
/// Mirrors `materializeErfInvF32` (StableHLO's CHLO legalization) as lowered
/// by XLA CPU for `lax.erf_inv` in jaxlib 0.5.1.
#[inline(always)]
pub fn erfinv_f32(x: f32) -> f32 {
    let x = flush_denormal(x);
    let lp = xla_log1p_f32(x * -x);
    // `w < 5` is compiled as `log1p(..) > -5` (false for NaN, like `w < 5`).
    let lt5 = lp > -5.0;
    let (v, c) = if lt5 {
        (-2.5 - lp, &ERFINV_LT5)
    } else {
        ((-lp).sqrt() - 3.0, &ERFINV_GE5)
    };
    let mut p = c[0];
    for &ci in &c[1..] {
        p = v.mul_add(p, ci);
    }
    if x.abs() == 1.0 {
        p = f32::INFINITY;
    }
    flush_denormal(x * p)
}

/// Maps 32 random bits to a standard normal float32, as `jax.random.normal`.
///
/// `u = uniform_f32_from_bits(bits, nextafter(-1, 0), 1)` (on the half-open
/// `[-0.99999994, 1)`; `1 - (-0.99999994)` rounds to exactly 2 in float32),
/// then `sqrt(2)_f32 * erfinv_f32(u)`. The result is finite for every input.
/// Mirrors `_normal_real` in `jax/_src/random.py`.
#[inline(always)]
pub fn normal_f32_from_bits(bits: u32) -> f32 {
    let u = uniform_f32_from_bits(bits, NORMAL_UNIFORM_LO, 1.0);
    erfinv_f32(u) * SQRT_2_F32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The float32 constants are the roundings of the decimal constants of
    /// the XLA / Eigen / Cephes sources (double -> float, as LLVM's
    /// `ConstantFP::get(float, double)` does).
    #[test]
    #[allow(clippy::excessive_precision, clippy::approx_constant)]
    fn constants_are_float32_roundings_of_the_sources() {
        let pairs: &[(f32, f64)] = &[
            (LOG_SQRTHF, 0.707106781186547524),
            (LOG_P0, 7.0376836292E-2),
            (LOG_P1, -1.1514610310E-1),
            (LOG_P2, 1.1676998740E-1),
            (LOG_P3, -1.2420140846E-1),
            (LOG_P4, 1.4249322787E-1),
            (LOG_P5, -1.6668057665E-1),
            (LOG_P6, 2.0000714765E-1),
            (LOG_P7, -2.4999993993E-1),
            (LOG_P8, 3.3333331174E-1),
            (LOG_Q1, -2.12194440e-4),
            (LOG_Q2, 0.693359375),
            (LOG1P_SMALL, 0.41421356237309504880),
            (LOG1P_NUM[0], 4.5270000862445199635215E-5),
            (LOG1P_NUM[1], 4.9854102823193375972212E-1),
            (LOG1P_NUM[2], 6.5787325942061044846969E0),
            (LOG1P_NUM[3], 2.9911919328553073277375E1),
            (LOG1P_NUM[4], 6.0949667980987787057556E1),
            (LOG1P_NUM[5], 5.7112963590585538103336E1),
            (LOG1P_NUM[6], 2.0039553499201281259648E1),
            (LOG1P_DEN[1], 1.5062909083469192043167E1),
            (LOG1P_DEN[2], 8.3047565967967209469434E1),
            (LOG1P_DEN[3], 2.2176239823732856465394E2),
            (LOG1P_DEN[4], 3.0909872225312059774938E2),
            (LOG1P_DEN[5], 2.1642788614495947685003E2),
            (LOG1P_DEN[6], 6.0118660497603843919306E1),
            (ERFINV_LT5[0], 2.81022636e-08),
            (ERFINV_LT5[1], 3.43273939e-07),
            (ERFINV_LT5[2], -3.5233877e-06),
            (ERFINV_LT5[3], -4.39150654e-06),
            (ERFINV_LT5[4], 0.00021858087),
            (ERFINV_LT5[5], -0.00125372503),
            (ERFINV_LT5[6], -0.00417768164),
            (ERFINV_LT5[7], 0.246640727),
            (ERFINV_LT5[8], 1.50140941),
            (ERFINV_GE5[0], -0.000200214257),
            (ERFINV_GE5[1], 0.000100950558),
            (ERFINV_GE5[2], 0.00134934322),
            (ERFINV_GE5[3], -0.00367342844),
            (ERFINV_GE5[4], 0.00573950773),
            (ERFINV_GE5[5], -0.0076224613),
            (ERFINV_GE5[6], 0.00943887047),
            (ERFINV_GE5[7], 1.00167406),
            (ERFINV_GE5[8], 2.83297682),
            (NORMAL_UNIFORM_LO, -0.99999994039535522),
            (SQRT_2_F32, std::f64::consts::SQRT_2),
        ];
        for &(c, d) in pairs {
            assert_eq!(c.to_bits(), (d as f32).to_bits(), "{d}");
        }
        assert_eq!(NORMAL_UNIFORM_LO.to_bits(), 0xbf7f_ffff);
        assert_eq!(1.0 - NORMAL_UNIFORM_LO, 2.0);
    }

    #[test]
    fn unit_map_is_top_23_bits() {
        assert_eq!(unit_f32_from_bits(0), 0.0);
        assert_eq!(unit_f32_from_bits(u32::MAX), 1.0 - f32::EPSILON);
        assert_eq!(unit_f32_from_bits(1 << 31), 0.5);
        assert_eq!(unit_f32_from_bits(0x1ff), 0.0);
    }

    #[test]
    fn uniform_is_half_open_and_clamped() {
        assert_eq!(uniform_f32_from_bits(0, -2.0, 3.0), -2.0);
        assert!(uniform_f32_from_bits(u32::MAX, -2.0, 3.0) < 3.0);
        assert_eq!(uniform_f32_from_bits(0, -0.0, 1.0).to_bits(), 0);
        assert!(uniform_f32_from_bits(5, f32::NAN, 1.0).is_nan());
        // The FMA matters: single rounding of f*(max-min)+min.
        let f = unit_f32_from_bits(0x9e37_79b9);
        let fused = f.mul_add(5.0, -2.0);
        assert_eq!(uniform_f32_from_bits(0x9e37_79b9, -2.0, 3.0), fused);
    }

    #[test]
    fn log_special_values() {
        assert_eq!(xla_log_f32(1.0), 0.0);
        assert_eq!(xla_log_f32(0.0), f32::NEG_INFINITY);
        assert_eq!(xla_log_f32(f32::INFINITY), f32::INFINITY);
        assert!(xla_log_f32(-1.0).is_nan());
        assert!(xla_log_f32(f32::NAN).is_nan());
        // Subnormals are read as zero (DAZ): jnp.log(np.float32(1e-40)) is -inf.
        assert_eq!(xla_log_f32(1e-40), f32::NEG_INFINITY);
        assert_eq!(xla_log1p_f32(-1e-40).to_bits(), 0x8000_0000);
        assert!((xla_log_f32(2.0) - std::f32::consts::LN_2).abs() <= f32::EPSILON);
        assert_eq!(xla_log1p_f32(0.0), 0.0);
        assert_eq!(xla_log1p_f32(-1.0), f32::NEG_INFINITY);
    }

    #[test]
    fn denormals_flush_like_xla_cpu() {
        // jax 0.5.1: import jax, numpy as np; print(np.asarray(jax.lax.erf_inv(np.array([1e-40, 1.1e-38, 1.2e-38, 2e-38], np.float32))).view(np.uint32))
        // -> [0 0 0 12648652]
        let x = [1e-40f32, 1.1e-38, 1.2e-38, 2e-38];
        let got: Vec<u32> = x.iter().map(|&v| erfinv_f32(v).to_bits()).collect();
        assert_eq!(got, [0, 0, 0, 12648652]);
        assert_eq!(uniform_f32_from_bits(u32::MAX, -1e-39, 1e-39), 0.0);
    }

    #[test]
    fn erfinv_edges() {
        assert_eq!(erfinv_f32(0.0), 0.0);
        assert_eq!(erfinv_f32(1.0), f32::INFINITY);
        assert_eq!(erfinv_f32(-1.0), f32::NEG_INFINITY);
        assert!(erfinv_f32(1.5).is_nan());
        assert_eq!(erfinv_f32(0.3), -erfinv_f32(-0.3));
        // Extremes of the normal map stay finite.
        assert!(normal_f32_from_bits(0).is_finite());
        assert!(normal_f32_from_bits(u32::MAX).is_finite());
    }
}
