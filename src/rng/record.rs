//! Recording the raw draws a computation consumes, so that an implementation without JAX's
//! threefry can be fed the very numbers the oracle used.
//!
//! Recording is explicit state of an [`Rngs`]: off unless [`Rngs::start_recording`] is
//! called, and handed back by [`Rngs::take_draws`]. Every tensor draw of a stream
//! ([`Rngs::uniform`], [`Rngs::normal`], [`Rngs::bits`]) is then kept *raw*: the uniform on
//! `[0, 1)` before any scaling to `[minval, maxval)`, the standard normal before any
//! `* sigma + mu`, the bits — together with the stream that answered (after the fallback to
//! `default`), the count that was folded in, the operation and the shape. Keys taken with
//! [`Rngs::stream`] directly are not draws and are not recorded.

use super::streams::Rngs;

/// The operation of a recorded draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DrawKind {
    /// `jax.random.uniform(key, shape, minval=, maxval=)`; the values recorded are the
    /// `[0, 1)` draw (equal to the result for the default bounds).
    Uniform {
        /// The lower bound the caller asked for.
        minval: f32,
        /// The upper bound the caller asked for.
        maxval: f32,
    },
    /// `jax.random.normal(key, shape)`: standard normals.
    Normal,
    /// `jax.random.bits(key, shape)`: uint32.
    Bits,
}

/// The values of a recorded draw.
#[derive(Debug, Clone, PartialEq)]
pub enum DrawValues {
    /// Uniform and normal draws.
    F32(Vec<f32>),
    /// Bits.
    U32(Vec<u32>),
}

/// One draw a computation consumed.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    /// The stream that answered (an unknown name falls back to `default`, and is recorded
    /// as `default`).
    pub stream: String,
    /// The count that was folded in: the draw is `op(fold_in(key, counter), shape)`.
    pub counter: u32,
    /// The operation.
    pub kind: DrawKind,
    /// The shape drawn.
    pub shape: Vec<i64>,
    /// The raw values, in C order.
    pub values: DrawValues,
}

impl Rngs {
    /// Starts recording every tensor draw (discarding anything recorded before).
    pub fn start_recording(&mut self) {
        self.recorded = Some(Vec::new());
    }

    /// Whether draws are being recorded.
    pub fn is_recording(&self) -> bool {
        self.recorded.is_some()
    }

    /// The draws recorded so far, in drawing order; recording stops.
    pub fn take_draws(&mut self) -> Vec<Draw> {
        self.recorded.take().unwrap_or_default()
    }

    /// Keeps a draw if recording (`stream` is the index [`Rngs::stream_at`] returned).
    /// `values` is only evaluated when recording.
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub(super) fn record(&mut self, stream: usize, counter: u32, kind: DrawKind, shape: &[i64], values: impl FnOnce() -> DrawValues) {
        if self.recorded.is_none() {
            return;
        }
        let draw = Draw { stream: self.streams[stream].name.clone(), counter, kind, shape: shape.to_vec(), values: values() };
        if let Some(r) = self.recorded.as_mut() {
            r.push(draw);
        }
    }
}
