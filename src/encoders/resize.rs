//! Bicubic resizing, as JAX computes it and as torch does.
//!
//! Two different functions carry the name "bicubic", and a port that swaps one for the other
//! drifts (REPA's DINOv2 preprocess is where this bites, quirk Q19):
//!
//! **JAX** ([`BicubicResize::Jax`], the reference's): `jax.image.resize(x, shape, "bicubic",
//! antialias=False)`, i.e. `jax.image.scale_and_translate` with `scale = m / n` and no
//! translation. Separable; along an axis of `n` inputs and `m` outputs, with the scale `s`
//! given as a float32:
//!
//! ```text
//! inv   = 1 / s                                    (float32)
//! c_j   = (j + 0.5) * inv - 0.5                    (float32, j < m: the sample positions)
//! k(x)  = ((1.5 x - 2.5) x) x + 1                  |x| < 1      (Keys, a = -0.5)
//!         ((-0.5 x + 2.5) x - 4) x + 2             1 <= |x| < 2
//!         0                                        |x| >= 2
//! w_ij  = k(|c_j - i|) / sum_i k(|c_j - i|)        (i < n: taps outside the image are dropped
//!                                                   and the rest renormalised; a column whose
//!                                                   sum is at most 1000 eps, or whose c_j lies
//!                                                   outside [-0.5, n - 0.5], is zero)
//! out_j = sum_i w_ij x_i
//! ```
//!
//! Everything is float32, as in JAX with x64 off: the same resize computed in float64 lands
//! 1.1e-4 away from the reference's pixels at 256 -> 224 (measured on its golden case). Without antialiasing the kernel is not widened
//! when downsampling, so each output has at most 4 taps. The arithmetic is the one XLA
//! compiles on CPU: `c_j` and each Horner step of `k` one fused multiply-add, each column sum
//! taken in blocks of 32 inputs, and the sum over taps an FMA chain in ascending input order
//! (rows first, then columns). With these the preprocess of the reference's golden cases is
//! reproduced bit for bit at 256 -> 224 and within 2 ulp at 512 -> 448; the weights equal
//! jax 0.5.1's bit for bit for every axis of 128 inputs or more (256, 288, 512, 768, 1024
//! checked); on shorter axes XLA's code differs again (16 -> 14: 4 weights an ulp or so away).
//! `jax.image.resize` keeps its scale as a Python float (the inverse is `float32(1 / (m /
//! n))`, [`AxisWeights::jax_resize`]); [`jax_scale_bicubic`] takes the scale explicitly as
//! a float32 (transformers' DINOv2 resizes its position table with
//! `s = float32((S + 0.1) / 16)`, not `S / 16`).
//!
//! **Torch** ([`BicubicResize::Torch`]): `torch.nn.functional.interpolate(x, size,
//! mode="bicubic", align_corners=False)` (antialias off), libtorch's `upsample_bicubic2d`:
//! the cubic convolution kernel with `a = -0.75`, positions `(j + 0.5) * n / m - 0.5`, and
//! border taps clamped to the edge pixel instead of dropped.
//!
//! Inputs are channel-last `[B, H, W, C]` float32, as everywhere in this crate.

use serde::Deserialize;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Which bicubic resize (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BicubicResize {
    /// JAX's `jax.image.resize(..., "bicubic", antialias=False)`: Keys `a = -0.5`, float32
    /// sample positions, border taps dropped and renormalised. The reference's; the default.
    #[default]
    Jax,
    /// torch's `F.interpolate(..., mode="bicubic", align_corners=False)`: `a = -0.75`, border
    /// taps clamped (libtorch's `upsample_bicubic2d`).
    Torch,
}

impl BicubicResize {
    /// The name used in settings (`jax`, `torch`).
    pub fn as_str(self) -> &'static str {
        match self {
            BicubicResize::Jax => "jax",
            BicubicResize::Torch => "torch",
        }
    }
}

/// Keys' cubic convolution kernel with `a = -0.5` at `x >= 0`, in float32 with JAX's
/// evaluation order.
pub fn keys_cubic(x: f32) -> f32 {
    if x >= 2.0 {
        0.0
    } else if x >= 1.0 {
        ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    } else {
        ((1.5 * x - 2.5) * x) * x + 1.0
    }
}

/// The resampling of one axis as JAX computes it: for each output, its taps (input index,
/// weight), ascending in the input index.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisWeights {
    /// Inputs along the axis.
    pub n_in: i64,
    /// Outputs along the axis.
    pub n_out: i64,
    /// The nonzero taps of each output, ascending in the input index.
    pub taps: Vec<Vec<(i64, f32)>>,
}

impl AxisWeights {
    /// JAX's weights (`compute_weight_mat` of `jax.image.scale_and_translate`, no
    /// translation, no antialias) for `n_in -> n_out` samples at a float32 `scale`
    /// (`inv = 1 / scale` in float32; see the [module docs](self)).
    pub fn jax(n_in: i64, n_out: i64, scale: f32) -> Result<AxisWeights> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::invalid("scale", "a finite positive scale", scale));
        }
        Self::with_inverse(n_in, n_out, 1.0f32 / scale)
    }

    /// The weights of `jax.image.resize` for `n_in -> n_out`: its scale `n_out / n_in` stays
    /// a Python float, so the inverse is `float32(1 / (n_out / n_in))` computed in float64.
    pub fn jax_resize(n_in: i64, n_out: i64) -> Result<AxisWeights> {
        if n_in < 1 || n_out < 1 {
            return Err(Error::invalid("sizes", "at least 1 sample in and out", format!("{n_in} -> {n_out}")));
        }
        Self::with_inverse(n_in, n_out, (1.0f64 / (n_out as f64 / n_in as f64)) as f32)
    }

    fn with_inverse(n_in: i64, n_out: i64, inv: f32) -> Result<AxisWeights> {
        if n_in < 1 {
            return Err(Error::invalid("n_in", "at least 1 sample", n_in));
        }
        if n_out < 1 {
            return Err(Error::invalid("n_out", "at least 1 sample", n_out));
        }
        let mut taps = Vec::with_capacity(n_out as usize);
        for j in 0..n_out {
            // (j + 0.5) * inv - translation * inv - 0.5 with translation 0, one FMA as XLA
            // compiles it
            let c = (j as f32 + 0.5).mul_add(inv, -0.5);
            let inside = c >= -0.5 && c <= n_in as f32 - 0.5;
            let mut row: Vec<(i64, f32)> = Vec::new();
            if inside {
                // |c - i| < 2 only for i in (c - 2, c + 2)
                let lo = ((c - 2.0).floor() as i64).max(0);
                let hi = ((c + 2.0).ceil() as i64).min(n_in - 1);
                for i in lo..=hi {
                    let k = keys_cubic_fma((c - i as f32).abs());
                    if k != 0.0 {
                        row.push((i, k));
                    }
                }
                // XLA sums each column in blocks of 32 inputs, the blocks then in order
                let mut total = 0f32;
                let mut block = 0f32;
                let mut current = None;
                for &(i, k) in &row {
                    if current != Some(i / 32) {
                        if current.is_some() {
                            total += block;
                        }
                        block = 0.0;
                        current = Some(i / 32);
                    }
                    block += k;
                }
                total += block;
                if total.abs() > 1000.0 * f32::EPSILON {
                    for (_, k) in row.iter_mut() {
                        *k /= total;
                    }
                } else {
                    row.clear();
                }
            }
            taps.push(row);
        }
        Ok(AxisWeights { n_in, n_out, taps })
    }

    /// The dense matrix `[n_out, n_in]` (row `j` holds output `j`'s weights).
    pub fn dense(&self) -> Vec<f32> {
        let mut m = vec![0f32; (self.n_in * self.n_out) as usize];
        for (j, row) in self.taps.iter().enumerate() {
            for &(i, w) in row {
                m[j * self.n_in as usize + i as usize] = w;
            }
        }
        m
    }

    /// Applies the weights along `axis` of `x` (which must have `n_in` entries there): for
    /// each output, `acc = fma(w_i, x_i, acc)` over its taps in ascending input order, as
    /// XLA's dot accumulates (each fused step computed in float64 and rounded to float32).
    pub fn apply(&self, x: &Tensor, axis: i64) -> Result<Tensor> {
        let size = x.size();
        let nd = size.len() as i64;
        let ax = if axis < 0 { axis + nd } else { axis };
        if ax < 0 || ax >= nd || size[ax as usize] != self.n_in {
            return Err(Error::invalid("x", format!("{} entries along axis {axis}", self.n_in), format!("shape {size:?}")));
        }
        let width = self.taps.iter().map(Vec::len).max().unwrap_or(0);
        let dev = x.device();
        let mut shape = vec![1i64; nd as usize];
        shape[ax as usize] = self.n_out;
        let mut out = size.clone();
        out[ax as usize] = self.n_out;
        let mut acc = Tensor::f_zeros(&out, (Kind::Float, dev))?;
        let x64 = x.f_to_kind(Kind::Double)?;
        for k in 0..width {
            let (idx, w): (Vec<i64>, Vec<f64>) =
                self.taps.iter().map(|row| row.get(k).map(|&(i, w)| (i, w as f64)).unwrap_or((0, 0.0))).unzip();
            let idx = Tensor::f_from_slice(&idx)?.f_to_device(dev)?;
            let w = Tensor::f_from_slice(&w)?.f_reshape(&shape)?.f_to_device(dev)?;
            // w * x is exact in float64; one rounding to float32 after the add
            let term = x64.f_index_select(ax, &idx)?.f_mul(&w)?;
            acc = acc.f_to_kind(Kind::Double)?.f_add(&term)?.f_to_kind(Kind::Float)?;
        }
        Ok(acc)
    }
}

/// [`keys_cubic`] as XLA compiles it: every `a * x + b` of the Horner form is one FMA.
pub fn keys_cubic_fma(x: f32) -> f32 {
    if x >= 2.0 {
        0.0
    } else if x >= 1.0 {
        (-0.5f32).mul_add(x, 2.5).mul_add(x, -4.0).mul_add(x, 2.0)
    } else {
        (1.5f32.mul_add(x, -2.5) * x).mul_add(x, 1.0)
    }
}

fn check_nhwc(x: &Tensor, name: &str) -> Result<(i64, i64, i64, i64)> {
    let s = x.size();
    if s.len() != 4 || s.iter().any(|&d| d < 1) {
        return Err(Error::invalid(name, "shape [B, H, W, C] with every size at least 1", format!("{s:?}")));
    }
    if x.kind() != Kind::Float {
        return Err(Error::invalid(name, "dtype float32", format!("{:?}", x.kind())));
    }
    Ok((s[0], s[1], s[2], s[3]))
}

/// `jax.image.scale_and_translate(x, [B, out_h, out_w, C], (1, 2), [scale_h, scale_w], [0, 0],
/// "bicubic", antialias=False)` on channel-last `x` `[B, H, W, C]` (float32): rows first,
/// then columns.
pub fn jax_scale_bicubic(x: &Tensor, out_h: i64, out_w: i64, scale_h: f32, scale_w: f32) -> Result<Tensor> {
    let (_, h, w, _) = check_nhwc(x, "x")?;
    let rows = AxisWeights::jax(h, out_h, scale_h)?;
    let cols = AxisWeights::jax(w, out_w, scale_w)?;
    let y = if (out_h, scale_h) == (h, 1.0) { x.shallow_clone() } else { rows.apply(x, 1)? };
    if (out_w, scale_w) == (w, 1.0) {
        Ok(y)
    } else {
        cols.apply(&y, 2)
    }
}

/// Resizes channel-last images `[B, H, W, C]` (float32) to `[B, out_h, out_w, C]` with the
/// bicubic resize `method` (see the [module docs](self)). An axis whose size does not change
/// is left as is (JAX resizes only the axes that change; torch's kernel copies them).
pub fn resize_bicubic(x: &Tensor, out_h: i64, out_w: i64, method: BicubicResize) -> Result<Tensor> {
    let (_, h, w, _) = check_nhwc(x, "x")?;
    if out_h < 1 || out_w < 1 {
        return Err(Error::invalid("output size", "at least 1 x 1", format!("{out_h} x {out_w}")));
    }
    match method {
        BicubicResize::Jax => {
            // jax.image.resize: only the axes that change, rows first
            let y = if out_h == h { x.shallow_clone() } else { AxisWeights::jax_resize(h, out_h)?.apply(x, 1)? };
            if out_w == w {
                Ok(y)
            } else {
                AxisWeights::jax_resize(w, out_w)?.apply(&y, 2)
            }
        }
        BicubicResize::Torch => torch_bicubic(x, out_h, out_w, None),
    }
}

/// libtorch's `upsample_bicubic2d` (what `F.interpolate(mode="bicubic", align_corners=False)`
/// calls) on channel-last `x`, with `scales` passed to the kernel when given (as
/// `F.interpolate(scale_factor=...)` does) and derived from the sizes otherwise.
pub fn torch_bicubic(x: &Tensor, out_h: i64, out_w: i64, scales: Option<(f64, f64)>) -> Result<Tensor> {
    check_nhwc(x, "x")?;
    let nchw = x.f_permute([0, 3, 1, 2])?.f_contiguous()?;
    let (sh, sw) = match scales {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let y = nchw.f_upsample_bicubic2d([out_h, out_w], false, sh, sw)?;
    Ok(y.f_permute([0, 2, 3, 1])?.f_contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn nhwc_tensor(values: &[f32], shape: [i64; 4], _device: Device) -> Result<Tensor> {
        Ok(Tensor::f_from_slice(values)?.f_reshape(shape)?)
    }

    #[test]
    fn keys_kernel_is_interpolating_and_has_support_two() {
        assert_eq!(keys_cubic(0.0), 1.0);
        assert_eq!(keys_cubic(1.0), 0.0);
        assert_eq!(keys_cubic(2.0), 0.0);
        assert_eq!(keys_cubic(3.0), 0.0);
        // k(0.5) = (1.5 * 0.5 - 2.5) * 0.25 + 1 = 0.5625; k(1.5) = -0.0625
        assert_eq!(keys_cubic(0.5), 0.5625);
        assert_eq!(keys_cubic(1.5), -0.0625);
    }

    fn bits(w: &AxisWeights, j: usize) -> Vec<(i64, u32)> {
        w.taps[j].iter().map(|&(i, v)| (i, v.to_bits())).collect()
    }

    #[test]
    fn jax_weights_match_jax_0_5_1_bit_for_bit() {
        // jax 0.5.1, CPU: the weights jax.image.resize applies, read off by resizing an
        // identity (jax.image.resize(eye(128)[None, :, :, None], (1, 112, 128, 1), "bicubic",
        // antialias=False)[0, j]), and those of the jitted scale_and_translate with scale
        // float32(32.1 / 16) (transformers' 16 -> 32 table resize), printed as float bits.
        let r = AxisWeights::jax_resize(128, 112).unwrap();
        assert_eq!(bits(&r, 0), vec![(0, 0x3f7551f4), (1, 0x3d344a61), (2, 0xbb1698cf)]);
        assert_eq!(bits(&r, 55), vec![(61, 0xbb1b3ad3), (62, 0x3d39d5ff), (63, 0x3f7cdff2), (64, 0xbcfc42ef)]);
        assert_eq!(bits(&r, 111), vec![(125, 0xbb1697ad), (126, 0x3d3448c8), (127, 0x3f75520a)]);
        let t = AxisWeights::jax(16, 32, (32.1f64 / 16.0) as f32).unwrap();
        assert_eq!(bits(&t, 0), vec![(0, 0x3f8b514a), (1, 0xbdb514a1)]);
        assert_eq!(bits(&t, 17), vec![(7, 0xbd89cb6a), (8, 0x3f647d99), (9, 0x3e46adcd), (10, 0xbc9df3fa)]);
        // the fused and the plain kernel are the same function up to a few roundings
        for i in 0..2000 {
            let x = i as f32 / 1000.0;
            assert!((keys_cubic_fma(x) - keys_cubic(x)).abs() <= 4.0 * f32::EPSILON, "{x}");
        }
    }

    #[test]
    fn jax_resize_keeps_constants_and_refuses_bad_sizes() {
        let x = Tensor::full([1, 9, 7, 2], 0.25, (Kind::Float, Device::Cpu));
        for (h, w) in [(4, 3), (20, 11), (9, 7)] {
            let y = resize_bicubic(&x, h, w, BicubicResize::Jax).unwrap();
            assert_eq!(y.size(), [1, h, w, 2]);
            let d = (y - 0.25).abs().max().double_value(&[]);
            assert!(d < 1e-7, "{h}x{w}: {d}");
        }
        assert!(resize_bicubic(&x, 0, 3, BicubicResize::Jax).is_err());
        assert!(resize_bicubic(&x.view([9, 7, 2]), 3, 3, BicubicResize::Jax).is_err());
        assert!(AxisWeights::jax(4, 3, f32::NAN).is_err());
        assert!(AxisWeights::jax(4, 3, 0.75).unwrap().apply(&x, 1).is_err());
    }

    #[test]
    fn torch_resize_is_f_interpolate_and_differs_from_jax() {
        // a linear ramp is kept by both kernels inside the image; they differ at the border
        // (clamped taps vs renormalised ones) and on curved data (a = -0.75 vs -0.5)
        let v: Vec<f32> = (0..64).map(|i| ((i * 37) % 17) as f32 / 17.0).collect();
        let x = nhwc_tensor(&v, [1, 8, 8, 1], Device::Cpu).unwrap();
        let a = resize_bicubic(&x, 6, 6, BicubicResize::Jax).unwrap();
        let b = resize_bicubic(&x, 6, 6, BicubicResize::Torch).unwrap();
        let d = (&a - &b).abs().max().double_value(&[]);
        assert!(d > 1e-3, "the two resizes should differ, max |d| {d}");
        let nchw = x.permute([0, 3, 1, 2]).upsample_bicubic2d([6, 6], false, None, None).permute([0, 2, 3, 1]);
        assert!(b.equal(&nchw));
    }
}
