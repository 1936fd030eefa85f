//! Backbones: what an interface sees of a network.
//!
//! An interface calls its backbone only through [`Backbone`]: input `x`
//! (channel-last, `[B, ..., C]`), time `t` (`[B]`), and the optional
//! conditioning of [`Cond`]; it gets back the output (shape of `x`) and the
//! per-block features (`[B, T, hidden]`) that REPA aligns.
//!
//! Networks: [`ProbeMlp`] (the tiny golden-case probe) and [`Dit`] (the reference DiT);
//! [`weights`] loads parameters by reference module path from `.npy` files or `.safetensors`.

mod dit;
mod probe;

/// The null class label: what absent labels mean, what condition drop and the guidance pass
/// substitute (hard-coded in the reference, quirk Q10).
pub const NULL_CLASS: i64 = 1000;
pub mod weights;

pub use dit::{sincos_pos_embed_2d, Attention, Dit, DitConfig, LayerNorm, LABEL_DROPOUT_STREAM, LN_EPS};
pub use probe::{ProbeMlp, ProbeMlpConfig};
pub use weights::Weights;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::rng::Rngs;

/// Optional conditioning passed to a backbone.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cond<'a> {
    /// Class labels `[B]` (int64). `None` means the null class (1000 in the reference).
    pub y: Option<&'a Tensor>,
    /// The interval length `dt = t - r` `[B]` (MeanFlow). `None`: not passed.
    pub dt: Option<&'a Tensor>,
    /// A guidance-weight input `[B]` (DiT `take_gw`). `None`: not passed.
    pub gw: Option<&'a Tensor>,
}

impl<'a> Cond<'a> {
    /// Conditioning with labels only.
    pub fn labels(y: Option<&'a Tensor>) -> Self {
        Cond { y, dt: None, gw: None }
    }
}

/// What a backbone returns: its output and the tokens of each block.
#[derive(Debug)]
pub struct NetOutput {
    /// The output, shaped like the input `x`.
    pub out: Tensor,
    /// Per-block features `[B, T, hidden]`, first block first.
    pub features: Vec<Tensor>,
}

/// A network an interface can train and sample: `net(x, t, y, dt, gw) -> (out, features)`.
///
/// Train/eval mode is interior state (a `Cell`), switched by interfaces the way the
/// reference switches it (reference-notes, "Backbone train / eval mode", quirk Q8).
/// A backbone that draws random numbers (the DiT's label dropout) draws from `rngs`;
/// one that needs them and gets `None` must return an error.
pub trait Backbone {
    /// Runs the network.
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, rngs: Option<&mut Rngs>) -> Result<NetOutput>;

    /// Switches between train mode (`true`) and eval mode.
    fn set_train(&self, train: bool);

    /// Whether the network is in train mode.
    fn is_train(&self) -> bool;

    /// The trainable parameters with their reference paths (`W1`, `blocks.0.attn.query.kernel`, ...).
    fn parameters(&self) -> Vec<(String, Tensor)>;
}

/// Errors unless `v` (the argument `name` of a backbone) has the network's float `kind`,
/// lives on its `device` and holds only finite values.
pub(crate) fn check_float_input(name: &str, v: &Tensor, kind: Kind, device: Device) -> Result<()> {
    check_time_input(name, v, kind, device)?;
    if v.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
        return Err(Error::invalid(name, "finite values", "NaN or infinity"));
    }
    Ok(())
}

/// Like [`check_float_input`] for a time-like input (`t`, `dt`), which may be infinite but
/// not NaN: EDM feeds `c_noise = log(t)/4`, which is `-inf` at `t = 0`, and the reference
/// then returns NaN (quirk Q12, a documented result).
pub(crate) fn check_time_input(name: &str, v: &Tensor, kind: Kind, device: Device) -> Result<()> {
    if v.kind() != kind {
        return Err(Error::invalid(name, format!("dtype {kind:?} (that of the network's parameters)"), format!("{:?}", v.kind())));
    }
    if v.device() != device {
        return Err(Error::invalid(name, format!("device {device:?} (that of the network's parameters)"), format!("{:?}", v.device())));
    }
    if v.f_isnan()?.f_any()?.f_int64_value(&[])? != 0 {
        return Err(Error::invalid(name, "no NaN", "NaN"));
    }
    Ok(())
}

/// Errors unless the labels `y` are `[b]` integers on `device` within `0..=max` (quirk Q10:
/// the reference reads a class table out of range and gets NaN; here it is an error).
pub(crate) fn check_labels(y: &Tensor, b: i64, max: i64, device: Device) -> Result<()> {
    if y.size() != [b] {
        return Err(Error::invalid("y", format!("shape [{b}]"), format!("{:?}", y.size())));
    }
    if !matches!(y.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8) {
        return Err(Error::invalid("y", "integer class labels", format!("dtype {:?}", y.kind())));
    }
    if y.device() != device {
        return Err(Error::invalid("y", format!("device {device:?} (that of the network's parameters)"), format!("{:?}", y.device())));
    }
    if b > 0 {
        let lo = y.f_min()?.f_int64_value(&[])?;
        let hi = y.f_max()?.f_int64_value(&[])?;
        if lo < 0 || hi > max {
            return Err(Error::invalid(
                "y",
                format!("class labels in 0..={max} ({max} is the null class; quirk Q10: the reference reads out of range and gets NaN)"),
                format!("labels in [{lo}, {hi}]"),
            ));
        }
    }
    Ok(())
}
