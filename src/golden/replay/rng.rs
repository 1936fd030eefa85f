//! Replay of kind `rng`: stream calls (with `rngs`) or raw key ops (without).
//!
//! Optional case key `threefry_partitionable` (default `true`, jax 0.5.1's default)
//! selects [`PrngMode::Legacy`] when `false`, for raw key ops.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Computed, ReplayOptions, Replayed};
use crate::error::{Error, Result};
use crate::golden::{Array, Case};
use crate::rng::{numel, Key, PrngMode, Rngs};

/// The settings of an `rng` case.
#[derive(Debug, Deserialize)]
pub struct RngCase {
    calls: Vec<Call>,
    #[serde(default)]
    rngs: Option<BTreeMap<String, i64>>,
    #[serde(default = "yes")]
    threefry_partitionable: bool,
}

fn yes() -> bool {
    true
}

/// One call of an `rng` case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    op: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    shape: Option<Vec<i64>>,
    #[serde(default)]
    minval: Option<f32>,
    #[serde(default)]
    maxval: Option<f32>,
    #[serde(default)]
    data: Option<u32>,
    #[serde(default)]
    num: Option<usize>,
}

fn key_array(k: Key) -> Result<Array> {
    Array::u32(vec![2], k.data().to_vec())
}

/// Most elements (or keys) one call of a case may ask for: golden cases draw a few thousand,
/// and a corrupted `shape` or `num` must not become an unbounded allocation.
pub const MAX_CALL_ELEMENTS: usize = 1 << 24;

fn bounded(what: String, n: usize) -> Result<usize> {
    if n > MAX_CALL_ELEMENTS {
        return Err(Error::invalid(what, format!("at most {MAX_CALL_ELEMENTS} elements in one call"), n));
    }
    Ok(n)
}

fn shape_of(call: &Call, i: usize) -> Result<(Vec<usize>, usize)> {
    let shape = call.shape.clone().ok_or_else(|| Error::invalid(format!("calls[{i}].shape"), "a shape", "none"))?;
    let n = numel(&shape).map_err(|e| match e {
        Error::InvalidArgument { expected, got, .. } => Error::InvalidArgument { name: format!("calls[{i}].shape"), expected, got },
        other => other,
    })?;
    let n = bounded(format!("calls[{i}].shape"), n)?;
    Ok((shape.iter().map(|&d| d as usize).collect(), n))
}

fn draw(key: Key, mode: PrngMode, call: &Call, i: usize) -> Result<Array> {
    match call.op.as_str() {
        "uniform" => {
            let (shape, n) = shape_of(call, i)?;
            let (lo, hi) = (call.minval.unwrap_or(0.0), call.maxval.unwrap_or(1.0));
            Array::f32(shape, key.uniform_with(mode, n, lo, hi))
        }
        "normal" => {
            let (shape, n) = shape_of(call, i)?;
            Array::f32(shape, key.normal_with(mode, n))
        }
        "bits" => {
            let (shape, n) = shape_of(call, i)?;
            Array::u32(shape, key.bits_with(mode, n))
        }
        "key" => key_array(key),
        "fold_in" => {
            let d = call.data.ok_or_else(|| Error::invalid(format!("calls[{i}].data"), "a uint32", "none"))?;
            key_array(key.fold_in_with(mode, d))
        }
        "split" => {
            let num = call.num.ok_or_else(|| Error::invalid(format!("calls[{i}].num"), "a count", "none"))?;
            // Also keeps the legacy split inside its uint32 iota (2 num < 2^32), where it would panic.
            let num = bounded(format!("calls[{i}].num"), num)?;
            let keys = key.split_with(mode, num);
            Array::u32(vec![num, 2], keys.iter().flat_map(|k| k.data()).collect())
        }
        other => Err(Error::Unknown {
            what: format!("rng op (calls[{i}])"),
            name: other.into(),
            known: "uniform, normal, bits, key, fold_in, split".into(),
        }),
    }
}

/// Replays the calls in order; call `i`'s result is `out.<i>`.
pub fn run(case: &Case, c: &RngCase, _opts: &ReplayOptions) -> Result<Replayed> {
    let mode = if c.threefry_partitionable { PrngMode::Partitionable } else { PrngMode::Legacy };
    let mut out = Computed::new();
    let mut streams = match &c.rngs {
        Some(m) => {
            let pairs: Vec<(&str, i64)> = m.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            Some(Rngs::new(&pairs)?)
        }
        None => None,
    };
    for (i, call) in c.calls.iter().enumerate() {
        let a = match (&mut streams, &call.stream, call.seed) {
            (Some(r), Some(name), None) => {
                let key = r.stream(name)?;
                if call.op == "key" {
                    key_array(key)?
                } else {
                    draw(key, mode, call, i)?
                }
            }
            (None, None, Some(seed)) => draw(Key::from_seed(seed), mode, call, i)?,
            _ => {
                return Err(case.error(
                    Some("case.json"),
                    format!("calls[{i}]: with `rngs` a call names a `stream`; without, a `seed` (not both)"),
                ))
            }
        };
        out.insert(format!("out.{i}"), a);
    }
    Ok(out.into())
}
