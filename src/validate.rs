//! Input validation: every check of a tensor argument of the library, at a chosen level.
//!
//! Two kinds of checks:
//! - **structural** (shape, dtype, device, which conditioning a backbone takes): free, done
//!   at every level, each an immediate [`Error::InvalidArgument`] naming the argument;
//! - **value** checks (finite data, times inside an interface's domain, class labels inside
//!   a network's table): they need the tensor's values on the host. A [`Checks`] collects
//!   them, reduces each tensor to its minimum and maximum on its device and reads all of
//!   them back in **one** device-to-host copy ([`Checks::finish`]).
//!
//! [`Validation::Full`] (the default) does both; [`Validation::Cheap`] does only the
//! structural checks and never reads from the device, for training on a GPU where every
//! read is a synchronisation. With `Cheap`, a NaN in the data or a time outside an
//! interface's domain is not refused: it flows into the loss, as in the reference.
//!
//! Every value read of validation goes through one function, which counts it per thread:
//! [`host_reads`] returns the count, so a test can pin how many reads a `loss` or `pred`
//! costs at each level.

use std::cell::Cell;

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::interfaces::Time;
use crate::networks::{Accepts, Cond};

/// How much input validation to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Structural and value checks (one device-to-host read per validation point). The default.
    #[default]
    Full,
    /// Structural checks only (shape, dtype, device, conditioning): no device-to-host read.
    Cheap,
}

thread_local! {
    static HOST_READS: Cell<u64> = const { Cell::new(0) };
}

/// How many device-to-host reads validation has made on this thread so far (a counter for
/// tests and profiling; each read is one copy of a handful of scalars).
pub fn host_reads() -> u64 {
    HOST_READS.with(Cell::get)
}

/// The one place validation reads values back from a device: counts the read and returns the
/// values as `f64` (exact for float32 values and for integers below 2^53).
fn read_back(v: &Tensor) -> Result<Vec<f64>> {
    HOST_READS.with(|c| c.set(c.get() + 1));
    let host = v.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.f_contiguous()?;
    Ok(Vec::<f64>::try_from(&host)?)
}

/// What a value check requires of a tensor's minimum `lo` and maximum `hi`.
#[derive(Debug)]
enum Rule {
    /// Every element finite.
    Finite,
    /// No NaN (infinities allowed).
    NoNan,
    /// Finite, and within `(lo, hi]` (`[lo, hi]` when `closed_lo`), up to float32 rounding.
    Range { lo: f64, hi: f64, closed_lo: bool, why: String },
    /// Integer class labels within `0..=max`.
    Labels { max: i64 },
    /// Every element finite, with a custom refusal.
    FiniteOr { what: String, why: String },
}

#[derive(Debug)]
struct Pending {
    name: String,
    rule: Rule,
}

/// A batch of value checks, read back in one device-to-host copy.
///
/// At [`Validation::Cheap`] every `push` is a no-op and [`Checks::finish`] reads nothing.
#[derive(Debug)]
pub struct Checks {
    level: Validation,
    pending: Vec<Pending>,
    stats: Vec<Tensor>,
}

impl Checks {
    /// An empty batch at `level`.
    pub fn new(level: Validation) -> Checks {
        Checks { level, pending: Vec::new(), stats: Vec::new() }
    }

    /// The level.
    pub fn level(&self) -> Validation {
        self.level
    }

    fn push(&mut self, name: &str, v: &Tensor, rule: Rule) -> Result<()> {
        if self.level == Validation::Cheap || v.numel() == 0 {
            return Ok(());
        }
        if !v.is_floating_point() && matches!(rule, Rule::Finite | Rule::NoNan | Rule::FiniteOr { .. }) {
            return Ok(()); // integers and booleans are finite
        }
        // aminmax propagates NaN, so the two values show NaN and infinities. Values only: a
        // tensor with a graph or a forward-mode tangent is reduced without either.
        let v = v.f_detach()?;
        let v = match v.kind() {
            Kind::Float | Kind::Double => v,
            Kind::Bool => v.f_to_kind(Kind::Int64)?,
            _ if v.is_floating_point() => v.f_to_kind(Kind::Float)?, // half types
            _ => v,
        };
        let (lo, hi) = v.f_aminmax(None, false)?;
        self.stats.push(Tensor::f_stack(&[lo.f_to_kind(Kind::Double)?, hi.f_to_kind(Kind::Double)?], 0)?);
        self.pending.push(Pending { name: name.to_string(), rule });
        Ok(())
    }

    /// Requires every element of `v` to be finite.
    pub fn finite(&mut self, name: &str, v: &Tensor) -> Result<()> {
        self.push(name, v, Rule::Finite)
    }

    /// Requires every element of `v` to be finite, refusing with [`Error::Unsupported`]
    /// `{ what, why }` otherwise (a computed quantity, such as a loss, rather than an argument).
    pub fn finite_or(&mut self, v: &Tensor, what: &str, why: &str) -> Result<()> {
        self.push(what, v, Rule::FiniteOr { what: what.to_string(), why: why.to_string() })
    }

    /// Requires `v` to hold no NaN (infinities are allowed).
    pub fn no_nan(&mut self, name: &str, v: &Tensor) -> Result<()> {
        self.push(name, v, Rule::NoNan)
    }

    /// Requires finite values in `(lo, hi]`, or `[lo, hi]` with `closed_lo`, up to float32
    /// rounding at a finite bound (4 ulp of the bound: a shifted sampler grid can land one ulp
    /// above 1, which the reference accepts); `why` is named in the refusal.
    pub fn range(&mut self, name: &str, v: &Tensor, lo: f64, hi: f64, closed_lo: bool, why: &str) -> Result<()> {
        self.push(name, v, Rule::Range { lo, hi, closed_lo, why: why.to_string() })
    }

    /// Requires integer labels within `0..=max` (quirk Q10: the reference reads a class table
    /// out of range and gets NaN; here that is an error).
    pub fn labels(&mut self, name: &str, y: &Tensor, max: i64) -> Result<()> {
        self.push(name, y, Rule::Labels { max })
    }

    /// Reads every pending check's minimum and maximum back in one copy and evaluates the
    /// checks in the order they were added; the first that fails is the error.
    pub fn finish(self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let values = read_back(&Tensor::f_cat(&self.stats, 0)?)?;
        for (p, mm) in self.pending.iter().zip(values.chunks(2)) {
            evaluate(&p.name, &p.rule, mm[0], mm[1])?;
        }
        Ok(())
    }
}

/// A bound is checked up to float32 rounding (4 ulp of the bound).
fn slack(b: f64) -> f64 {
    if b.is_finite() {
        4.0 * f32::EPSILON as f64 * b.abs().max(1.0)
    } else {
        0.0
    }
}

fn evaluate(name: &str, rule: &Rule, lo: f64, hi: f64) -> Result<()> {
    let finite = lo.is_finite() && hi.is_finite();
    match rule {
        Rule::Finite if !finite => Err(Error::invalid(name, "finite values", "NaN or infinity")),
        Rule::FiniteOr { what, why } if !finite => Err(Error::Unsupported { what: what.clone(), why: why.clone() }),
        Rule::NoNan if lo.is_nan() || hi.is_nan() => Err(Error::invalid(name, "no NaN", "NaN")),
        Rule::Range { lo: a, hi: b, closed_lo, why } => {
            if !finite {
                return Err(Error::invalid(name, "finite values", "NaN or infinity"));
            }
            let lo_ok = if *closed_lo { lo >= a - slack(*a) } else { lo > *a };
            if !(lo_ok && hi <= b + slack(*b)) {
                let range = format!("{}{a}, {b}] ({why})", if *closed_lo { "[" } else { "(" });
                return Err(Error::invalid(name, format!("values in {range}"), format!("values in [{lo}, {hi}]")));
            }
            Ok(())
        }
        Rule::Labels { max } if lo < 0.0 || hi > *max as f64 => Err(Error::invalid(
            name,
            format!("class labels in 0..={max} ({max} is the null class; quirk Q10: the reference reads out of range and gets NaN)"),
            format!("labels in [{lo}, {hi}]"),
        )),
        _ => Ok(()),
    }
}

// ------------------------------------------------------------------------------------------
// Structural checks (no reads, every level)
// ------------------------------------------------------------------------------------------

/// Errors unless `batch >= 1`.
pub fn batch(batch: i64) -> Result<()> {
    if batch < 1 {
        return Err(Error::invalid("batch", "at least 1 example", batch));
    }
    Ok(())
}

/// The length `B` of a `[B]` vector argument (an error, not a panic, for any other shape).
pub fn vector(name: &str, v: &Tensor) -> Result<i64> {
    match v.size()[..] {
        [b] => Ok(b),
        ref s => Err(Error::invalid(name, "a [B] vector", format!("shape {s:?}"))),
    }
}

/// Errors unless `v` has shape `[b]`.
pub fn length(name: &str, v: &Tensor, b: i64) -> Result<()> {
    if v.size() != [b] {
        return Err(Error::invalid(name, format!("shape [{b}]"), format!("{:?}", v.size())));
    }
    Ok(())
}

/// Errors unless `v` is a floating-point tensor.
pub fn float(name: &str, v: &Tensor) -> Result<()> {
    if !v.is_floating_point() {
        return Err(Error::invalid(name, "a float tensor", format!("dtype {:?}", v.kind())));
    }
    Ok(())
}

/// Errors unless `v` lives on `device`; `whose` says where that device comes from.
pub fn on_device(name: &str, v: &Tensor, device: Device, whose: &str) -> Result<()> {
    if v.device() != device {
        return Err(Error::invalid(name, format!("device {device:?} ({whose})"), format!("{:?}", v.device())));
    }
    Ok(())
}

/// Errors unless `y` holds integer class labels `[b]` on `device`.
pub fn label_shape(y: &Tensor, b: i64, device: Device, whose: &str) -> Result<()> {
    length("y", y, b)?;
    if !matches!(y.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8) {
        return Err(Error::invalid("y", "integer class labels", format!("dtype {:?}", y.kind())));
    }
    on_device("y", y, device, whose)
}

/// Errors unless every conditioning input of `cond` is one the backbone takes (`accepts`),
/// naming the first that is not; extra inputs are named `extra.<name>`.
pub fn conditioning(accepts: &Accepts<'_>, cond: &Cond<'_>) -> Result<()> {
    for (name, given, taken, what) in [
        ("y", cond.y.is_some(), accepts.labels, "class labels"),
        ("dt", cond.dt.is_some(), accepts.dt, "interval length dt"),
        ("gw", cond.gw.is_some(), accepts.gw, "guidance weight gw"),
    ] {
        if given && !taken {
            return Err(Error::invalid(name, format!("none (this backbone takes no {what}; a backbone declares what it takes in `Backbone::accepts`)"), "a tensor"));
        }
    }
    for (i, (name, _)) in cond.extra.iter().enumerate() {
        if !accepts.extra.contains(name) {
            let known = if accepts.extra.is_empty() { "none".to_string() } else { accepts.extra.join(", ") };
            return Err(Error::invalid(format!("extra.{name}"), format!("an extra input this backbone takes (it takes: {known})"), format!("`{name}`")));
        }
        if cond.extra[..i].iter().any(|(n, _)| n == name) {
            return Err(Error::invalid(format!("extra.{name}"), "each extra input once", "a duplicate"));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The checks of the interfaces and networks
// ------------------------------------------------------------------------------------------

/// Data `x` (`[B, ...]` with at least 2 axes, float32, finite) and optional labels `y` (`[B]`,
/// integer, on the device of `x`); returns `B`. The finiteness of `x` is a value check.
pub fn data(checks: &mut Checks, x: &Tensor, y: Option<&Tensor>) -> Result<i64> {
    let s = x.size();
    if s.len() < 2 {
        return Err(Error::invalid("x", "shape [B, ...] with at least 2 axes", format!("{s:?}")));
    }
    let b = s[0];
    batch(b)?;
    if x.kind() != Kind::Float {
        return Err(Error::invalid("x", "dtype float32", format!("{:?}", x.kind())));
    }
    if let Some(y) = y {
        if y.size() != [b] {
            return Err(Error::invalid("y", format!("shape [{b}]"), format!("{:?}", y.size())));
        }
        if !matches!(y.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8) {
            return Err(Error::invalid("y", "integer class labels", format!("{:?}", y.kind())));
        }
        on_device("y", y, x.device(), "that of x")?;
    }
    checks.finite("x", x)?;
    Ok(b)
}

/// A time-like argument `name` (`t`, MeanFlow's `r`) for data of batch `b` like `x`: a
/// [`Time::Scalar`] is checked on the host (free) and returned as a `[b]` tensor of the dtype
/// and device of `x`; a [`Time::Batch`] must be a `[b]` float vector on the device of `x`,
/// and its range is a value check. The domain is `(lo, hi]` (`[lo, hi]` with `closed_lo`).
#[allow(clippy::too_many_arguments)]
pub fn time(checks: &mut Checks, name: &str, t: Time<'_>, b: i64, x: &Tensor, lo: f64, hi: f64, closed_lo: bool, why: &str) -> Result<Tensor> {
    match t {
        Time::Scalar(v) => {
            let kind = if x.is_floating_point() { x.kind() } else { Kind::Float };
            // The value the network sees: rounded to the dtype of x.
            let seen = if kind == Kind::Double { v } else { v as f32 as f64 };
            evaluate(name, &Rule::Range { lo, hi, closed_lo, why: why.to_string() }, seen, seen)?;
            Ok(Tensor::f_full([b], seen, (kind, x.device()))?)
        }
        Time::Batch(t) => {
            length(name, t, b)?;
            float(name, t)?;
            on_device(name, t, x.device(), "that of x")?;
            checks.range(name, t, lo, hi, closed_lo, why)?;
            Ok(t.shallow_clone())
        }
    }
}

/// A float input of a network (`x`): the network's dtype `kind` and `device`, finite values.
pub fn network_input(checks: &mut Checks, name: &str, v: &Tensor, kind: Kind, device: Device) -> Result<()> {
    network_dtype(name, v, kind, device)?;
    checks.finite(name, v)
}

/// A time-like input of a network (`t`, `dt`, `gw`): the network's dtype and device, no NaN
/// (an infinity is allowed: EDM feeds `c_noise = log(t)/4`, which is `-inf` at `t = 0`, and
/// the reference then returns NaN: quirk Q12, a documented result).
pub fn network_time(checks: &mut Checks, name: &str, v: &Tensor, kind: Kind, device: Device) -> Result<()> {
    network_dtype(name, v, kind, device)?;
    checks.no_nan(name, v)
}

fn network_dtype(name: &str, v: &Tensor, kind: Kind, device: Device) -> Result<()> {
    if v.kind() != kind {
        return Err(Error::invalid(name, format!("dtype {kind:?} (that of the network's parameters)"), format!("{:?}", v.kind())));
    }
    on_device(name, v, device, "that of the network's parameters")
}

/// Class labels of a network: `[b]` integers on `device` within `0..=max` (a value check).
pub fn network_labels(checks: &mut Checks, y: &Tensor, b: i64, max: i64, device: Device) -> Result<()> {
    label_shape(y, b, device, "that of the network's parameters")?;
    checks.labels("y", y, max)
}

// ------------------------------------------------------------------------------------------
// Single checks at the full level (the validators of `interfaces`, for a new interface)
// ------------------------------------------------------------------------------------------

/// [`data`] at [`Validation::Full`]: one read.
pub fn check_data(x: &Tensor, y: Option<&Tensor>) -> Result<i64> {
    let mut c = Checks::new(Validation::Full);
    let b = data(&mut c, x, y)?;
    c.finish()?;
    Ok(b)
}

/// Errors unless every element of `v` is finite (one read; integers are finite).
pub fn check_finite(name: &str, v: &Tensor) -> Result<()> {
    let mut c = Checks::new(Validation::Full);
    c.finite(name, v)?;
    c.finish()
}

/// Errors unless `t` is a `[b]` float vector of finite values in `(lo, hi]` (or `[lo, hi]`
/// with `closed_lo`), naming `why` in the message (one read).
pub fn check_time(t: &Tensor, b: i64, lo: f64, hi: f64, closed_lo: bool, why: &str) -> Result<()> {
    check_times("t", t, b, lo, hi, closed_lo, why)
}

/// [`check_time`] for a time-like argument of another name (MeanFlow's `r`, a sampler's grid).
pub fn check_times(name: &str, t: &Tensor, b: i64, lo: f64, hi: f64, closed_lo: bool, why: &str) -> Result<()> {
    length(name, t, b)?;
    float(name, t)?;
    let mut c = Checks::new(Validation::Full);
    c.range(name, t, lo, hi, closed_lo, why)?;
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_finite_finds_nan_and_infinities_of_any_kind() {
        let x = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        assert!(check_finite("x", &x).is_ok());
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let _ = x.get(1).get(2).fill_(bad);
            assert!(check_finite("x", &x).unwrap_err().to_string().contains("NaN or infinity"));
            assert!(check_finite("x", &x.to_kind(Kind::Double)).is_err());
        }
        let _ = x.get(1).get(2).fill_(3e38);
        assert!(check_finite("x", &x).is_ok());
        assert!(check_finite("x", &Tensor::zeros([0], (Kind::Float, Device::Cpu))).is_ok());
        assert!(check_finite("x", &Tensor::ones([2], (Kind::Int64, Device::Cpu))).is_ok());
        assert!(check_finite("x", &Tensor::from_slice(&[1.0f32, f32::NAN]).to_kind(Kind::Half)).is_err());
    }

    #[test]
    fn check_time_reads_the_range() {
        let t = Tensor::from_slice(&[0.0f32, 0.5, 1.0]);
        assert!(check_time(&t, 3, 0.0, 1.0, true, "").is_ok());
        assert!(check_time(&t, 3, 0.0, 1.0, false, "").unwrap_err().to_string().contains("values in [0, 1]"));
        assert!(check_time(&Tensor::from_slice(&[0.5f32, f32::NAN]), 2, 0.0, 1.0, true, "").is_err());
        assert!(check_time(&Tensor::from_slice(&[0.5f32, 1.5]), 2, 0.0, 1.0, true, "why").unwrap_err().to_string().contains("why"));
        assert!(check_time(&Tensor::from_slice(&[0i64, 1]), 2, 0.0, 1.0, true, "").unwrap_err().to_string().contains("a float tensor"));
        assert!(check_time(&t, 2, 0.0, 1.0, true, "").is_err());
    }

    #[test]
    fn a_batch_of_checks_is_one_read_and_cheap_is_none() {
        let x = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0.1f32, 0.2, 0.3]);
        let y = Tensor::from_slice(&[1i64, 2, 1000]);
        for (level, reads) in [(Validation::Full, 1), (Validation::Cheap, 0)] {
            let before = host_reads();
            let mut c = Checks::new(level);
            c.finite("x", &x).unwrap();
            c.range("t", &t, 0.0, 1.0, true, "").unwrap();
            c.labels("y", &y, 1000).unwrap();
            c.finish().unwrap();
            assert_eq!(host_reads() - before, reads, "{level:?}");
        }
        // The first failing check, in order, is the error.
        let mut c = Checks::new(Validation::Full);
        c.finite("x", &x).unwrap();
        c.labels("y", &Tensor::from_slice(&[1i64, 1001, 3]), 1000).unwrap();
        c.range("t", &Tensor::from_slice(&[2.0f32]), 0.0, 1.0, true, "").unwrap();
        let e = c.finish().unwrap_err().to_string();
        assert!(e.contains("`y`") && e.contains("[1, 1001]"), "{e}");
        // A scalar time is checked on the host, without a read.
        let before = host_reads();
        let mut c = Checks::new(Validation::Full);
        assert!(time(&mut c, "t", Time::Scalar(1.5), 3, &x, 0.0, 1.0, true, "why").unwrap_err().to_string().contains("why"));
        let tt = time(&mut c, "t", Time::Scalar(0.25), 3, &x, 0.0, 1.0, true, "").unwrap();
        assert_eq!(Vec::<f32>::try_from(&tt).unwrap(), vec![0.25; 3]);
        c.finish().unwrap();
        assert_eq!(host_reads(), before);
    }
}
