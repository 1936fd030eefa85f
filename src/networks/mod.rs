//! Backbones: what an interface sees of a network.
//!
//! An interface calls its backbone only through [`Backbone`]: input `x`
//! (channel-last, `[B, ..., C]`), time `t` (`[B]`), the optional conditioning of [`Cond`]
//! (labels, MeanFlow's `dt`, a guidance weight, and named extra inputs), and the [`Pass`]:
//! train or eval mode and the random streams, chosen by the caller for each forward (as
//! candle's `ModuleT::forward_t` takes `train`; no backbone keeps a mode of its own). It gets
//! back the output (shape of `x`) and the per-block features (`[B, T, hidden]`) that REPA
//! aligns. Each backbone declares the conditioning it takes ([`Backbone::accepts`]); giving
//! it anything else is an error naming the input ([`Backbone::call`]).
//!
//! A backbone may also have a JVP of its own ([`FusedJvp`], offered through
//! [`Backbone::fused_jvp`]): one pass returning the output with its graph and its derivative
//! along tangents on `x`, `t` and `dt`, from the tangent rules of [`tangent`]; MeanFlow, sCT
//! and sCD use it by default ([`crate::jvp::JvpBackend`]).
//!
//! Networks: [`ProbeMlp`] (the tiny golden-case probe), [`Dit`] (the reference DiT) and
//! [`LightningDit`] (the reference's LightningDiT: RMSNorm, SwiGLU, 2-D RoPE, qk-norm, adaLN
//! with or without shift), the two sharing their embedders, patching and modulation
//! (`common.rs`); [`VarStoreBackbone`] makes any `tch::nn` network a backbone; [`weights`]
//! loads parameters by reference module path from `.npy` files or `.safetensors`.

mod common;
mod dit;
mod lightning_dit;
mod probe;
pub mod tangent;
mod varstore;

/// The null class label: what absent labels mean, what condition drop and the guidance pass
/// substitute (hard-coded in the reference, quirk Q10).
pub const NULL_CLASS: i64 = 1000;
pub mod weights;

pub use common::{sincos_pos_embed_2d, Attention, LayerNorm, LABEL_DROPOUT_STREAM, LN_EPS};
pub use dit::{Dit, DitConfig};
pub use lightning_dit::{rope_tables, AbsentDtGw, LightningDit, LightningDitConfig, NormLayer, RmsQkNorm};
pub use probe::{ProbeMlp, ProbeMlpConfig};
pub use varstore::VarStoreBackbone;
pub use weights::Weights;

use tch::Tensor;

use crate::error::Result;
use crate::jvp::NetTangents;
use crate::rng::Rngs;
use crate::validate::{self, Validation};

/// Optional conditioning passed to a backbone: the reference's `*args, **kwargs` of
/// `net(x, t, ...)`.
///
/// `extra` carries named tensors for a user's network (the reference's own tests pass
/// `x, n` through `*args`): the interfaces pass them through to every forward unchanged;
/// a backbone reads them with [`Cond::extra`] and declares their names in
/// [`Accepts::extra`]. The built-in backbones take none.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cond<'a> {
    /// Class labels `[B]` (int64). `None` means the null class (1000 in the reference).
    pub y: Option<&'a Tensor>,
    /// The interval length `dt = t - r` `[B]` (MeanFlow). `None`: not passed.
    pub dt: Option<&'a Tensor>,
    /// A guidance-weight input `[B]` (DiT `take_gw`). `None`: not passed.
    pub gw: Option<&'a Tensor>,
    /// Named extra inputs, each at most once.
    pub extra: &'a [(&'a str, &'a Tensor)],
}

impl<'a> Cond<'a> {
    /// Conditioning with labels only.
    pub fn labels(y: Option<&'a Tensor>) -> Self {
        Cond { y, ..Cond::default() }
    }

    /// No conditioning (the null class, no `dt`, no `gw`, no extra inputs).
    pub fn none() -> Self {
        Cond::default()
    }

    /// This conditioning with the labels replaced.
    pub fn with_labels(self, y: Option<&'a Tensor>) -> Self {
        Cond { y, ..self }
    }

    /// This conditioning with `dt` replaced.
    pub fn with_dt(self, dt: Option<&'a Tensor>) -> Self {
        Cond { dt, ..self }
    }

    /// This conditioning with the extra inputs replaced.
    pub fn with_extra(self, extra: &'a [(&'a str, &'a Tensor)]) -> Self {
        Cond { extra, ..self }
    }

    /// The extra input `name`, if given.
    pub fn extra(&self, name: &str) -> Option<&'a Tensor> {
        self.extra.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

/// The conditioning a backbone takes (see [`Backbone::accepts`]); anything else given to it
/// is refused by [`Backbone::call`], naming the input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accepts<'a> {
    /// Class labels `y`.
    pub labels: bool,
    /// An interval length `dt`.
    pub dt: bool,
    /// A guidance weight `gw`.
    pub gw: bool,
    /// The names of the extra inputs it reads.
    pub extra: &'a [&'a str],
}

impl Accepts<'static> {
    /// Nothing but `x` and `t` (an unconditional network).
    pub const NOTHING: Accepts<'static> = Accepts { labels: false, dt: false, gw: false, extra: &[] };
    /// Class labels.
    pub const LABELS: Accepts<'static> = Accepts { labels: true, dt: false, gw: false, extra: &[] };
}

/// One forward pass's mode and random streams, chosen by the caller.
///
/// `train` is the network's train / eval mode for this call (the DiT draws label dropout
/// only in train mode); `rngs` are the streams a network that draws random numbers draws
/// from (one that needs them and gets `None` returns an error); `validation` is how much
/// of its input the network checks (see [`crate::validate`]).
#[derive(Debug)]
pub struct Pass<'a> {
    /// Train mode (`true`) or eval mode.
    pub train: bool,
    /// The random streams of this call.
    pub rngs: Option<&'a mut Rngs>,
    /// How much input validation the network does.
    pub validation: Validation,
}

impl Pass<'static> {
    /// Eval mode, no random streams, full validation.
    pub fn eval() -> Pass<'static> {
        Pass { train: false, rngs: None, validation: Validation::Full }
    }
}

impl<'a> Pass<'a> {
    /// Train mode with random streams, full validation.
    pub fn train(rngs: &'a mut Rngs) -> Pass<'a> {
        Pass { train: true, rngs: Some(rngs), validation: Validation::Full }
    }

    /// A pass in the given mode, full validation.
    pub fn new(train: bool, rngs: Option<&'a mut Rngs>) -> Pass<'a> {
        Pass { train, rngs, validation: Validation::Full }
    }

    /// This pass at another validation level.
    pub fn with_validation(self, validation: Validation) -> Pass<'a> {
        Pass { validation, ..self }
    }

    /// A shorter-lived copy of this pass (same mode, same streams), for one of several calls.
    pub fn reborrow(&mut self) -> Pass<'_> {
        Pass { train: self.train, rngs: self.rngs.as_deref_mut(), validation: self.validation }
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

impl From<Tensor> for NetOutput {
    /// An output without features.
    fn from(out: Tensor) -> NetOutput {
        NetOutput { out, features: Vec::new() }
    }
}

/// A network an interface can train and sample: `net(x, t, cond, pass) -> (out, features)`.
///
/// Implement [`Backbone::forward`] and [`Backbone::parameters`]; declare the conditioning it
/// takes with [`Backbone::accepts`] (by default nothing but `x` and `t`). Interfaces call
/// [`Backbone::call`], which refuses, naming it, any conditioning the backbone does not take,
/// and then runs `forward`. The mode and the streams come with each call in [`Pass`].
/// A `tch::nn` network is a backbone through [`VarStoreBackbone`].
pub trait Backbone {
    /// Runs the network on `x` (`[B, ..., C]`) at times `t` (`[B]`).
    fn forward(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, pass: Pass<'_>) -> Result<NetOutput>;

    /// The trainable parameters with their paths (`W1`, `blocks.0.attn.query.kernel`, ...).
    fn parameters(&self) -> Vec<(String, Tensor)>;

    /// The conditioning this backbone takes (default: none).
    fn accepts(&self) -> Accepts<'_> {
        Accepts::NOTHING
    }

    /// This backbone's own JVP, if it has one (default: none; the autograd backends of
    /// [`crate::jvp`] then differentiate [`Backbone::forward`]). A backbone that implements
    /// [`FusedJvp`] returns `Some(self)` here.
    fn fused_jvp(&self) -> Option<&dyn FusedJvp> {
        None
    }

    /// Checks `cond` against [`Backbone::accepts`] (an error naming the first input the
    /// backbone does not take), then runs [`Backbone::forward`].
    fn call(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, pass: Pass<'_>) -> Result<NetOutput> {
        validate::conditioning(&self.accepts(), &cond)?;
        self.forward(x, t, cond, pass)
    }
}

/// A backbone with a hand-written Jacobian-vector product: one pass that returns what
/// [`Backbone::forward`] returns — the output **with its autograd graph** (a loss built from it
/// backpropagates to the parameters) and the block features — together with the derivative of
/// the output along tangents on `x`, `t` and `cond.dt`, **without a graph**, computed alongside
/// the primal from its own intermediates (the rules of [`tangent`]). Other conditioning
/// (labels, `gw`, extra inputs) and the parameters are held fixed.
///
/// Contract, checked by the tests of every implementation: the primal output, features and
/// random draws (the streams of `pass`, in the order of one forward) are those of
/// `forward(x, t, cond, pass)`, and the tangent agrees with the autograd backends of
/// [`crate::jvp`] and with a float64 central difference. The interfaces reach it through
/// [`crate::jvp::network_jvp`], which checks the tangents' shapes, dtypes and devices first.
/// Implementing it is not enough for the interfaces to use it: return `Some(self)` from
/// [`Backbone::fused_jvp`].
pub trait FusedJvp: Backbone {
    /// `(forward(x, t, cond, pass), d out / d (x, t, cond.dt) . tangents)`; `tangents.dt` is
    /// `None` when `dt` is held fixed (or absent).
    fn forward_jvp(&self, x: &Tensor, t: &Tensor, cond: Cond<'_>, tangents: NetTangents<'_>, pass: Pass<'_>) -> Result<(NetOutput, Tensor)>;
}
