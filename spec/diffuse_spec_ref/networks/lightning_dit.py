"""The reference LightningDiT (diffuse_nnx ``networks/transformers/lightning_dit_nnx.py``),
restated functionally over flat parameter dicts, like ``dit.py`` (whose patch embedding,
time / label embedders, modulation, LayerNorm and unpatchify it reuses).

Settings: those of the DiT (``enable_dropout`` is read and ignored, quirk Q17) plus
``qk_norm`` (False), ``attn_norm_layer`` (``layer_norm``; ``rms_norm`` with ``qk_norm`` cannot
be built, quirk Q16), ``use_rope`` (False), ``swiglu`` (False), ``adaln_shift`` (False),
``rms_norm`` (False).

Parameters and buffers, by reference path::

    x_proj.*, x_embedder.pe (buffer), {t,dt,gw}_embedder.*, y_embedder.*     as the DiT
    blocks.<i>.adaLN_mod.layers.1.{kernel [D, 6D | 4D], bias}                6 chunks with adaln_shift, else 4
    blocks.<i>.norm{1,2}.rms_weight [D]                                      rms_norm only
    blocks.<i>.attn.to_qkv.{kernel [D, 3D], bias [3D]}
    blocks.<i>.attn.k_norm.{scale, bias} [D/H]                               qk_norm only (one norm, Q18)
    blocks.<i>.attn.out.{kernel [D, D], bias [D]}
    blocks.<i>.mlp.linear1 [D, M], linear2 [M, D]                            M = int(D * mlp_ratio)
    blocks.<i>.mlp.linear12 [D, 2H], linear3 [H, D]                          swiglu: H = int(2/3 * M)
    final_layer.adaLN_mod.layers.1 [D, 2D], final_layer.linear [D, p*p*C]
    final_layer.norm.rms_weight [D]                                          rms_norm only
    buffer: feat_rope.freqs_{cos,sin} [S*S, D/H]                             use_rope only (S = input_size / p)

Forward::

    x, c as the DiT; label dropout in train mode whenever class_dropout_prob > 0 (Q17)
    N(x) = rms_norm ? x * rsqrt(mean(x^2) + 1e-6) * rms_weight : LN(x)
    block: adaln_shift: (sh1, sc1, g1, sh2, sc2, g2) = split(adaLN(silu(c)), 6)
           otherwise:   (sc1, g1, sc2, g2) = split(adaLN(silu(c)), 4), sh = 0 (not added)
           x = x + g1 attn(N1(x) (1 + sc1) [+ sh1]);  x = x + g2 mlp(N2(x) (1 + sc2) [+ sh2])
    attn:  qkv = x W + b -> [B, L, 3, H, hd]; q, k, v [B, H, L, hd]
           qk_norm: q = kn(q), k = kn(k) (LayerNorm over hd, scale and bias, eps 1e-6)
           use_rope: q, k = rope(q), rope(k);  o = softmax(q @ (k^T / sqrt(hd))) @ v
           o -> [B, L, H * hd] (heads major) -> out
    mlp:   swiglu: (a, b) = split(linear12(x), 2); linear3(silu(a) * b); else DiT's gelu(tanh) MLP
    final: (sh, sc) = split(adaLN(silu(c)), 2); linear(N(x) (1 + sc) + sh); unpatchify

Quirk Q15: the reference builds an absent ``dt`` / ``gw`` after ``t`` became its ``[B, D]``
embedding, and crashes. ``lightning_apply`` raises by default (``absent_cond="error"``); with
``absent_cond="unit"`` it takes the intended zeros / ones of shape ``[B]`` (the crate's named
correction).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from .dit import get_2d_sincos_pos_embed, layer_norm, linear, time_embed, unpatchify

EPS = 1e-6


class Unbuildable(ValueError):
    """A configuration the reference cannot build or run (Q15, Q16)."""


def check_config(cfg: dict) -> None:
    if cfg.get("qk_norm", False) and cfg.get("attn_norm_layer", "layer_norm") == "rms_norm":
        raise Unbuildable("Q16: qk_norm with attn_norm_layer rms_norm: the reference's RMSNorm takes no rngs")
    if cfg.get("attn_norm_layer", "layer_norm") not in ("layer_norm", "rms_norm"):
        raise Unbuildable(f"attn_norm_layer {cfg['attn_norm_layer']!r}")


# ---------------------------------------------------------------------------
# building blocks


def rms_norm(x, weight, eps: float = EPS):
    """``x * rsqrt(mean(x^2, -1) + eps) * weight`` (the product with the weight last)."""
    ms = jnp.mean(lax.square(x), axis=-1, keepdims=True)
    return (x * lax.rsqrt(ms + eps)) * weight


def layer_norm_affine(x, scale, bias, eps: float = EPS):
    """nnx.LayerNorm with scale and bias (fast variance), flax's op order: the scale joins
    the rsqrt factor before the product, the bias is added last."""
    mu = x.mean((x.ndim - 1,))
    mu2 = lax.square(x).mean((x.ndim - 1,))
    var = jnp.maximum(0.0, mu2 - lax.square(mu))
    y = x - mu[..., None]
    mul = lax.rsqrt(var[..., None] + eps) * scale
    return y * mul + bias


def norm(params: dict, prefix: str, x, cfg: dict):
    if cfg.get("rms_norm", False):
        return rms_norm(x, params[prefix + ".rms_weight"])
    return layer_norm(x)


def rotate_half(z):
    """Pairs (z[2m], z[2m+1]) -> (-z[2m+1], z[2m])."""
    z2 = z.reshape(z.shape[:-1] + (z.shape[-1] // 2, 2))
    a, b = z2[..., 0], z2[..., 1]
    return jnp.stack([-b, a], axis=-1).reshape(z.shape)


def rope(z, cos, sin):
    return z * cos + rotate_half(z) * sin


def rope_tables(head_dim: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """``feat_rope.freqs_{cos,sin}`` [grid^2, head_dim], float32 as the reference computes them:
    half = head_dim / 2; f_k = 1 / 10000^(2k / half), k < half / 2; each twice -> g [half];
    token (i, j) (index i * grid + j) gets the angles [i g, j g]."""
    half = head_dim // 2
    f = 1.0 / (10000.0 ** (jnp.arange(0, half, 2, dtype=jnp.float32)[: half // 2] / half))
    pos = jnp.arange(grid, dtype=jnp.float32)
    a = pos[:, None] * f[None, :]                      # [grid, half/2]
    a = jnp.repeat(a, 2, axis=-1)                     # [grid, half]  (f0 f0 f1 f1 ...)
    rows = jnp.broadcast_to(a[:, None, :], (grid, grid, half))
    cols = jnp.broadcast_to(a[None, :, :], (grid, grid, half))
    ang = jnp.concatenate([rows, cols], axis=-1).reshape(grid * grid, head_dim)
    return np.asarray(jnp.cos(ang), np.float32), np.asarray(jnp.sin(ang), np.float32)


def attention(params: dict, buffers: dict, prefix: str, x, cfg: dict):
    B, L, D = x.shape
    H = int(cfg["num_heads"])
    hd = D // H
    qkv = linear(params, prefix + ".to_qkv", x)
    qkv = qkv.reshape(B, L, 3, H, hd)
    qkv = jnp.swapaxes(qkv, 1, 3)                      # [B, H, 3, L, hd]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if cfg.get("qk_norm", False):
        # Q18: the reference's q_norm and k_norm are one module, stored as k_norm
        s, b = params[prefix + ".k_norm.scale"], params[prefix + ".k_norm.bias"]
        q = layer_norm_affine(q, s, b)
        k = layer_norm_affine(k, s, b)
    if cfg.get("use_rope", False):
        cos, sin = buffers["feat_rope.freqs_cos"], buffers["feat_rope.freqs_sin"]
        q = rope(q, cos, sin)
        k = rope(k, cos, sin)
    kt = jnp.swapaxes(k, -2, -1) / np.float32(math.sqrt(hd))
    w = jax.nn.softmax(q @ kt, axis=-1)
    o = w @ v                                          # [B, H, L, hd]
    o = jnp.swapaxes(o, 1, 2).reshape(B, L, D)
    return linear(params, prefix + ".out", o)


def mlp(params: dict, prefix: str, x, cfg: dict):
    if cfg.get("swiglu", False):
        h = linear(params, prefix + ".linear12", x)
        a, b = jnp.split(h, 2, axis=-1)
        return linear(params, prefix + ".linear3", jax.nn.silu(a) * b)
    h = jax.nn.gelu(linear(params, prefix + ".linear1", x), approximate=True)
    return linear(params, prefix + ".linear2", h)


def _mod(x, scale, shift=None):
    y = x * (1 + scale[:, None, :])
    return y if shift is None else y + shift[:, None, :]


def block(params: dict, buffers: dict, prefix: str, x, c, cfg: dict):
    mod = linear(params, prefix + ".adaLN_mod.layers.1", jax.nn.silu(c))
    if cfg.get("adaln_shift", False):
        sh1, sc1, g1, sh2, sc2, g2 = jnp.split(mod, 6, axis=-1)
    else:
        sc1, g1, sc2, g2 = jnp.split(mod, 4, axis=-1)
        sh1 = sh2 = None
    h = _mod(norm(params, prefix + ".norm1", x, cfg), sc1, sh1)
    x = x + g1[:, None, :] * attention(params, buffers, prefix + ".attn", h, cfg)
    h = _mod(norm(params, prefix + ".norm2", x, cfg), sc2, sh2)
    x = x + g2[:, None, :] * mlp(params, prefix + ".mlp", h, cfg)
    return x


# ---------------------------------------------------------------------------
# the network


def label_dropout(rngs, y, cfg: dict, training: bool):
    """Q17: ``enable_dropout`` is not passed to the class embedder, so in train mode labels are
    dropped (to K) where ``uniform([B])`` from ``rngs.label_dropout`` < class_dropout_prob,
    whenever class_dropout_prob > 0."""
    p = float(cfg["class_dropout_prob"])
    if not (training and p > 0.0):
        return y
    drop = jax.random.uniform(rngs.label_dropout(), (y.shape[0],)) < p
    return jnp.where(drop, int(cfg["num_classes"]), y)


def lightning_apply(params: dict, buffers: dict, cfg: dict, x, t, y=None, dt=None, gw=None, *,
                    training: bool = False, rngs=None, absent_cond: str = "error"):
    """Forward pass; returns (out [B, H, W, C], [block i's tokens [B, T, D]])."""
    check_config(cfg)
    p = int(cfg["patch_size"])
    C = int(cfg["in_channels"])
    x = lax.conv_general_dilated(
        x, params["x_proj.kernel"], window_strides=(p, p), padding="VALID",
        lhs_dilation=(1, 1), rhs_dilation=(1, 1), dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    x = x + params["x_proj.bias"].reshape((1, 1, 1, -1))
    n, h, w, d = x.shape
    x = x.reshape((n, h * w, d)) + buffers["x_embedder.pe"]

    te = time_embed(params, "t_embedder", t, cfg)
    K = int(cfg["num_classes"])
    if y is None:
        y = jnp.zeros((x.shape[0],), dtype=jnp.int32) + K
    y = label_dropout(rngs, y, cfg, training)
    c = te + jnp.take(params["y_embedder.embedding_table.embedding"], y, axis=0)
    for flag, name, value, fill in (("take_dt", "dt", dt, 0.0), ("take_gw", "gw", gw, 1.0)):
        if not cfg.get(flag, False):
            continue
        if value is None:
            if absent_cond != "unit":
                raise Unbuildable(f"Q15: {flag} and no {name}: the reference's default is built from the "
                                  f"[B, D] time embedding and fails")
            value = jnp.full_like(t, fill)
        c = c + time_embed(params, f"{name}_embedder", value, cfg)

    feats = []
    for i in range(int(cfg["depth"])):
        x = block(params, buffers, f"blocks.{i}", x, c, cfg)
        feats.append(x)

    mod = linear(params, "final_layer.adaLN_mod.layers.1", jax.nn.silu(c))
    sh, sc = jnp.split(mod, 2, axis=-1)
    x = linear(params, "final_layer.linear", _mod(norm(params, "final_layer.norm", x, cfg), sc, sh))
    return unpatchify(x, p, C), feats


# ---------------------------------------------------------------------------
# shapes, buffers, init


def mlp_hidden(cfg: dict) -> int:
    m = int(int(cfg["hidden_size"]) * float(cfg["mlp_ratio"]))
    return int(2 / 3 * m) if cfg.get("swiglu", False) else m


def param_shapes(cfg: dict) -> dict:
    """{path: shape} of every trainable parameter, in sorted path order."""
    check_config(cfg)
    p, C, D = int(cfg["patch_size"]), int(cfg["in_channels"]), int(cfg["hidden_size"])
    F, K, H = int(cfg["freq_embed_size"]), int(cfg["num_classes"]), int(cfg["num_heads"])
    hd = D // H
    M = mlp_hidden(cfg)
    rms = cfg.get("rms_norm", False)
    s = {"x_proj.kernel": (p, p, C, D), "x_proj.bias": (D,)}
    embedders = ["t_embedder"] + (["dt_embedder"] if cfg.get("take_dt") else []) + \
        (["gw_embedder"] if cfg.get("take_gw") else [])
    for e in embedders:
        if cfg.get("continuous_time_embed"):
            s[f"{e}.gaussian_basis"] = (F // 2,)
        s[f"{e}.mlp.layers.0.kernel"] = (F, D)
        s[f"{e}.mlp.layers.0.bias"] = (D,)
        s[f"{e}.mlp.layers.2.kernel"] = (D, D)
        s[f"{e}.mlp.layers.2.bias"] = (D,)
    s["y_embedder.embedding_table.embedding"] = (K + int(float(cfg["class_dropout_prob"]) > 0.0), D)
    chunks = 6 if cfg.get("adaln_shift") else 4
    for i in range(int(cfg["depth"])):
        b = f"blocks.{i}"
        s[f"{b}.adaLN_mod.layers.1.kernel"] = (D, chunks * D)
        s[f"{b}.adaLN_mod.layers.1.bias"] = (chunks * D,)
        if rms:
            s[f"{b}.norm1.rms_weight"] = (D,)
            s[f"{b}.norm2.rms_weight"] = (D,)
        s[f"{b}.attn.to_qkv.kernel"] = (D, 3 * D)
        s[f"{b}.attn.to_qkv.bias"] = (3 * D,)
        if cfg.get("qk_norm"):
            s[f"{b}.attn.k_norm.scale"] = (hd,)
            s[f"{b}.attn.k_norm.bias"] = (hd,)
        s[f"{b}.attn.out.kernel"] = (D, D)
        s[f"{b}.attn.out.bias"] = (D,)
        if cfg.get("swiglu"):
            s[f"{b}.mlp.linear12.kernel"] = (D, 2 * M)
            s[f"{b}.mlp.linear12.bias"] = (2 * M,)
            s[f"{b}.mlp.linear3.kernel"] = (M, D)
            s[f"{b}.mlp.linear3.bias"] = (D,)
        else:
            s[f"{b}.mlp.linear1.kernel"] = (D, M)
            s[f"{b}.mlp.linear1.bias"] = (M,)
            s[f"{b}.mlp.linear2.kernel"] = (M, D)
            s[f"{b}.mlp.linear2.bias"] = (D,)
    s["final_layer.adaLN_mod.layers.1.kernel"] = (D, 2 * D)
    s["final_layer.adaLN_mod.layers.1.bias"] = (2 * D,)
    if rms:
        s["final_layer.norm.rms_weight"] = (D,)
    s["final_layer.linear.kernel"] = (D, p * p * C)
    s["final_layer.linear.bias"] = (p * p * C,)
    return dict(sorted(s.items()))


def make_buffers(cfg: dict) -> dict:
    g = int(cfg["input_size"]) // int(cfg["patch_size"])
    D = int(cfg["hidden_size"])
    pe = get_2d_sincos_pos_embed(D, g).astype(np.float32)
    out = {"x_embedder.pe": np.full((1, g * g, D), pe, dtype=np.float32)}
    if cfg.get("use_rope", False):
        cos, sin = rope_tables(D // int(cfg["num_heads"]), g)
        out["feat_rope.freqs_cos"], out["feat_rope.freqs_sin"] = cos, sin
    return out


def init_lightning(seed: int, cfg: dict) -> tuple[dict, dict]:
    """Fixture init (not the reference's): every parameter random and non-zero. Parameter i
    (sorted path order) from ``fold_in(key(seed), i)``: kernels ``normal / sqrt(fan_in)``,
    tables 0.5, gaussian_basis 1.0, biases 0.05, norm weights and q/k-norm scales
    ``1 + 0.1 normal`` (so that a missing weight shows), q/k-norm biases 0.1."""
    base = jax.random.key(seed)
    params = {}
    for i, (path, shape) in enumerate(param_shapes(cfg).items()):
        z = jax.random.normal(jax.random.fold_in(base, i), shape, dtype=jnp.float32)
        if path.endswith("rms_weight") or path.endswith("k_norm.scale"):
            v = 1.0 + z * np.float32(0.1)
        elif path.endswith("k_norm.bias"):
            v = z * np.float32(0.1)
        elif path.endswith(".bias"):
            v = z * np.float32(0.05)
        elif path.endswith("gaussian_basis"):
            v = z
        elif path.endswith("embedding"):
            v = z * np.float32(0.5)
        elif path == "x_proj.kernel":
            v = z * np.float32(1.0 / math.sqrt(shape[0] * shape[1] * shape[2]))
        else:
            v = z * np.float32(1.0 / math.sqrt(shape[0]))
        params[path] = np.asarray(v, dtype=np.float32)
    return params, make_buffers(cfg)


class FunctionalLightningDiT:
    """LightningDiT over an explicit parameter dict (tracers allowed), with the reference's
    ``train()`` / ``eval()``; a new one starts in train mode."""

    def __init__(self, cfg: dict, params: dict, buffers: dict, rngs=None, training: bool = True,
                 absent_cond: str = "error"):
        check_config(cfg)
        self.cfg = cfg
        self.params = params
        self.buffers = buffers
        self.rngs = rngs
        self.training = training
        self.absent_cond = absent_cond
        self.hidden_size = int(cfg["hidden_size"])

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def __call__(self, x, t, y=None, dt=None, gw=None):
        return lightning_apply(self.params, self.buffers, self.cfg, x, t, y=y, dt=dt, gw=gw,
                               training=self.training, rngs=self.rngs, absent_cond=self.absent_cond)


class LightningDiT(nnx.Module):
    """nnx form (parameters as ``nnx.Param``, buffers as ``nnx.Variable``), so that
    ``nnx.scan`` / ``nnx.cond`` carry it through a sampler as the reference's module is
    carried. ``deterministic`` is the flag ``eval()`` / ``train()`` set on the reference's
    class embedder; a new one starts in train mode."""

    def __init__(self, cfg: dict, params: dict, buffers: dict, rngs: nnx.Rngs | None = None):
        check_config(cfg)
        self.cfg = dict(cfg)
        self.params = {k: nnx.Param(jnp.asarray(v)) for k, v in sorted(params.items())}
        self.buffers = {k: nnx.Variable(jnp.asarray(v)) for k, v in sorted(buffers.items())}
        self.rngs = rngs
        self.deterministic = False
        self.hidden_size = int(cfg["hidden_size"])

    def __call__(self, x, t, y=None, dt=None, gw=None):
        return lightning_apply(
            {k: v.value for k, v in self.params.items()}, {k: v.value for k, v in self.buffers.items()},
            self.cfg, x, t, y=y, dt=dt, gw=gw, training=not self.deterministic, rngs=self.rngs,
        )
