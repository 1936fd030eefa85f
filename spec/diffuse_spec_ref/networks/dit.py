"""The reference DiT (diffuse_nnx ``networks/transformers/dit_nnx.py``), restated functionally.

Parameters and buffers are flat dicts keyed by the reference module paths, the same
``<path>`` that golden cases write as ``param.<path>.npy`` / ``buffer.<path>.npy``::

    x_proj.kernel [p, p, C, D]            x_proj.bias [D]              (patch conv, VALID, stride p)
    buffer: x_embedder.pe [1, T, D]                                    (2-D sin-cos table, no gradient)
    t_embedder.mlp.layers.{0,2}.{kernel,bias}    [F, D], [D] / [D, D], [D]
    t_embedder.gaussian_basis [F/2]              (continuous_time_embed only; a Param under
                                                  stop_gradient, so its gradient is 0)
    dt_embedder.*  (take_dt)   gw_embedder.*  (take_gw)   same layout as t_embedder
    y_embedder.embedding_table.embedding [K + (class_dropout_prob > 0), D]
    blocks.<i>.adaLN_mod.layers.1.{kernel [D, 6D], bias [6D]}
    blocks.<i>.attn.{query,key,value}.{kernel [D, H, D/H], bias [H, D/H]}
    blocks.<i>.attn.out.{kernel [H, D/H, D], bias [D]}
    blocks.<i>.mlp.linear1.{kernel [D, mlp], bias [mlp]}   blocks.<i>.mlp.linear2.{kernel [mlp, D], bias [D]}
    final_layer.adaLN_mod.layers.1.{kernel [D, 2D], bias [2D]}
    final_layer.linear.{kernel [D, p*p*C], bias [p*p*C]}

Forward (``dit_apply``), op by op as flax 0.10.2 runs it eagerly::

    x  = conv(x) + bias ; reshape [B, T, D] ; + pe
    te = temb(t)        # discrete: f = exp((-log(10000) * arange(F/2)) / (F/2)), a = t[:,None] * f,
                        #           [cos a, sin a];  (t is NOT scaled by 1000)
                        # continuous: a = ((t[:,None] * basis) * 2) * pi, [sin a, cos a]
                        # then Linear - silu - Linear
    y  = K when absent; in train mode with enable_dropout and class_dropout_prob != 0:
         y = where(uniform(rngs.label_dropout(), [B]) < class_dropout_prob, K, y)
    c  = te + table[y]          (an index past the table reads NaN: jnp.take's fill mode)
    c  = c + dt_embedder(dt)    (take_dt; dt absent: see below)
    c  = c + gw_embedder(gw)    (take_gw; gw absent: see below)
    blocks, final layer, unpatchify as in golden-format.md.

Reference quirk: when ``dt`` (or ``gw``) is absent the reference builds
``zeros_like(t)`` / ``ones_like(t)`` *after* ``t`` has been replaced by its embedding,
i.e. an array of shape [B, D], not [B]; the embedder then broadcasts it to a wrong
shape (an error for almost every size).  This restatement uses the intended [B]
zeros / ones instead and says so: a case that omits ``dt`` on a ``take_dt`` DiT pins
the intended behaviour, not the reference's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flax import nnx

# ---------------------------------------------------------------------------
# building blocks (each mirrors the flax 0.10.2 op sequence)


def linear(params: dict, prefix: str, x):
    """nnx.Linear: dot_general over the last axis, then ``y += bias``."""
    k = params[prefix + ".kernel"]
    y = lax.dot_general(x, k, (((x.ndim - 1,), (0,)), ((), ())))
    b = params.get(prefix + ".bias")
    if b is not None:
        y = y + jnp.reshape(b, (1,) * (y.ndim - 1) + (-1,))
    return y


def _linear_general_in(params: dict, prefix: str, x):
    """nnx.LinearGeneral for attention q/k/v: [B, T, D] x [D, H, hd] -> [B, T, H, hd]."""
    k = params[prefix + ".kernel"]
    y = lax.dot_general(x, k, (((x.ndim - 1,), (0,)), ((), ())))
    b = params[prefix + ".bias"]
    y = y + jnp.reshape(b, (1,) * (x.ndim - 1) + b.shape)
    return y


def _linear_general_out(params: dict, prefix: str, x):
    """nnx.LinearGeneral(axis=(-2, -1)) for the attention output: [B, T, H, hd] x [H, hd, D]."""
    k = params[prefix + ".kernel"]
    n = x.ndim
    y = lax.dot_general(x, k, (((n - 2, n - 1), (0, 1)), ((), ())))
    b = params[prefix + ".bias"]
    y = y + jnp.reshape(b, (1,) * (n - 2) + b.shape)
    return y


def layer_norm(x, eps: float = 1e-6):
    """nnx.LayerNorm(use_scale=False, use_bias=False, use_fast_variance=True) over the last axis."""
    mu = x.mean((x.ndim - 1,))
    mu2 = lax.square(x).mean((x.ndim - 1,))
    var = jnp.maximum(0.0, mu2 - lax.square(mu))
    mean = mu[..., None]
    var = var[..., None]
    y = x - mean
    mul = lax.rsqrt(var + eps)
    return y * mul


def modulation(x, shift, scale):
    return x * (1 + scale[:, None, ...]) + shift[:, None, ...]


def timestep_embedding(t, dim: int, max_period: int = 10000):
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(0, half, dtype=jnp.float32) / half)
    args = jnp.expand_dims(t, axis=1) * jnp.expand_dims(freqs, axis=0)
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def time_embed(params: dict, prefix: str, s, cfg: dict):
    """t/dt/gw embedder: frequency features, then Linear - silu - Linear."""
    if cfg.get("continuous_time_embed", False):
        basis = lax.stop_gradient(params[prefix + ".gaussian_basis"][None, :])
        a = s[..., None] * basis * 2 * np.pi
        feats = jnp.concatenate([jnp.sin(a), jnp.cos(a)], axis=-1)
    else:
        feats = timestep_embedding(s, dim=int(cfg["freq_embed_size"]))
    h = linear(params, prefix + ".mlp.layers.0", feats)
    h = jax.nn.silu(h)
    return linear(params, prefix + ".mlp.layers.2", h)


def attention(params: dict, prefix: str, x, num_heads: int):
    q = _linear_general_in(params, prefix + ".query", x)
    k = _linear_general_in(params, prefix + ".key", x)
    v = _linear_general_in(params, prefix + ".value", x)
    o = nnx.dot_product_attention(q, k, v, dtype=jnp.float32)
    return _linear_general_out(params, prefix + ".out", o)


def mlp(params: dict, prefix: str, x):
    h = jax.nn.gelu(linear(params, prefix + ".linear1", x), approximate=True)
    return linear(params, prefix + ".linear2", h)


def dit_block(params: dict, prefix: str, x, c, num_heads: int):
    mod = linear(params, prefix + ".adaLN_mod.layers.1", jax.nn.silu(c))
    sh1, sc1, g1, sh2, sc2, g2 = jnp.split(mod, 6, axis=-1)
    x = x + g1[:, None, ...] * attention(params, prefix + ".attn", modulation(layer_norm(x), sh1, sc1), num_heads)
    x = x + g2[:, None, ...] * mlp(params, prefix + ".mlp", modulation(layer_norm(x), sh2, sc2))
    return x


def unpatchify(x, p: int, channels: int):
    h = w = int(x.shape[1] ** 0.5)
    x = jnp.reshape(x, (x.shape[0], h, w, p, p, channels))
    x = jnp.einsum("nhwpqc->nhpwqc", x)
    return jnp.reshape(x, (x.shape[0], h * p, w * p, channels))


# ---------------------------------------------------------------------------
# the network


def label_dropout(rngs, y, cfg: dict, training: bool):
    """ClassEmbedder.token_drop: draws from ``rngs.label_dropout`` only in train mode,
    with enable_dropout on and class_dropout_prob != 0; dropped labels become K."""
    p = float(cfg["class_dropout_prob"])
    if not (cfg.get("enable_dropout", True) and training and p != 0.0):
        return y
    key = rngs.label_dropout()
    drop = jax.random.uniform(key, (y.shape[0],)) < p
    return jnp.where(drop, int(cfg["num_classes"]), y)


def dit_apply(params: dict, buffers: dict, cfg: dict, x, t, y=None, dt=None, gw=None, *,
              training: bool = False, rngs=None):
    """Forward pass; returns (out [B, H, W, C], [block i's tokens [B, T, D]])."""
    p = int(cfg["patch_size"])
    C = int(cfg["in_channels"])
    x = lax.conv_general_dilated(
        x, params["x_proj.kernel"], window_strides=(p, p), padding="VALID",
        lhs_dilation=(1, 1), rhs_dilation=(1, 1),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    x = x + params["x_proj.bias"].reshape((1, 1, 1, -1))
    n, h, w, d = x.shape
    x = x.reshape((n, h * w, d)) + buffers["x_embedder.pe"]

    te = time_embed(params, "t_embedder", t, cfg)
    K = int(cfg["num_classes"])
    if y is None:
        y = jnp.zeros((x.shape[0],), dtype=jnp.int32) + K
    y = label_dropout(rngs, y, cfg, training)
    ye = jnp.take(params["y_embedder.embedding_table.embedding"], y, axis=0)
    c = te + ye
    if cfg.get("take_dt", False):
        if dt is None:
            dt = jnp.zeros_like(t)  # intended; the reference's is [B, D] (see module doc)
        c = c + time_embed(params, "dt_embedder", dt, cfg)
    if cfg.get("take_gw", False):
        if gw is None:
            gw = jnp.ones_like(t)
        c = c + time_embed(params, "gw_embedder", gw, cfg)

    feats = []
    for i in range(int(cfg["depth"])):
        x = dit_block(params, f"blocks.{i}", x, c, int(cfg["num_heads"]))
        feats.append(x)

    mod = linear(params, "final_layer.adaLN_mod.layers.1", jax.nn.silu(c))
    sh, sc = jnp.split(mod, 2, axis=-1)
    x = linear(params, "final_layer.linear", modulation(layer_norm(x), sh, sc))
    return unpatchify(x, p, C), feats


# ---------------------------------------------------------------------------
# shapes, pe table, init


def get_2d_sincos_pos_embed(embed_dim: int, grid: int) -> np.ndarray:
    """The reference's numpy float32 sin-cos table, [grid*grid, embed_dim]."""

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float32)
        omega /= dim / 2.0
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh = np.arange(grid, dtype=np.float32)
    gw = np.arange(grid, dtype=np.float32)
    g = np.stack(np.meshgrid(gw, gh), axis=0)
    emb = np.concatenate([one_d(embed_dim // 2, g[0]), one_d(embed_dim // 2, g[1])], axis=1)
    return emb


def param_shapes(cfg: dict) -> dict:
    """{path: shape} of every trainable parameter, in sorted path order."""
    p, C, D = int(cfg["patch_size"]), int(cfg["in_channels"]), int(cfg["hidden_size"])
    F, K, H = int(cfg["freq_embed_size"]), int(cfg["num_classes"]), int(cfg["num_heads"])
    M = int(D * float(cfg["mlp_ratio"]))
    hd = D // H
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
    for i in range(int(cfg["depth"])):
        b = f"blocks.{i}"
        s[f"{b}.adaLN_mod.layers.1.kernel"] = (D, 6 * D)
        s[f"{b}.adaLN_mod.layers.1.bias"] = (6 * D,)
        for q in ("query", "key", "value"):
            s[f"{b}.attn.{q}.kernel"] = (D, H, hd)
            s[f"{b}.attn.{q}.bias"] = (H, hd)
        s[f"{b}.attn.out.kernel"] = (H, hd, D)
        s[f"{b}.attn.out.bias"] = (D,)
        s[f"{b}.mlp.linear1.kernel"] = (D, M)
        s[f"{b}.mlp.linear1.bias"] = (M,)
        s[f"{b}.mlp.linear2.kernel"] = (M, D)
        s[f"{b}.mlp.linear2.bias"] = (D,)
    s["final_layer.adaLN_mod.layers.1.kernel"] = (D, 2 * D)
    s["final_layer.adaLN_mod.layers.1.bias"] = (2 * D,)
    s["final_layer.linear.kernel"] = (D, p * p * C)
    s["final_layer.linear.bias"] = (p * p * C,)
    return dict(sorted(s.items()))


def make_buffers(cfg: dict) -> dict:
    g = int(cfg["input_size"]) // int(cfg["patch_size"])
    D = int(cfg["hidden_size"])
    pe = get_2d_sincos_pos_embed(D, g).astype(np.float32)
    return {"x_embedder.pe": np.full((1, g * g, D), pe, dtype=np.float32)}


def init_dit(seed: int, cfg: dict) -> tuple[dict, dict]:
    """Fixture init (not the reference's): every parameter random and non-zero, so that
    adaLN-Zero gates and the final layer do not silence the network.  Parameter i (in
    sorted path order) is drawn from ``fold_in(key(seed), i)``: kernels and tables
    ``normal * 1/sqrt(fan_in)`` (tables 0.5, gaussian_basis 1.0), biases ``normal * 0.05``."""
    base = jax.random.key(seed)
    params = {}
    for i, (path, shape) in enumerate(param_shapes(cfg).items()):
        k = jax.random.fold_in(base, i)
        z = jax.random.normal(k, shape, dtype=jnp.float32)
        if path.endswith(".bias"):
            scale = 0.05
        elif path.endswith("gaussian_basis"):
            scale = 1.0
        elif path.endswith("embedding"):
            scale = 0.5
        elif path.endswith("attn.out.kernel"):
            scale = 1.0 / math.sqrt(shape[0] * shape[1])
        elif path == "x_proj.kernel":
            scale = 1.0 / math.sqrt(shape[0] * shape[1] * shape[2])
        else:
            scale = 1.0 / math.sqrt(shape[0])
        params[path] = np.asarray(z * np.float32(scale), dtype=np.float32)
    return params, make_buffers(cfg)


class DiT(nnx.Module):
    """nnx form of the DiT: parameters as ``nnx.Param`` in ``self.params`` (flat dict by
    reference path), the pe table as a non-trainable ``nnx.Variable``, the shared
    ``nnx.Rngs`` as ``self.rngs`` (the interfaces draw time/noise/label_dropout from it,
    as the reference reads ``network.rngs``).

    Train / eval mode: ``deterministic`` is the flag the reference's ClassEmbedder
    carries; ``nnx.Module.eval()`` sets it True and ``train()`` False, exactly as on the
    reference module tree.  A new DiT starts in train mode (deterministic False)."""

    def __init__(self, cfg: dict, params: dict, buffers: dict, rngs: nnx.Rngs | None = None):
        self.cfg = dict(cfg)
        self.params = {k: nnx.Param(jnp.asarray(v)) for k, v in sorted(params.items())}
        self.buffers = {k: nnx.Variable(jnp.asarray(v)) for k, v in sorted(buffers.items())}
        self.rngs = rngs
        self.deterministic = False
        self.hidden_size = int(cfg["hidden_size"])

    @classmethod
    def init(cls, seed: int, cfg: dict, rngs: nnx.Rngs | None = None):
        p, b = init_dit(seed, cfg)
        return cls(cfg, p, b, rngs)

    def param_dict(self) -> dict:
        return {k: v.value for k, v in self.params.items()}

    def __call__(self, x, t, y=None, dt=None, gw=None):
        return dit_apply(
            self.param_dict(), {k: v.value for k, v in self.buffers.items()}, self.cfg,
            x, t, y=y, dt=dt, gw=gw, training=not self.deterministic, rngs=self.rngs,
        )


class FunctionalDiT:
    """Plain-Python DiT over an explicit parameter dict (which may hold tracers, for
    ``jax.grad`` over ``params``), with the reference's train / eval switch:
    ``train()`` / ``eval()`` set ``training``; a new one starts in train mode."""

    def __init__(self, cfg: dict, params: dict, buffers: dict, rngs=None, training: bool = True):
        self.cfg = cfg
        self.params = params
        self.buffers = buffers
        self.rngs = rngs
        self.training = training
        self.hidden_size = int(cfg["hidden_size"])

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def __call__(self, x, t, y=None, dt=None, gw=None):
        return dit_apply(self.params, self.buffers, self.cfg, x, t, y=y, dt=dt, gw=gw,
                         training=self.training, rngs=self.rngs)
