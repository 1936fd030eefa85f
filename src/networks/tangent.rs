//! Forward-mode tangent rules written by hand for the layers of the crate's backbones: the
//! pieces of a fused primal-and-tangent pass ([`super::FusedJvp`]).
//!
//! A [`Dual`] is a primal tensor with an optional tangent (`None`: a zero tangent, which
//! every rule skips instead of multiplying by zeros). Each function computes its primal with
//! the ordinary tensor ops — in the order the plain forward of the networks uses, so a fused
//! pass's primal is bit for bit the plain forward's, and recorded by autograd when grad mode
//! is on, so it keeps its graph to the parameters — and the tangent **under `no_grad`**, from
//! the primal's own intermediates (`P = softmax(S)`, the LayerNorm's mean and reciprocal
//! standard deviation, the pre-activation of a GELU). The tangent never has a graph: it costs
//! no autograd memory and nothing of it reaches the backward. Parameters and buffers are
//! constants (no tangent): the tangent is the derivative along the inputs only, the one
//! MeanFlow, sCT and sCD need, and every linear layer costs one matmul for it (libtorch's
//! forward AD runs a second one against the zero tangent of its weight).
//!
//! The rules (`d` is the tangent, means and sums over the last axis, `r` a reciprocal
//! standard deviation):
//!
//! ```text
//! linear          y = x W + b                    dy = dx W
//! product         y = a b                        dy = da b + a db
//! sin, cos        y = sin a, cos a               dy = cos(a) da, -sin(a) da
//! SiLU            y = x sigmoid(x)               dy = dx s (1 + x (1 - s)),  s = sigmoid(x)
//! GELU (tanh)     y = x/2 (1 + tanh u)           dy = dx gelu'(x)  (libtorch's own derivative kernel)
//! SwiGLU          y = silu(a) b, (a, b) = split(h)   dy = silu'(a) da b + silu(a) db
//! LayerNorm, fast variance (the reference's arithmetic):
//!                 m = E[x], v = max(0, E[x^2] - m^2), r = (v + eps)^-1/2, y = (x - m) r
//!                 dm = E[dx], dv = 2 E[x dx] - 2 m dm  (0 where E[x^2] - m^2 < 0),
//!                 dr = -r^3 dv / 2,  dy = (dx - dm) r + (x - m) dr
//! LayerNorm, two-pass variance (libtorch's kernel, v = E[(x - m)^2]):
//!                 dy = r (dx - E[dx] - y E[y dx])
//! LayerNorm with scale s and bias (qk-norm, Flax's order y = (x - m) (r s) + bias):
//!                 dy = ((dx - dm) r + (x - m) dr) s
//! RMSNorm         y = (x r) w, r = (E[x^2] + eps)^-1/2     dy = (dx r + x dr) w, dr = -r^3 E[x dx]
//! modulation      y = x (1 + sc) + sh            dy = dx (1 + sc) + x dsc + dsh
//! sinusoidal      [cos(s f), sin(s f)]           [-sin(s f) f ds, cos(s f) f ds]
//! Gaussian basis  a = s b 2 pi, [sin a, cos a]   [cos(a) da, -sin(a) da], da = ds b 2 pi
//! RoPE            y = z cos + rot(z) sin         dy = dz cos + rot(dz) sin   (linear in z)
//! attention       S = q k^T / sqrt(hd), P = softmax(S), O = P v
//!                 dS = (dq k^T + q dk^T) / sqrt(hd), dP = P (dS - sum(P dS)), dO = dP v + P dv
//! ```
//!
//! The attention tangent needs `P`: [`attention_math`] takes it from its own primal;
//! [`attention_sdpa`] runs the primal through libtorch's fused `scaled_dot_product_attention`
//! (flash / memory-efficient kernels on CUDA, which have no forward-AD formula) and recomputes
//! `P` for the tangent without a graph. `dP` is libtorch's softmax derivative kernel applied to
//! `dS` (the softmax's Jacobian `diag(P) - P P^T` is symmetric, so its backward kernel computes
//! the forward derivative).
//!
//! Every rule is tested against libtorch's forward AD and double backward on random float64
//! inputs (tests below).

use tch::{Kind, Tensor};

use crate::error::Result;

/// A primal tensor with an optional tangent; `None` is a zero tangent.
#[derive(Debug)]
pub struct Dual {
    /// The primal value (with its autograd graph when grad mode is on).
    pub primal: Tensor,
    /// Its tangent, without a graph; `None` is zero.
    pub tangent: Option<Tensor>,
}

/// Runs `f` without recording autograd: where every tangent is computed.
fn untracked<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _g = tch::no_grad_guard();
    f()
}

/// `a + b` of two optional tangents (`None` is zero).
fn add_opt(a: Option<Tensor>, b: Option<Tensor>) -> Result<Option<Tensor>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some(untracked(|| Ok(a.f_add(&b)?))?),
        (a, None) => a,
        (None, b) => b,
    })
}

/// A tangent broadcast to the shape of its primal (a sum with a wider operand whose tangent is
/// zero).
fn widen(t: Option<Tensor>, primal: &Tensor) -> Result<Option<Tensor>> {
    Ok(match t {
        Some(t) if t.size() != primal.size() => Some(untracked(|| Ok(t.f_expand(primal.size(), false)?.f_contiguous()?))?),
        t => t,
    })
}

impl Dual {
    /// A primal with a tangent.
    pub fn new(primal: Tensor, tangent: Option<Tensor>) -> Dual {
        Dual { primal, tangent }
    }

    /// A value with a zero tangent (a constant of the differentiation: parameters, labels' embeddings).
    pub fn constant(primal: Tensor) -> Dual {
        Dual { primal, tangent: None }
    }

    /// Another handle on the same tensors.
    pub fn shallow_clone(&self) -> Dual {
        Dual { primal: self.primal.shallow_clone(), tangent: self.tangent.as_ref().map(Tensor::shallow_clone) }
    }

    /// Whether the tangent is non-zero (present).
    pub fn has_tangent(&self) -> bool {
        self.tangent.is_some()
    }

    /// The tangent, zeros of the primal's shape where it is `None`.
    pub fn tangent_or_zeros(&self) -> Result<Tensor> {
        match &self.tangent {
            Some(t) => Ok(t.shallow_clone()),
            None => untracked(|| Ok(self.primal.f_zeros_like()?)),
        }
    }

    /// A linear map applied to the primal and to the tangent (reshape, permute, transpose,
    /// narrow, a constant scale, RoPE): `f(x)` and `f(dx)`.
    pub fn linear_map(&self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Dual> {
        let primal = f(&self.primal)?;
        let tangent = match &self.tangent {
            Some(t) => Some(untracked(|| f(t))?),
            None => None,
        };
        Ok(Dual { primal, tangent })
    }

    /// `chunk(n, dim)` of both.
    pub fn chunk(&self, n: i64, dim: i64) -> Result<Vec<Dual>> {
        let p = self.primal.f_chunk(n, dim)?;
        let t: Vec<Option<Tensor>> = match &self.tangent {
            Some(t) => untracked(|| Ok(t.f_chunk(n, dim)?))?.into_iter().map(Some).collect(),
            None => (0..p.len()).map(|_| None).collect(),
        };
        Ok(p.into_iter().zip(t).map(|(primal, tangent)| Dual { primal, tangent }).collect())
    }

    /// `self + o` (broadcasting): `d = dself + do`.
    pub fn add(&self, o: &Dual) -> Result<Dual> {
        let primal = self.primal.f_add(&o.primal)?;
        let tangent = add_opt(self.tangent.as_ref().map(Tensor::shallow_clone), o.tangent.as_ref().map(Tensor::shallow_clone))?;
        Ok(Dual { tangent: widen(tangent, &primal)?, primal })
    }

    /// `self + c` for a constant `c` (a bias, a position table): the tangent is unchanged
    /// (broadcast to the result's shape when `c` widens it).
    pub fn add_constant(&self, c: &Tensor) -> Result<Dual> {
        let primal = self.primal.f_add(c)?;
        Ok(Dual { tangent: widen(self.tangent.as_ref().map(Tensor::shallow_clone), &primal)?, primal })
    }

    /// `self + s` for a scalar: the tangent is unchanged.
    pub fn add_scalar(&self, s: f64) -> Result<Dual> {
        Ok(Dual { primal: self.primal.f_add_scalar(s)?, tangent: self.tangent.as_ref().map(Tensor::shallow_clone) })
    }

    /// `self * o` (elementwise, broadcasting): `d = dself o + self do`.
    pub fn mul(&self, o: &Dual) -> Result<Dual> {
        let primal = self.primal.f_mul(&o.primal)?;
        let tangent = untracked(|| {
            Ok(match (&self.tangent, &o.tangent) {
                (Some(da), Some(db)) => Some(da.f_mul(&o.primal)?.f_addcmul(&self.primal, db)?),
                (Some(da), None) => Some(da.f_mul(&o.primal)?),
                (None, Some(db)) => Some(self.primal.f_mul(db)?),
                (None, None) => None,
            })
        })?;
        Ok(Dual { primal, tangent })
    }

    /// `self * c` for a constant `c`.
    pub fn mul_constant(&self, c: &Tensor) -> Result<Dual> {
        self.linear_map(|z| Ok(z.f_mul(c)?))
    }

    /// `self @ o` (batched matmul of two duals): `d = dself o + self do`.
    pub fn matmul(&self, o: &Dual) -> Result<Dual> {
        let primal = self.primal.f_matmul(&o.primal)?;
        let tangent = untracked(|| {
            Ok(match (&self.tangent, &o.tangent) {
                (Some(da), Some(db)) => Some(da.f_matmul(&o.primal)?.f_add(&self.primal.f_matmul(db)?)?),
                (Some(da), None) => Some(da.f_matmul(&o.primal)?),
                (None, Some(db)) => Some(self.primal.f_matmul(db)?),
                (None, None) => None,
            })
        })?;
        Ok(Dual { primal, tangent })
    }
}

/// `cat` along `dim`; a missing tangent among present ones is zeros.
pub fn cat(xs: &[Dual], dim: i64) -> Result<Dual> {
    let p: Vec<&Tensor> = xs.iter().map(|x| &x.primal).collect();
    let primal = Tensor::f_cat(&p, dim)?;
    let tangent = if xs.iter().any(Dual::has_tangent) {
        let ts = xs.iter().map(Dual::tangent_or_zeros).collect::<Result<Vec<_>>>()?;
        Some(untracked(|| Ok(Tensor::f_cat(&ts, dim)?))?)
    } else {
        None
    };
    Ok(Dual { primal, tangent })
}

/// `x @ w (+ b)` over the last axis, `w` `[in, out]`: `dy = dx w`.
pub fn linear(x: &Dual, w: &Tensor, b: Option<&Tensor>) -> Result<Dual> {
    let mut primal = x.primal.f_matmul(w)?;
    if let Some(b) = b {
        primal = primal.f_add(b)?;
    }
    let tangent = match &x.tangent {
        Some(t) => Some(untracked(|| Ok(t.f_matmul(w)?))?),
        None => None,
    };
    Ok(Dual { primal, tangent })
}

/// `sin(a)`: `dy = cos(a) da`.
pub fn sin(a: &Dual) -> Result<Dual> {
    let primal = a.primal.f_sin()?;
    let tangent = match &a.tangent {
        Some(t) => Some(untracked(|| Ok(a.primal.f_cos()?.f_mul(t)?))?),
        None => None,
    };
    Ok(Dual { primal, tangent })
}

/// `cos(a)`: `dy = -sin(a) da`.
pub fn cos(a: &Dual) -> Result<Dual> {
    let primal = a.primal.f_cos()?;
    let tangent = match &a.tangent {
        Some(t) => Some(untracked(|| Ok(a.primal.f_sin()?.f_neg()?.f_mul(t)?))?),
        None => None,
    };
    Ok(Dual { primal, tangent })
}

/// SiLU `x sigmoid(x)`: `dy = dx s (1 + x (1 - s))` (libtorch's `silu_backward` applied to
/// `dx`: the derivative is elementwise).
pub fn silu(x: &Dual) -> Result<Dual> {
    let primal = x.primal.f_silu()?;
    let tangent = match &x.tangent {
        Some(t) => Some(untracked(|| Ok(x.primal.f_silu_backward(t)?))?),
        None => None,
    };
    Ok(Dual { primal, tangent })
}

/// GELU with the tanh approximation: `dy = dx gelu'(x)` (libtorch's `gelu_backward`).
pub fn gelu_tanh(x: &Dual) -> Result<Dual> {
    let primal = x.primal.f_gelu("tanh")?;
    let tangent = match &x.tangent {
        Some(t) => Some(untracked(|| Ok(x.primal.f_gelu_backward(t, "tanh")?))?),
        None => None,
    };
    Ok(Dual { primal, tangent })
}

/// SwiGLU's gate: `(a, b) = split(h, 2, last axis)`, `silu(a) b`.
pub fn swiglu(h: &Dual) -> Result<Dual> {
    let ab = h.chunk(2, -1)?;
    silu(&ab[0])?.mul(&ab[1])
}

/// How a LayerNorm computes its variance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variance {
    /// Flax's fast variance, `max(0, E[x^2] - E[x]^2)`, as the reference (ten elementwise ops
    /// and reductions).
    Fast,
    /// libtorch's `native_layer_norm` kernel (`E[(x - E[x])^2]`).
    TwoPass,
}

/// LayerNorm over the last axis without scale or bias, `(x - E[x]) (var + eps)^-1/2`, with
/// the variance of `form` (see the module docs for both tangents).
pub fn layer_norm(x: &Dual, form: Variance, eps: f64) -> Result<Dual> {
    match form {
        Variance::Fast => {
            let (y, _) = layer_norm_fast(x, eps, None)?;
            Ok(y)
        }
        Variance::TwoPass => {
            let d = *x.primal.size().last().unwrap_or(&1);
            let (primal, _mean, rstd) = x.primal.f_native_layer_norm([d], None::<Tensor>, None::<Tensor>, eps)?;
            let tangent = match &x.tangent {
                Some(dx) => Some(untracked(|| {
                    let kind = primal.kind();
                    let dm = dx.f_mean_dim(-1, true, kind)?;
                    let ydx = primal.f_mul(dx)?.f_mean_dim(-1, true, kind)?;
                    Ok(dx.f_sub(&dm)?.f_sub(&primal.f_mul(&ydx)?)?.f_mul(&rstd)?)
                })?),
                None => None,
            };
            Ok(Dual { primal, tangent })
        }
    }
}

/// LayerNorm over the last axis with a scale and a bias on libtorch's kernel (two-pass
/// variance; LightningDiT's qk-norm with [`super::LayerNorm::Fused`]):
/// `y = xhat scale + bias`, `xhat = (x - m) r`, `dy = r (dx - E[dx] - xhat E[xhat dx]) scale`.
pub fn layer_norm_two_pass_affine(x: &Dual, scale: &Tensor, bias: &Tensor, eps: f64) -> Result<Dual> {
    let d = *x.primal.size().last().unwrap_or(&1);
    let (primal, mean, rstd) = x.primal.f_native_layer_norm([d], Some(scale), Some(bias), eps)?;
    let tangent = match &x.tangent {
        Some(dx) => Some(untracked(|| {
            let kind = primal.kind();
            let xhat = x.primal.f_sub(&mean)?.f_mul(&rstd)?;
            let dm = dx.f_mean_dim(-1, true, kind)?;
            let xdx = xhat.f_mul(dx)?.f_mean_dim(-1, true, kind)?;
            Ok(dx.f_sub(&dm)?.f_sub(&xhat.f_mul(&xdx)?)?.f_mul(&rstd)?.f_mul(scale)?)
        })?),
        None => None,
    };
    Ok(Dual { primal, tangent })
}

/// The fast-variance LayerNorm; with `affine = Some((scale, bias))` Flax's
/// `(x - m) * (rsqrt(v + eps) * scale) + bias`. Returns the result and `r`.
fn layer_norm_fast(x: &Dual, eps: f64, affine: Option<(&Tensor, &Tensor)>) -> Result<(Dual, Tensor)> {
    let xp = &x.primal;
    let kind = xp.kind();
    let mu = xp.f_mean_dim(-1, true, kind)?;
    let mu2 = xp.f_square()?.f_mean_dim(-1, true, kind)?;
    let raw = mu2.f_sub(&mu.f_square()?)?;
    let var = raw.f_clamp_min(0.0)?;
    let r = var.f_add_scalar(eps)?.f_rsqrt()?;
    let xc = xp.f_sub(&mu)?;
    let primal = match affine {
        None => xc.f_mul(&r)?,
        Some((s, b)) => xc.f_mul(&r.f_mul(s)?)?.f_add(b)?,
    };
    let tangent = match &x.tangent {
        Some(dx) => Some(untracked(|| {
            let dm = dx.f_mean_dim(-1, true, kind)?;
            // d E[x^2] = E[2 x dx]; d m^2 = 2 m dm; clamp_min passes where raw >= 0.
            let dmu2 = xp.f_mul(dx)?.f_mean_dim(-1, true, kind)?.f_mul_scalar(2.0)?;
            let dvar = dmu2.f_sub(&mu.f_mul(&dm)?.f_mul_scalar(2.0)?)?.f_mul(&raw.f_ge(0.0)?.f_to_kind(kind)?)?;
            let dr = r.f_pow_tensor_scalar(3)?.f_mul(&dvar)?.f_mul_scalar(-0.5)?;
            let dn = dx.f_sub(&dm)?.f_mul(&r)?.f_add(&xc.f_mul(&dr)?)?;
            Ok(match affine {
                None => dn,
                Some((s, _)) => dn.f_mul(s)?,
            })
        })?),
        None => None,
    };
    Ok((Dual { primal, tangent }, r))
}

/// LayerNorm over the last axis with a scale and a bias and the fast variance, in Flax's
/// order `(x - m) * (rsqrt(v + eps) * scale) + bias` (LightningDiT's qk-norm):
/// `dy = ((dx - dm) r + (x - m) dr) scale`.
pub fn layer_norm_affine(x: &Dual, scale: &Tensor, bias: &Tensor, eps: f64) -> Result<Dual> {
    Ok(layer_norm_fast(x, eps, Some((scale, bias)))?.0)
}

/// RMSNorm over the last axis, `(x * rsqrt(E[x^2] + eps)) * weight`:
/// `dy = (dx r + x dr) weight`, `dr = -r^3 E[x dx]`.
pub fn rms_norm(x: &Dual, weight: &Tensor, eps: f64) -> Result<Dual> {
    let xp = &x.primal;
    let kind = xp.kind();
    let ms = xp.f_square()?.f_mean_dim(-1, true, kind)?;
    let r = ms.f_add_scalar(eps)?.f_rsqrt()?;
    let primal = xp.f_mul(&r)?.f_mul(weight)?;
    let tangent = match &x.tangent {
        Some(dx) => Some(untracked(|| {
            let dr = r.f_pow_tensor_scalar(3)?.f_mul(&xp.f_mul(dx)?.f_mean_dim(-1, true, kind)?)?.f_neg()?;
            Ok(dx.f_mul(&r)?.f_add(&xp.f_mul(&dr)?)?.f_mul(weight)?)
        })?),
        None => None,
    };
    Ok(Dual { primal, tangent })
}

/// adaLN modulation `x * (1 + scale[:, None]) (+ shift[:, None])`, `x` `[B, T, D]`,
/// `scale`, `shift` `[B, D]`: `dy = dx (1 + sc) + x dsc + dsh`.
pub fn modulate(x: &Dual, shift: Option<&Dual>, scale: &Dual) -> Result<Dual> {
    let y = x.mul(&scale.linear_map(|s| Ok(s.f_unsqueeze(1)?))?.add_scalar(1.0)?)?;
    match shift {
        Some(sh) => y.add(&sh.linear_map(|s| Ok(s.f_unsqueeze(1)?))?),
        None => Ok(y),
    }
}

/// The DiT's sinusoidal time features of `s` `[B]`: `[cos(s f), sin(s f)]` with `f` `[F/2]`
/// (`s` not scaled), plus a zero column when `pad` (odd `F`).
pub fn sinusoidal_embedding(s: &Dual, freqs: &Tensor, pad: bool) -> Result<Dual> {
    let s = s.linear_map(|z| Ok(z.f_unsqueeze(-1)?))?;
    let f = freqs.f_unsqueeze(0)?;
    let a = s.linear_map(|z| Ok(z.f_mul(&f)?))?;
    let mut parts = vec![cos(&a)?, sin(&a)?];
    if pad {
        let b = a.primal.size()[0];
        parts.push(Dual::constant(Tensor::f_zeros([b, 1], (a.primal.kind(), a.primal.device()))?));
    }
    cat(&parts, -1)
}

/// The DiT's continuous (Gaussian-basis) time features of `s` `[B]`: `a = (s * basis) *
/// two_pi`, `[sin a, cos a]`, `basis` `[F/2]` a constant (under stop-gradient in the reference).
pub fn gaussian_embedding(s: &Dual, basis: &Tensor, two_pi: f64) -> Result<Dual> {
    let s = s.linear_map(|z| Ok(z.f_unsqueeze(-1)?))?;
    let b = basis.f_unsqueeze(0)?;
    let a = s.linear_map(|z| Ok(z.f_mul(&b)?.f_mul_scalar(two_pi)?))?;
    cat(&[sin(&a)?, cos(&a)?], -1)
}

/// LightningDiT's `rotate_half`: pairs `(z[2m], z[2m+1]) -> (-z[2m+1], z[2m])` on the last axis.
pub fn rotate_half(z: &Tensor) -> Result<Tensor> {
    let mut s = z.size();
    let d = s.pop().unwrap_or(0);
    let mut pairs = s.clone();
    pairs.extend([d / 2, 2]);
    let z2 = z.f_reshape(&pairs)?;
    let (a, b) = (z2.f_select(-1, 0)?, z2.f_select(-1, 1)?);
    Ok(Tensor::f_stack(&[b.f_neg()?, a], -1)?.f_reshape(z.size())?)
}

/// Rotary position embedding `z cos + rotate_half(z) sin` (linear in `z`, so the tangent is
/// the rotation of `dz`), `cos`, `sin` `[T, hd]` broadcast over `[B, H, T, hd]`.
pub fn rope(z: &Dual, cos: &Tensor, sin: &Tensor) -> Result<Dual> {
    z.linear_map(|v| Ok(v.f_mul(cos)?.f_add(&rotate_half(v)?.f_mul(sin)?)?))
}

/// `dP = P (dS - sum(P dS))`, the softmax's derivative along `dS` (libtorch's softmax
/// derivative kernel: the Jacobian is symmetric).
fn softmax_tangent(p: &Tensor, ds: &Tensor) -> Result<Tensor> {
    Ok(Tensor::f_internal_softmax_backward_data(&ds.f_to_kind(p.kind())?, p, -1, p.kind())?)
}

/// `dO = dP v + P dv` with `dP = P (dS - rowsum(P dS))`, `dS = dq kt + q dkt` (absent
/// tangents are zero).
fn attention_tangent(p: &Tensor, q: &Tensor, kt: &Tensor, v: &Tensor, dq: Option<&Tensor>, dkt: Option<&Tensor>, dv: Option<&Tensor>) -> Result<Option<Tensor>> {
    let ds = match (dq, dkt) {
        (Some(dq), Some(dkt)) => Some(dq.f_matmul(kt)?.f_add(&q.f_matmul(dkt)?)?),
        (Some(dq), None) => Some(dq.f_matmul(kt)?),
        (None, Some(dkt)) => Some(q.f_matmul(dkt)?),
        (None, None) => None,
    };
    let a = match ds {
        Some(ds) => Some(softmax_tangent(p, &ds)?.f_to_kind(v.kind())?.f_matmul(v)?),
        None => None,
    };
    let b = match dv {
        Some(dv) => Some(p.f_to_kind(dv.kind())?.f_matmul(dv)?),
        None => None,
    };
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some(a.f_add(&b)?),
        (a, None) => a,
        (None, b) => b,
    })
}

/// Softmax attention on the plain math path, `softmax(q @ kt) @ v` (the caller scales `q` or
/// `kt`), the softmax in `softmax_kind`; `q` `[.., T, hd]`, `kt` `[.., hd, T]`, `v`
/// `[.., T, hd]`. The tangent reuses the primal's `P`.
pub fn attention_math(q: &Dual, kt: &Dual, v: &Dual, softmax_kind: Kind) -> Result<Dual> {
    let p = q.primal.f_matmul(&kt.primal)?.f_softmax(-1, softmax_kind)?;
    let primal = p.f_matmul(&v.primal)?;
    let tangent = untracked(|| attention_tangent(&p, &q.primal, &kt.primal, &v.primal, q.tangent.as_ref(), kt.tangent.as_ref(), v.tangent.as_ref()))?;
    Ok(Dual { primal, tangent })
}

/// Softmax attention `softmax(scale q k^T) v` with the primal through libtorch's fused
/// `scaled_dot_product_attention` (no forward-AD formula; flash / memory-efficient kernels on
/// CUDA); `q`, `k`, `v` `[B, H, T, hd]`. The tangent recomputes `P` in float32 (or the
/// inputs' dtype when wider) without a graph.
pub fn attention_sdpa(q: &Dual, k: &Dual, v: &Dual, scale: f64) -> Result<Dual> {
    let primal = Tensor::f_scaled_dot_product_attention::<Tensor>(&q.primal, &k.primal, &v.primal, None, 0.0, false, scale, false)?;
    let tangent = if q.has_tangent() || k.has_tangent() || v.has_tangent() {
        untracked(|| {
            let kind = if q.primal.kind() == Kind::Double { Kind::Double } else { Kind::Float };
            let qs = q.primal.f_mul_scalar(scale)?;
            let kt = k.primal.f_transpose(-2, -1)?;
            let p = qs.f_matmul(&kt)?.f_softmax(-1, kind)?;
            let dq = match &q.tangent {
                Some(t) => Some(t.f_mul_scalar(scale)?),
                None => None,
            };
            let dkt = match &k.tangent {
                Some(t) => Some(t.f_transpose(-2, -1)?),
                None => None,
            };
            let t = attention_tangent(&p, &qs, &kt, &v.primal, dq.as_ref(), dkt.as_ref(), v.tangent.as_ref())?;
            Ok(match t {
                Some(t) => Some(t.f_to_kind(primal.kind())?),
                None => None,
            })
        })?
    } else {
        None
    };
    Ok(Dual { primal, tangent })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jvp::{jvp, JvpBackend};
    use tch::Device;

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    fn rel(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
    }

    /// Checks `f` on random float64 inputs of `shapes` with random tangents (the inputs whose
    /// index is in `fixed` get none): the primal equals `f` on constants bit for bit, and the
    /// tangent agrees with libtorch's forward AD and double backward of the primal to 1e-12
    /// relative. `plain` is the function autograd differentiates (`f`'s primal by default).
    fn check_with(name: &str, shapes: &[&[i64]], fixed: &[usize], f: &dyn Fn(&[Dual]) -> Result<Dual>, plain: Option<&dyn Fn(&[Tensor]) -> Result<Tensor>>) {
        tch::manual_seed(11);
        let xs: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, F64)).collect();
        let ts: Vec<Option<Tensor>> = shapes.iter().enumerate().map(|(i, s)| if fixed.contains(&i) { None } else { Some(Tensor::randn(*s, F64)) }).collect();
        let duals: Vec<Dual> = xs.iter().zip(&ts).map(|(x, t)| Dual::new(x.shallow_clone(), t.as_ref().map(Tensor::shallow_clone))).collect();
        let out = f(&duals).unwrap();
        let default_plain = |p: &[Tensor]| -> Result<Tensor> { Ok(f(&p.iter().map(|x| Dual::constant(x.shallow_clone())).collect::<Vec<_>>())?.primal) };
        let plain: &dyn Fn(&[Tensor]) -> Result<Tensor> = plain.unwrap_or(&default_plain);
        let p0 = plain(&xs).unwrap();
        assert_eq!(out.primal.size(), p0.size(), "{name}");
        let mut g = |p: &[Tensor]| plain(p);
        for backend in [JvpBackend::ForwardAd, JvpBackend::DoubleBackward] {
            let (_, want) = jvp(backend, &mut g, &xs, &ts).unwrap();
            let got = out.tangent_or_zeros().unwrap();
            let e = rel(&got, &want);
            assert!(e < 1e-12, "{name} vs {backend:?}: relative error {e:.2e}");
        }
        assert!(out.tangent.as_ref().is_none_or(|t| !t.requires_grad()), "{name}: the tangent has a graph");
    }

    fn check(name: &str, shapes: &[&[i64]], f: &dyn Fn(&[Dual]) -> Result<Dual>) {
        check_with(name, shapes, &[], f, None);
        // The primal is the same function on constants, bit for bit.
        tch::manual_seed(11);
        let xs: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, F64)).collect();
        let a = f(&xs.iter().map(|x| Dual::new(x.shallow_clone(), Some(x.randn_like()))).collect::<Vec<_>>()).unwrap().primal;
        let b = f(&xs.iter().map(|x| Dual::constant(x.shallow_clone())).collect::<Vec<_>>()).unwrap().primal;
        assert!(a.equal(&b), "{name}: the primal depends on the tangents");
    }

    #[test]
    fn elementary_rules() {
        let w = Tensor::randn([5, 7], F64);
        let b = Tensor::randn([7], F64);
        check("linear", &[&[3, 4, 5]], &|x| linear(&x[0], &w, Some(&b)));
        check("add", &[&[3, 5], &[3, 5]], &|x| x[0].add(&x[1]));
        check("mul (broadcast)", &[&[3, 4, 5], &[3, 1, 5]], &|x| x[0].mul(&x[1]));
        check("matmul", &[&[2, 3, 4], &[2, 4, 5]], &|x| x[0].matmul(&x[1]));
        check("cat", &[&[2, 3], &[2, 4]], &|x| cat(&[x[0].shallow_clone(), x[1].shallow_clone()], -1));
        check("sin cos", &[&[4, 6]], &|x| sin(&x[0])?.mul(&cos(&x[0])?));
        check("silu", &[&[4, 6]], &|x| silu(&x[0]));
        check("gelu tanh", &[&[4, 6]], &|x| gelu_tanh(&x[0]));
        check("swiglu", &[&[3, 2, 8]], &|x| swiglu(&x[0]));
        // a zero tangent on one input of a product and of a cat
        check_with("mul, one input fixed", &[&[3, 5], &[3, 5]], &[1], &|x| x[0].mul(&x[1]), None);
        check_with("cat, one input fixed", &[&[2, 3], &[2, 4]], &[0], &|x| cat(&[x[0].shallow_clone(), x[1].shallow_clone()], -1), None);
    }

    #[test]
    fn normalisations() {
        check("layer norm, fast variance", &[&[3, 4, 16]], &|x| layer_norm(&x[0], Variance::Fast, 1e-6));
        check("layer norm, two-pass variance", &[&[3, 4, 16]], &|x| layer_norm(&x[0], Variance::TwoPass, 1e-6));
        let (s, b) = (Tensor::randn([8], F64), Tensor::randn([8], F64));
        check("layer norm with scale and bias", &[&[2, 3, 5, 8]], &|x| layer_norm_affine(&x[0], &s, &b, 1e-6));
        let w = Tensor::randn([16], F64);
        check("rms norm", &[&[3, 4, 16]], &|x| rms_norm(&x[0], &w, 1e-6));
        let (sc, bi) = (Tensor::randn([16], F64), Tensor::randn([16], F64));
        check("two-pass layer norm with scale and bias", &[&[3, 4, 16]], &|x| layer_norm_two_pass_affine(&x[0], &sc, &bi, 1e-6));
        // The two LayerNorms are the same function.
        let x = Tensor::randn([3, 4, 16], F64);
        let (a, b) = (layer_norm(&Dual::constant(x.shallow_clone()), Variance::Fast, 1e-6).unwrap(), layer_norm(&Dual::constant(x), Variance::TwoPass, 1e-6).unwrap());
        assert!(rel(&a.primal, &b.primal) < 1e-12);
    }

    #[test]
    fn modulation_and_time_embeddings() {
        check("modulate with shift", &[&[3, 4, 6], &[3, 6], &[3, 6]], &|x| modulate(&x[0], Some(&x[1]), &x[2]));
        check("modulate without shift", &[&[3, 4, 6], &[3, 6]], &|x| modulate(&x[0], None, &x[1]));
        let f = Tensor::randn([5], F64);
        check("sinusoidal", &[&[4]], &|x| sinusoidal_embedding(&x[0], &f, false));
        check("sinusoidal, odd size", &[&[4]], &|x| sinusoidal_embedding(&x[0], &f, true));
        check("gaussian basis", &[&[4]], &|x| gaussian_embedding(&x[0], &f, 2.0 * std::f64::consts::PI));
    }

    #[test]
    fn attention_with_and_without_rope_and_qk_norm() {
        let shape: &[i64] = &[2, 3, 5, 4];
        let scale = 0.5f64;
        // math path, the caller scaling q (the DiT) or k^T (LightningDiT)
        check("attention, math", &[shape, shape, shape], &|x| {
            let q = x[0].linear_map(|z| Ok(z.f_mul_scalar(scale)?))?;
            let kt = x[1].linear_map(|z| Ok(z.f_transpose(-2, -1)?))?;
            attention_math(&q, &kt, &x[2], Kind::Double)
        });
        // a fixed value or a fixed key
        for fixed in [[0usize], [1], [2]] {
            check_with("attention, math, one input fixed", &[shape, shape, shape], &fixed, &|x| {
                let kt = x[1].linear_map(|z| Ok(z.f_transpose(-2, -1)?.f_mul_scalar(scale)?))?;
                attention_math(&x[0], &kt, &x[2], Kind::Double)
            }, None);
        }
        // the fused kernel's primal, differentiated by autograd through the math path
        let math = |p: &[Tensor]| -> Result<Tensor> {
            let s = p[0].f_mul_scalar(scale)?.f_matmul(&p[1].f_transpose(-2, -1)?)?.f_softmax(-1, Kind::Double)?;
            Ok(s.f_matmul(&p[2])?)
        };
        check_with("attention, sdpa", &[shape, shape, shape], &[], &|x| attention_sdpa(&x[0], &x[1], &x[2], scale), Some(&math));
        let sd = attention_sdpa(&Dual::constant(Tensor::randn(shape, F64)), &Dual::constant(Tensor::randn(shape, F64)), &Dual::constant(Tensor::randn(shape, F64)), scale).unwrap();
        assert!(sd.tangent.is_none());
        // qk-norm and RoPE before the fused kernel
        let (s, b) = (Tensor::randn([4], F64), Tensor::randn([4], F64));
        let (c, sn) = (Tensor::randn([5, 4], F64), Tensor::randn([5, 4], F64));
        let full = |x: &[Dual], sdpa: bool| -> Result<Dual> {
            let q = rope(&layer_norm_affine(&x[0], &s, &b, 1e-6)?, &c, &sn)?;
            let k = rope(&layer_norm_affine(&x[1], &s, &b, 1e-6)?, &c, &sn)?;
            if sdpa {
                attention_sdpa(&q, &k, &x[2], scale)
            } else {
                let kt = k.linear_map(|z| Ok(z.f_transpose(-2, -1)?.f_mul_scalar(scale)?))?;
                attention_math(&q, &kt, &x[2], Kind::Double)
            }
        };
        check("attention, qk-norm + rope, math", &[shape, shape, shape], &|x| full(x, false));
        let full_math = |p: &[Tensor]| -> Result<Tensor> { Ok(full(&p.iter().map(|t| Dual::constant(t.shallow_clone())).collect::<Vec<_>>(), false)?.primal) };
        check_with("attention, qk-norm + rope, sdpa", &[shape, shape, shape], &[], &|x| full(x, true), Some(&full_math));
    }

    #[test]
    fn rotate_half_pairs_neighbours() {
        let z = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]).reshape([1, 4]);
        let r = rotate_half(&z).unwrap();
        assert_eq!(Vec::<f64>::try_from(r.reshape([-1])).unwrap(), vec![-2.0, 1.0, -4.0, 3.0]);
    }

    #[test]
    fn the_tangent_has_no_graph_and_the_primal_keeps_one() {
        let w = Tensor::randn([4, 3], F64).set_requires_grad(true);
        let x = Dual::new(Tensor::randn([2, 4], F64), Some(Tensor::randn([2, 4], F64)));
        let y = gelu_tanh(&linear(&x, &w, None).unwrap()).unwrap();
        assert!(y.primal.requires_grad());
        assert!(!y.tangent.unwrap().requires_grad());
    }
}
