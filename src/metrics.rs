//! Sample-quality metrics: how far a cloud of samples lies from a cloud of data.
//!
//! Both metrics take two sets of points `x` (`[N, ...]`) and `y` (`[M, ...]`), flatten every
//! example to a vector of `D` values and compute in float64 on the device of `x`. They make no
//! assumption about where the points came from, so they compare any sampler's output with
//! held-out data (`examples/toy.rs` uses them for its table).
//!
//! - [`energy_distance`]: the energy distance of Székely and Rizzo (2013, "Energy statistics:
//!   a class of statistics based on distances"),
//!   `E(X, Y) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|`, with `|.|` the Euclidean norm. It is
//!   zero exactly when the two distributions are equal and positive otherwise; it has the
//!   units of a distance but behaves like a *squared* one for nearby distributions (its
//!   square root is a metric). The within-set terms are the unbiased U-statistics (pairs
//!   `i != j`), so the estimate of `E` between two samples of one distribution is centred
//!   on 0 (and may come out slightly negative).
//! - [`sliced_wasserstein`]: the sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel
//!   et al. 2015), `SW2(X, Y) = sqrt(E_theta W2(theta.X, theta.Y)^2)` over directions
//!   `theta` uniform on the unit sphere, estimated with `projections` directions drawn from a
//!   [`Key`] (so it is reproducible) and, on each, the exact 1-D `W2` between the two sorted
//!   projections. It needs `N == M`. For `N(0, I)` against `N(mu, I)` in `D` dimensions it is
//!   `|mu| / sqrt(D)`.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::rng::Key;

/// Rows per block when summing pairwise distances, so memory stays `O(BLOCK * max(N, M))`.
const BLOCK: i64 = 1024;

/// Flattens `[N, ...]` to float64 `[N, D]` after checking it; returns the tensor.
fn as_points(name: &str, v: &Tensor) -> Result<Tensor> {
    let s = v.size();
    if s.len() < 2 {
        return Err(Error::invalid(name, "points shaped [N, ...] with at least 2 axes", format!("{s:?}")));
    }
    if s[0] < 2 {
        return Err(Error::invalid(name, "at least 2 points", s[0]));
    }
    if !matches!(v.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
        return Err(Error::invalid(name, "floating-point values", format!("{:?}", v.kind())));
    }
    let p = v.f_reshape([s[0], -1])?.f_to_kind(Kind::Double)?;
    crate::interfaces::check_finite(name, &p)?;
    Ok(p)
}

fn check_pair(x: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
    let px = as_points("x", x)?;
    let py = as_points("y", y)?.f_to_device(px.device())?;
    if px.size()[1] != py.size()[1] {
        return Err(Error::invalid("y", format!("points of {} values (those of x)", px.size()[1]), py.size()[1]));
    }
    Ok((px, py))
}

/// The sum of `|a_i - b_j|` over all pairs, in blocks of rows of `a`.
fn pair_distance_sum(a: &Tensor, b: &Tensor) -> Result<f64> {
    let n = a.size()[0];
    let mut total = 0.0;
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        // compute_mode 2: never the matrix-product shortcut, exact zeros on a diagonal.
        let d = Tensor::f_cdist(&a.f_narrow(0, start, len)?, b, 2.0, 2)?;
        total += d.f_sum(Kind::Double)?.f_double_value(&[])?;
        start += len;
    }
    Ok(total)
}

/// The energy distance `2 E|X - Y| - E|X - X'| - E|Y - Y'|` between the point sets `x`
/// (`[N, ...]`) and `y` (`[M, ...]`), `N, M >= 2`, with unbiased within-set terms.
///
/// Errors: fewer than 2 points, a different number of values per point, non-float or
/// non-finite values.
pub fn energy_distance(x: &Tensor, y: &Tensor) -> Result<f64> {
    let _ng = tch::no_grad_guard();
    let (px, py) = check_pair(x, y)?;
    let (n, m) = (px.size()[0] as f64, py.size()[0] as f64);
    let xy = pair_distance_sum(&px, &py)? / (n * m);
    let xx = pair_distance_sum(&px, &px)? / (n * (n - 1.0));
    let yy = pair_distance_sum(&py, &py)? / (m * (m - 1.0));
    Ok(2.0 * xy - xx - yy)
}

/// The sliced 2-Wasserstein distance between `x` and `y` (`[N, ...]` each, same `N >= 2`),
/// averaged over `projections` random directions drawn as normalised `N(0, I)` vectors from
/// `key` (the same key gives the same directions on every device).
///
/// Errors: `projections < 1`, different point counts or values per point, non-float or
/// non-finite values.
pub fn sliced_wasserstein(x: &Tensor, y: &Tensor, projections: i64, key: &Key) -> Result<f64> {
    let _ng = tch::no_grad_guard();
    if projections < 1 {
        return Err(Error::invalid("projections", "at least 1 direction", projections));
    }
    let (px, py) = check_pair(x, y)?;
    if px.size()[0] != py.size()[0] {
        return Err(Error::invalid("y", format!("{} points (as many as x)", px.size()[0]), py.size()[0]));
    }
    let d = px.size()[1];
    let theta = key.normal_tensor(&[projections, d], px.device())?.f_to_kind(Kind::Double)?;
    let theta = theta.f_div(&theta.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?.f_clamp_min(1e-12)?)?;
    let theta_t = theta.f_transpose(0, 1)?;
    let (sx, _) = px.f_matmul(&theta_t)?.f_sort(0, false)?;
    let (sy, _) = py.f_matmul(&theta_t)?.f_sort(0, false)?;
    Ok(sx.f_sub(&sy)?.f_square()?.f_mean(Kind::Double)?.f_double_value(&[])?.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rngs;
    use std::f64::consts::PI;
    use tch::Device;

    fn normal(seed: i64, shape: &[i64]) -> Tensor {
        Rngs::with_default(seed).normal("default", shape, Device::Cpu).unwrap()
    }

    /// `E|Z|` for `Z ~ N(mu, s^2)`.
    fn mean_abs_normal(mu: f64, s: f64) -> f64 {
        // Phi(-mu / s) via erfc, to double precision enough for a test.
        let phi = 0.5 * erfc(mu / (s * 2f64.sqrt()));
        s * (2.0 / PI).sqrt() * (-mu * mu / (2.0 * s * s)).exp() + mu * (1.0 - 2.0 * phi)
    }

    /// Complementary error function (Numerical Recipes' erfcc, relative error < 1.2e-7).
    fn erfc(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let r = t * (-z * z - 1.26551223
            + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
        if x >= 0.0 {
            r
        } else {
            2.0 - r
        }
    }

    #[test]
    fn energy_distance_of_shifted_gaussians_matches_the_closed_form() {
        // 1-D: X ~ N(0, 1), Y ~ N(mu, 1): E = 2 E|N(mu, 2)| - 2 E|N(0, 2)|.
        let (n, mu) = (4000, 1.0);
        let x = normal(1, &[n, 1]);
        let y = normal(2, &[n, 1]).f_add_scalar(mu).unwrap();
        let s = 2f64.sqrt();
        let exact = 2.0 * mean_abs_normal(mu, s) - 2.0 * mean_abs_normal(0.0, s);
        let got = energy_distance(&x, &y).unwrap();
        assert!((got - exact).abs() < 0.1 * exact, "energy distance {got}, closed form {exact}");
    }

    #[test]
    fn energy_distance_is_near_zero_within_a_distribution_and_scales_linearly() {
        let x = normal(3, &[3000, 2]);
        let y = normal(4, &[2500, 2]);
        let same = energy_distance(&x, &y).unwrap();
        assert!(same.abs() < 5e-3, "same distribution: {same}");
        let far = energy_distance(&x, &y.f_mul_scalar(2.0).unwrap()).unwrap();
        assert!(far > 20.0 * same.abs(), "N(0, I) against N(0, 4I): {far}");
        let scaled = energy_distance(&x.f_mul_scalar(3.0).unwrap(), &y.f_mul_scalar(6.0).unwrap()).unwrap();
        // x 3 and x 6 are float32 products: equal up to float32 rounding.
        assert!((scaled - 3.0 * far).abs() < 1e-5 * scaled.abs(), "{scaled} vs 3 x {far}");
        let sym = energy_distance(&y.f_mul_scalar(2.0).unwrap(), &x).unwrap();
        assert!((sym - far).abs() < 1e-9, "symmetry: {sym} vs {far}");
    }

    #[test]
    fn sliced_wasserstein_of_shifted_gaussians_is_the_shift_over_sqrt_d() {
        let n = 4000;
        let x = normal(5, &[n, 2]);
        let y = normal(6, &[n, 2]).f_add(&Tensor::from_slice(&[2.0f32, 0.0])).unwrap();
        let key = Key::from_seed(0);
        let got = sliced_wasserstein(&x, &y, 512, &key).unwrap();
        let exact = 2.0 / 2f64.sqrt();
        assert!((got - exact).abs() < 0.05 * exact, "SW2 {got}, closed form {exact}");
        // Reproducible through the key; zero on identical sets.
        assert_eq!(got, sliced_wasserstein(&x, &y, 512, &key).unwrap());
        assert_eq!(sliced_wasserstein(&x, &x, 16, &key).unwrap(), 0.0);
    }

    #[test]
    fn metrics_refuse_malformed_inputs() {
        let x = normal(7, &[10, 2]);
        assert!(energy_distance(&x, &normal(8, &[10, 3])).is_err());
        assert!(energy_distance(&normal(8, &[10]), &x).is_err());
        assert!(energy_distance(&normal(8, &[1, 2]), &x).is_err());
        assert!(sliced_wasserstein(&x, &normal(8, &[11, 2]), 4, &Key::from_seed(0)).is_err());
        assert!(sliced_wasserstein(&x, &x, 0, &Key::from_seed(0)).is_err());
        let nan = x.f_div_scalar(0.0).unwrap();
        assert!(energy_distance(&nan, &x).is_err());
    }
}
