//! JAX-compatible random streams, bit for bit (jax 0.5.1, threefry2x32).
//!
//! Layers, bottom up:
//! - [`threefry2x32`]: the pure Threefry-2x32 block function (20 rounds; Salmon et al.,
//!   "Parallel random numbers: as easy as 1, 2, 3", SC 2011);
//! - [`Key`]: JAX's typed-key API (`key`, `fold_in`, `split`, `bits`, `uniform`, `normal`)
//!   in the default partitionable mode, with the legacy mode behind [`PrngMode::Legacy`];
//! - the float32 maps of `dist` (uniform via the mantissa, `normal = sqrt(2) erfinv(u)`
//!   with XLA's float32 `erfinv`, `log1p` and `log`);
//! - [`Rngs`]: named streams with `flax.nnx.Rngs` semantics (each call is
//!   `fold_in(key, counter)`, then the counter moves on), the explicit object every
//!   interface and sampler draws from;
//! - bulk draws on the host (`host`): every element is a pure function of its index, so a
//!   draw is cut into chunks computed on any [`HostPath`] (AVX2 + FMA lanes of `avx2`,
//!   scalar with FMA, portable; detected at run time) and any number of threads with the
//!   same bits;
//! - tensor draws on [`Rngs`] and [`Key`] (this file): values are computed on the host
//!   and copied to the requested device, so CPU and CUDA see the same numbers; or, opt-in
//!   ([`TensorDraws::OnDevice`]), by tensor ops on the device itself (`device`), with the
//!   same bits.
//!
//! # Threads and instruction sets
//!
//! A draw of fewer than `2 * MIN_PER_THREAD` (131 072) elements runs on the calling
//! thread. A larger one uses at most [`draw_threads`] threads — by default
//! [`DrawThreads::FollowTorch`], `min(available_parallelism, tch::get_num_threads())`: the
//! draw runs between libtorch ops while libtorch's own pool waits, so it takes no core
//! the caller has not given libtorch already, and `tch::set_num_threads(1)` makes it
//! single-threaded too. A program with threads of its own (several training loops, a data
//! loader drawing noise) sets the budget explicitly with [`set_draw_threads`]
//! (`DrawThreads::ONE`: never a second thread), or per draw with [`DrawOptions`] and the
//! `Key::fill_*` draws. [`set_host_path`] / [`DrawOptions::path`] force an instruction set
//! (tests and benchmarks do). Both settings are process-wide values read at each draw,
//! like libtorch's thread count; neither changes a value, only the time it takes.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(feature = "torch")]
mod device;
mod dist;
mod host;
mod key;
mod record;
mod streams;
mod threefry;

#[cfg(feature = "torch")]
pub use device::{set_tensor_draws, tensor_draws, TensorDraws};
pub use dist::*;
pub use host::{draw_threads, host_path, set_draw_threads, set_host_path, DrawOptions, DrawThreads, HostPath, MIN_PER_THREAD};
pub use key::{Key, PrngMode};
pub use record::{Draw, DrawKind, DrawValues};
pub use streams::{RngError, Rngs};
pub use threefry::threefry2x32;

#[cfg(feature = "torch")]
use tch::{Device, Tensor};

use crate::error::{Error, Result};

/// Validates a shape and returns its element count.
pub fn numel(shape: &[i64]) -> Result<usize> {
    let mut n: usize = 1;
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| Error::invalid("shape", "non-negative dimensions", format!("{shape:?}")))?;
        n = n.checked_mul(d).ok_or_else(|| Error::invalid("shape", "a size that fits in memory", format!("{shape:?}")))?;
    }
    // The draws are host vectors of up to 8-byte elements: a count past isize::MAX bytes
    // would make `Vec` panic with "capacity overflow" instead of returning this error.
    if n.checked_mul(8).is_none_or(|bytes| bytes > isize::MAX as usize) {
        return Err(Error::invalid("shape", "a size that fits in memory", format!("{shape:?}")));
    }
    Ok(n)
}

#[cfg(feature = "torch")]
fn to_tensor_f32(v: &[f32], shape: &[i64], device: Device) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(v)?.f_reshape(shape)?.f_to_device(device)?)
}

/// Whether a tensor draw for `device` runs on the device itself ([`TensorDraws::OnDevice`]
/// and a non-CPU device).
#[cfg(feature = "torch")]
fn on_device(device: Device) -> bool {
    device != Device::Cpu && tensor_draws() == TensorDraws::OnDevice
}

#[cfg(feature = "torch")]
impl Key {
    /// `jax.random.uniform(key, shape, float32, minval, maxval)` as a tensor on `device`.
    /// Computed on the host and copied, or on the device with [`TensorDraws::OnDevice`]
    /// (same values).
    pub fn uniform_tensor(&self, shape: &[i64], minval: f32, maxval: f32, device: Device) -> Result<Tensor> {
        check_interval(minval, maxval)?;
        let n = numel(shape)?;
        if on_device(device) {
            return Ok(device::uniform(self.data(), n, minval, maxval, device)?.f_reshape(shape)?);
        }
        to_tensor_f32(&self.uniform(n, minval, maxval), shape, device)
    }

    /// `jax.random.normal(key, shape, float32)` as a tensor on `device`. Computed on the host
    /// and copied, or on the device with [`TensorDraws::OnDevice`] (same values).
    pub fn normal_tensor(&self, shape: &[i64], device: Device) -> Result<Tensor> {
        let n = numel(shape)?;
        if on_device(device) {
            return Ok(device::normal(self.data(), n, device)?.f_reshape(shape)?);
        }
        to_tensor_f32(&self.normal(n), shape, device)
    }

    /// `jax.random.bits(key, shape, uint32)` as an int64 tensor on `device` (libtorch's uint32
    /// support is partial, so the values are widened). Computed on the host and copied, or on
    /// the device with [`TensorDraws::OnDevice`] (same values).
    pub fn bits_tensor(&self, shape: &[i64], device: Device) -> Result<Tensor> {
        let n = numel(shape)?;
        if on_device(device) {
            return Ok(device::bits(self.data(), n, device)?.f_reshape(shape)?);
        }
        let v: Vec<i64> = self.bits(n).into_iter().map(i64::from).collect();
        Ok(Tensor::f_from_slice(&v)?.f_reshape(shape)?.f_to_device(device)?)
    }

    /// [`Key::normal_tensor`] computed by tensor ops on `device` whatever
    /// [`tensor_draws`] says (on the CPU device too): the device path of
    /// [`TensorDraws::OnDevice`], for tests and measurements.
    pub fn normal_tensor_on_device(&self, shape: &[i64], device: Device) -> Result<Tensor> {
        Ok(device::normal(self.data(), numel(shape)?, device)?.f_reshape(shape)?)
    }

    /// [`Key::uniform_tensor`] computed by tensor ops on `device` (see
    /// [`Key::normal_tensor_on_device`]).
    pub fn uniform_tensor_on_device(&self, shape: &[i64], minval: f32, maxval: f32, device: Device) -> Result<Tensor> {
        check_interval(minval, maxval)?;
        Ok(device::uniform(self.data(), numel(shape)?, minval, maxval, device)?.f_reshape(shape)?)
    }

    /// [`Key::bits_tensor`] computed by tensor ops on `device` (see
    /// [`Key::normal_tensor_on_device`]).
    pub fn bits_tensor_on_device(&self, shape: &[i64], device: Device) -> Result<Tensor> {
        Ok(device::bits(self.data(), numel(shape)?, device)?.f_reshape(shape)?)
    }
}

#[cfg_attr(not(feature = "torch"), allow(dead_code))]
fn check_interval(minval: f32, maxval: f32) -> Result<()> {
    if !(minval.is_finite() && maxval.is_finite() && minval < maxval) {
        return Err(Error::invalid("minval, maxval", "finite bounds with minval < maxval", format!("[{minval}, {maxval})")));
    }
    Ok(())
}

/// Tensor draws from named streams. While recording ([`Rngs::start_recording`]) the values are
/// made on the host (they are kept raw) and copied; otherwise a draw takes the path that
/// [`Key::uniform_tensor`] and its siblings choose (the same values either way).
#[cfg(feature = "torch")]
impl Rngs {
    /// Draws `U[minval, maxval)` of `shape` from stream `stream` (one count of that stream).
    pub fn uniform(&mut self, stream: &str, shape: &[i64], minval: f32, maxval: f32, device: Device) -> Result<Tensor> {
        check_interval(minval, maxval)?;
        let n = numel(shape)?;
        let (key, i, count) = self.stream_at(stream)?;
        if !self.is_recording() {
            return key.uniform_tensor(shape, minval, maxval, device);
        }
        let v = key.uniform(n, minval, maxval);
        let raw = || DrawValues::F32(if (minval, maxval) == (0.0, 1.0) { v.clone() } else { key.uniform(n, 0.0, 1.0) });
        self.record(i, count, DrawKind::Uniform { minval, maxval }, shape, raw);
        to_tensor_f32(&v, shape, device)
    }

    /// Draws standard normals of `shape` from stream `stream` (one count of that stream).
    pub fn normal(&mut self, stream: &str, shape: &[i64], device: Device) -> Result<Tensor> {
        let n = numel(shape)?;
        let (key, i, count) = self.stream_at(stream)?;
        if !self.is_recording() {
            return key.normal_tensor(shape, device);
        }
        let v = key.normal(n);
        self.record(i, count, DrawKind::Normal, shape, || DrawValues::F32(v.clone()));
        to_tensor_f32(&v, shape, device)
    }

    /// Draws uint32 bits of `shape` (as int64) from stream `stream` (one count of that stream).
    pub fn bits(&mut self, stream: &str, shape: &[i64], device: Device) -> Result<Tensor> {
        let n = numel(shape)?;
        let (key, i, count) = self.stream_at(stream)?;
        if !self.is_recording() {
            return key.bits_tensor(shape, device);
        }
        let bits = key.bits(n);
        let t = Tensor::f_from_slice(&bits.iter().map(|&b| i64::from(b)).collect::<Vec<i64>>())?.f_reshape(shape)?.f_to_device(device)?;
        self.record(i, count, DrawKind::Bits, shape, || DrawValues::U32(bits));
        Ok(t)
    }
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use super::*;

    #[test]
    fn recording_keeps_raw_draws_with_their_stream_and_counter() {
        let mut r = Rngs::new(&[("default", 9), ("time", 0)]).unwrap();
        let _ = r.normal("time", &[2], Device::Cpu).unwrap();
        r.start_recording();
        let u = r.uniform("time", &[3], 0.0, 1.0, Device::Cpu).unwrap();
        let s = r.uniform("noise", &[2, 2], -2.0, 2.0, Device::Cpu).unwrap();
        let b = r.bits("time", &[1], Device::Cpu).unwrap();
        let fork = r.fork();
        assert!(!fork.is_recording(), "a fork does not record");
        let d = r.take_draws();
        assert!(!r.is_recording());
        assert_eq!(d.len(), 3);
        assert_eq!((d[0].stream.as_str(), d[0].counter, d[0].shape.clone()), ("time", 1, vec![3]));
        assert_eq!(d[0].values, DrawValues::F32(Vec::<f32>::try_from(&u).unwrap()));
        // `noise` falls back to `default`; the raw [0, 1) draw is kept, not the scaled one.
        assert_eq!((d[1].stream.as_str(), d[1].counter), ("default", 0));
        assert_eq!(d[1].kind, DrawKind::Uniform { minval: -2.0, maxval: 2.0 });
        let raw = Key::from_seed(9).fold_in(0).uniform(4, 0.0, 1.0);
        assert_eq!(d[1].values, DrawValues::F32(raw.clone()));
        let scaled: Vec<f32> = Vec::<f32>::try_from(&s.reshape([-1])).unwrap();
        assert_ne!(scaled, raw);
        assert_eq!(d[2].values, DrawValues::U32(vec![Vec::<i64>::try_from(&b).unwrap()[0] as u32]));
        assert_eq!(d[2].counter, 2);
        // Not recording: nothing kept.
        let _ = r.normal("time", &[1], Device::Cpu).unwrap();
        assert!(r.take_draws().is_empty());
    }
}
