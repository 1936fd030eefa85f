//! Tolerances and element-wise comparison with worst-ulp / worst-relative-error reporting.
//!
//! An element `a` (computed) passes against `e` (expected) when any of these hold:
//! - both are NaN, or both are the same infinity, or their bits are equal;
//! - `ulp(a, e) <= max_ulp`;
//! - `|a - e| <= rtol * |e| + atol * scale`, where `scale = max |e|` over the
//!   array's finite elements (at least `f32::MIN_POSITIVE`).
//!
//! The `atol * scale` term states an absolute tolerance *relative to the array's
//! scale* (docs/format.md, "Tolerances"): summed or integrated quantities are
//! judged against the size of what they sum, not against elements that cancel to
//! near zero. Integer arrays (labels, random bits, keys) must be equal.
//!
//! A quantity that is zero in exact arithmetic holds only rounding noise, and its own
//! largest magnitude is no scale at all. Its tolerance says [`Scale::CaseGradients`]:
//! `scale` is then the largest finite magnitude over *all* of the case's expected
//! gradients (`grad.*`), which the harness computes and hands to [`compare_scaled`].
//! The DiT's attention key bias is such a quantity: softmax ignores a shift common to
//! all keys, so `d loss / d key.bias = sum_j d loss / d k_j = 0`.

use super::array::{Array, ArrayData};

/// What a tolerance's `atol` is a fraction of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scale {
    /// The expected array's own largest finite magnitude.
    #[default]
    Own,
    /// The largest finite magnitude over all expected gradients (`grad.*`) of the case, for
    /// a gradient that is zero in exact arithmetic (falls back to [`Scale::Own`] when the
    /// comparison is given no case scale).
    CaseGradients,
}

/// How close a computed array must be to the expected one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance per element.
    pub rtol: f64,
    /// Absolute tolerance, as a fraction of the scale named by `scale`.
    pub atol: f64,
    /// Ulp budget per element (float32 ulps between computed and expected).
    pub max_ulp: u64,
    /// What `atol` is a fraction of.
    pub scale: Scale,
}

impl Tolerance {
    /// Bit-for-bit equality (random streams, integer arrays).
    pub const EXACT: Tolerance = Tolerance { rtol: 0.0, atol: 0.0, max_ulp: 0, scale: Scale::Own };

    /// An element-wise computation of a few roundings: within `n` ulp of the element, or
    /// within `n` ulp of the array's scale (for elements that cancel toward zero).
    pub fn elementwise(n: u64) -> Tolerance {
        Tolerance { rtol: 0.0, atol: n as f64 * f32::EPSILON as f64, max_ulp: n, scale: Scale::Own }
    }

    /// A computation that sums or integrates: `rtol` per element plus `atol` of the array's scale.
    pub fn close(rtol: f64, atol: f64) -> Tolerance {
        Tolerance { rtol, atol, max_ulp: 0, scale: Scale::Own }
    }

    /// The same tolerance with `atol` taken against the case's gradient scale
    /// ([`Scale::CaseGradients`]).
    pub fn against_case_gradients(self) -> Tolerance {
        Tolerance { scale: Scale::CaseGradients, ..self }
    }
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Tolerance::EXACT {
            write!(f, "exact")
        } else {
            let scale = match self.scale {
                Scale::Own => "scale",
                Scale::CaseGradients => "case gradient scale",
            };
            write!(f, "ulp<={} or |d|<={:.1e}|e|+{:.1e}*{scale}", self.max_ulp, self.rtol, self.atol)
        }
    }
}

/// The outcome of comparing one quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Whether every element passed and shapes and dtypes matched.
    pub passed: bool,
    /// Largest ulp distance over all elements; `None` when an element could not be measured
    /// in ulps (a NaN or an infinity against another value) or nothing was compared.
    pub worst_ulp: Option<u64>,
    /// Multi-index of the worst-ulp element.
    pub worst_ulp_at: Vec<usize>,
    /// Largest `|a - e| / |e|` (infinite where `e = 0` and `a != 0`, or where one side is
    /// not finite).
    pub worst_rel: f64,
    /// Multi-index of the worst-relative-error element.
    pub worst_rel_at: Vec<usize>,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Number of elements outside the tolerance.
    pub n_bad: usize,
    /// Number of elements compared.
    pub n: usize,
    /// Elements where exactly one side is NaN, or the two are different infinities or an
    /// infinity against a finite value.
    pub nonfinite: usize,
    /// The element shown as "the worst": the one furthest outside the tolerance (relative to
    /// what the tolerance allows it) when any is outside, else the worst-ulp element.
    pub worst_at: Vec<usize>,
    /// The expected value there.
    pub expected_at_worst: Option<f64>,
    /// The computed value there.
    pub actual_at_worst: Option<f64>,
    /// The scale `atol` was a fraction of.
    pub scale: f64,
    /// A mismatch of shape or dtype that prevented an element-wise comparison.
    pub mismatch: Option<String>,
}

impl Comparison {
    fn empty(n: usize) -> Comparison {
        Comparison {
            passed: true,
            worst_ulp: Some(0),
            worst_ulp_at: vec![],
            worst_rel: 0.0,
            worst_rel_at: vec![],
            max_abs: 0.0,
            n_bad: 0,
            n,
            nonfinite: 0,
            worst_at: vec![],
            expected_at_worst: None,
            actual_at_worst: None,
            scale: 0.0,
            mismatch: None,
        }
    }

    fn mismatch(msg: String) -> Comparison {
        Comparison { passed: false, worst_ulp: None, worst_rel: f64::INFINITY, max_abs: f64::INFINITY, n: 0, mismatch: Some(msg), ..Comparison::empty(0) }
    }

    /// A short human-readable description: where the worst element sits, its expected and
    /// computed values, and how many elements are outside.
    pub fn detail(&self) -> String {
        if let Some(m) = &self.mismatch {
            return m.clone();
        }
        let at = match (self.expected_at_worst, self.actual_at_worst) {
            (Some(e), Some(a)) => format!("worst at {:?}: expected {e:e}, got {a:e}", self.worst_at),
            _ => "no element".into(),
        };
        let nonfinite = if self.nonfinite > 0 { format!(", {} NaN/inf where the other side differs", self.nonfinite) } else { String::new() };
        format!("{at}; max |d| {:.3e}; {} of {} outside{nonfinite}", self.max_abs, self.n_bad, self.n)
    }
}

/// Distance in float32 ulps between two finite or infinite floats; `None` if exactly one is
/// NaN (two NaNs are 0 apart).
pub fn ulp_distance(a: f32, b: f32) -> Option<u64> {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() && b.is_nan() { Some(0) } else { None };
    }
    fn ordered(x: f32) -> i64 {
        let i = x.to_bits() as i32;
        if i < 0 {
            (i32::MIN as i64) - (i as i64)
        } else {
            i as i64
        }
    }
    Some((ordered(a) - ordered(b)).unsigned_abs())
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = flat % d;
            flat /= d;
        }
    }
    idx
}

/// Compares `actual` with `expected` under `tol` (`atol` against the array's own scale).
pub fn compare(actual: &Array, expected: &Array, tol: Tolerance) -> Comparison {
    compare_scaled(actual, expected, tol, None)
}

/// The largest finite magnitude of a float32 array (`None` for other dtypes or no finite element).
pub fn max_abs(a: &Array) -> Option<f64> {
    match &a.data {
        ArrayData::F32(v) => v.iter().filter(|x| x.is_finite()).map(|x| x.abs() as f64).reduce(f64::max),
        _ => None,
    }
}

/// Compares `actual` with `expected` under `tol`; when `tol.scale` is
/// [`Scale::CaseGradients`] and `case_grad_scale` is given, `atol` is a fraction of it.
pub fn compare_scaled(actual: &Array, expected: &Array, tol: Tolerance, case_grad_scale: Option<f64>) -> Comparison {
    if actual.shape != expected.shape {
        return Comparison::mismatch(format!("shape {:?} where {:?} expected", actual.shape, expected.shape));
    }
    let scale = match (tol.scale, case_grad_scale) {
        (Scale::CaseGradients, Some(s)) => Some(s),
        _ => None,
    };
    match (&actual.data, &expected.data) {
        (ArrayData::F32(a), ArrayData::F32(e)) => compare_f32(a, e, &expected.shape, tol, scale),
        (ArrayData::I32(a), ArrayData::I32(e)) => compare_int(a, e, &expected.shape),
        (ArrayData::U32(a), ArrayData::U32(e)) => compare_int(a, e, &expected.shape),
        (a, e) => Comparison::mismatch(format!("dtype {} where {} expected", a.dtype(), e.dtype())),
    }
}

fn compare_int<T: PartialEq + Copy + Into<i64>>(a: &[T], e: &[T], shape: &[usize]) -> Comparison {
    let mut c = Comparison::empty(a.len());
    let mut worst: Option<(usize, u64)> = None;
    for (i, (&x, &y)) in a.iter().zip(e).enumerate() {
        let (x, y): (i64, i64) = (x.into(), y.into());
        let d = (x - y).unsigned_abs();
        if d != 0 {
            c.n_bad += 1;
        }
        if worst.is_none_or(|(_, w)| d > w) {
            worst = Some((i, d));
        }
    }
    if let Some((i, d)) = worst {
        let (x, y): (i64, i64) = (a[i].into(), e[i].into());
        c.worst_ulp = Some(d);
        c.worst_ulp_at = unravel(i, shape);
        c.worst_rel = if d == 0 { 0.0 } else if y == 0 { f64::INFINITY } else { d as f64 / y.unsigned_abs() as f64 };
        c.worst_rel_at = c.worst_ulp_at.clone();
        c.max_abs = d as f64;
        c.worst_at = c.worst_ulp_at.clone();
        c.expected_at_worst = Some(y as f64);
        c.actual_at_worst = Some(x as f64);
    }
    c.passed = c.n_bad == 0;
    c
}

fn compare_f32(a: &[f32], e: &[f32], shape: &[usize], tol: Tolerance, scale: Option<f64>) -> Comparison {
    let own = e.iter().filter(|x| x.is_finite()).fold(0f64, |m, &x| m.max(x.abs() as f64));
    let scale = scale.unwrap_or(own).max(f32::MIN_POSITIVE as f64);
    let mut c = Comparison { scale, ..Comparison::empty(a.len()) };
    // (index, ulp) of the worst-ulp element (None = unmeasurable), (index, rel), and the
    // element furthest outside the tolerance as (index, excess ratio).
    let (mut wu, mut wr, mut wb): (Option<(usize, Option<u64>)>, Option<usize>, Option<(usize, f64)>) = (None, None, None);
    for (i, (&x, &y)) in a.iter().zip(e).enumerate() {
        let ulp = ulp_distance(x, y);
        let same = ulp == Some(0) || x == y;
        let finite_pair = x.is_finite() && y.is_finite();
        let (abs, rel) = if same {
            (0.0, 0.0)
        } else if !finite_pair {
            c.nonfinite += 1;
            (f64::INFINITY, f64::INFINITY)
        } else {
            let d = (x as f64 - y as f64).abs();
            (d, if y == 0.0 { f64::INFINITY } else { d / (y as f64).abs() })
        };
        let allowed = tol.rtol * (y as f64).abs() + tol.atol * scale;
        // An infinity is never "a few ulp" from the largest float: ulps count between finite values.
        let ulp_ok = finite_pair && ulp.is_some_and(|u| u <= tol.max_ulp);
        let ok = same || ulp_ok || (finite_pair && abs <= allowed);
        if !ok {
            c.n_bad += 1;
            let excess = if finite_pair && allowed > 0.0 { abs / allowed } else { f64::INFINITY };
            if wb.is_none_or(|(_, w)| excess > w) {
                wb = Some((i, excess));
            }
        }
        // None (unmeasurable) counts as worse than any distance.
        let worse = match (wu, ulp) {
            (None, _) => true,
            (Some((_, None)), _) => false,
            (Some((_, Some(_))), None) => true,
            (Some((_, Some(w))), Some(u)) => u > w,
        };
        if worse {
            wu = Some((i, ulp));
        }
        if wr.is_none() || rel > c.worst_rel {
            c.worst_rel = rel;
            wr = Some(i);
        }
        if abs > c.max_abs {
            c.max_abs = abs;
        }
    }
    c.worst_ulp = wu.map_or(Some(0), |(_, u)| u);
    c.worst_ulp_at = wu.map(|(i, _)| unravel(i, shape)).unwrap_or_default();
    c.worst_rel_at = wr.map(|i| unravel(i, shape)).unwrap_or_default();
    if let Some(i) = wb.map(|(i, _)| i).or(wu.map(|(i, _)| i)) {
        c.worst_at = unravel(i, shape);
        c.expected_at_worst = Some(e[i] as f64);
        c.actual_at_worst = Some(a[i] as f64);
    }
    c.passed = c.n_bad == 0;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(v: &[f32]) -> Array {
        Array::f32(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn ulp_distance_counts_representable_steps_across_zero() {
        assert_eq!(ulp_distance(1.0, 1.0), Some(0));
        assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() + 3)), Some(3));
        // +min_subnormal and -min_subnormal are two steps apart (through +0 == -0).
        assert_eq!(ulp_distance(f32::from_bits(1), -f32::from_bits(1)), Some(2));
        assert_eq!(ulp_distance(f32::NAN, 1.0), None);
        assert_eq!(ulp_distance(f32::NAN, f32::NAN), Some(0));
    }

    #[test]
    fn exact_fails_on_one_ulp_and_reports_where() {
        let e = arr(&[1.0, 2.0, 3.0]);
        let a = arr(&[1.0, f32::from_bits(2.0f32.to_bits() + 1), 3.0]);
        let c = compare(&a, &e, Tolerance::EXACT);
        assert!(!c.passed);
        assert_eq!(c.worst_ulp, Some(1));
        assert_eq!(c.worst_ulp_at, vec![1]);
        assert_eq!(c.n_bad, 1);
        assert_eq!((c.worst_at.clone(), c.expected_at_worst, c.actual_at_worst), (vec![1], Some(2.0), Some(f32::from_bits(2.0f32.to_bits() + 1) as f64)));
        assert!(c.detail().contains("worst at [1]: expected 2e0"), "{}", c.detail());
        assert!(compare(&a, &e, Tolerance::elementwise(1)).passed);
    }

    #[test]
    fn close_uses_the_array_scale_for_cancelled_elements() {
        let e = arr(&[100.0, 1e-9]);
        let a = arr(&[100.0, 2e-9]);
        // rel error 1 at index 1, but |d| = 1e-9 <= 1e-6 * 100.
        let c = compare(&a, &e, Tolerance::close(1e-5, 1e-6));
        assert!(c.passed, "{c:?}");
        assert_eq!(c.worst_rel_at, vec![1]);
        assert!((c.worst_rel - 1.0).abs() < 1e-6);
        assert!(!compare(&a, &e, Tolerance::close(1e-5, 0.0)).passed);
    }

    #[test]
    fn case_gradient_scale_judges_rounding_noise_against_the_other_gradients() {
        // Expected and computed are both noise around an exact zero: hopeless against their
        // own scale, fine against a case whose gradients are of order 0.1.
        let e = arr(&[2e-11, -3e-12]);
        let a = arr(&[-4e-11, 1e-11]);
        let tol = Tolerance::close(1e-5, 1e-6).against_case_gradients();
        assert!(!compare(&a, &e, tol).passed);
        assert!(compare_scaled(&a, &e, tol, Some(0.1)).passed);
        assert!(!compare_scaled(&a, &e, Tolerance::close(1e-5, 1e-6), Some(0.1)).passed);
        // a real gradient of 1e-6 where the case says 0 is still caught (atol 1e-7 here)
        assert!(!compare_scaled(&arr(&[1e-6, 0.0]), &e, tol, Some(0.1)).passed);
        assert_eq!(max_abs(&arr(&[1.0, -3.0, f32::INFINITY])), Some(3.0));
    }

    #[test]
    fn nan_against_number_fails_and_shape_mismatch_is_named() {
        let c = compare(&arr(&[f32::NAN]), &arr(&[0.0]), Tolerance::close(1.0, 1.0));
        assert!(!c.passed);
        assert_eq!((c.worst_ulp, c.nonfinite, c.n_bad), (None, 1, 1));
        assert!(c.detail().contains("1 NaN/inf"), "{}", c.detail());
        // The worst element shown is the one outside the tolerance, not the worst-ulp one that
        // the relative tolerance lets pass.
        // (element 0: millions of ulp, but within atol of the scale 1; element 1: 1 % off.)
        let c = compare(&arr(&[5e-10, 1.01]), &arr(&[1e-10, 1.0]), Tolerance::close(1e-3, 1e-3));
        assert_eq!((c.passed, c.worst_at.clone(), c.worst_ulp_at.clone()), (false, vec![1], vec![0]));
        // Infinities that agree pass; an infinity against a number does not.
        assert!(compare(&arr(&[f32::INFINITY, f32::NAN]), &arr(&[f32::INFINITY, f32::NAN]), Tolerance::EXACT).passed);
        assert!(!compare(&arr(&[f32::INFINITY]), &arr(&[f32::NEG_INFINITY]), Tolerance::close(1.0, 1.0)).passed);
        let c = compare(&arr(&[1.0, 2.0]), &arr(&[1.0]), Tolerance::EXACT);
        assert!(!c.passed);
        assert!(c.mismatch.unwrap().contains("shape [2]"));
    }

    #[test]
    fn integer_arrays_must_be_equal_and_dtypes_must_match() {
        let a = Array::u32(vec![2], vec![1, 5]).unwrap();
        let e = Array::u32(vec![2], vec![1, 7]).unwrap();
        let c = compare(&a, &e, Tolerance::close(1.0, 1.0));
        assert!(!c.passed);
        assert_eq!(c.worst_ulp_at, vec![1]);
        let c = compare(&arr(&[1.0, 5.0]), &e, Tolerance::EXACT);
        assert!(c.mismatch.unwrap().contains("dtype <f4 where <u4"));
    }
}
