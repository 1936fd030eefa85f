"""probe_mlp: the tiny network of the golden cases (golden-format.md, "Networks").

Settings ``channels`` C, ``hidden`` H, ``freqs`` K. Parameters ``W1 [C,H]``, ``b1 [H]``,
``Wt [2K,H]``, ``Wd [2K,H]``, ``E [1001,H]``, ``W2 [H,C]``, ``b2 [C]``; buffer
``freqs [K]``. Called as ``net(x, t, y=None, dt=None)`` on ``x`` of shape ``[B, ..., C]``::

    emb(s)  = concat(sin(s[:,None] * freqs), cos(s[:,None] * freqs))   # [B, 2K]
    cond    = emb(t) @ Wt  (+ emb(dt) @ Wd when dt is given)  + E[y]    # y = 1000 when absent
    h       = silu(x @ W1 + b1 + cond broadcast over the middle axes)   # [B, ..., H]
    out     = h @ W2 + b2                                               # [B, ..., C]
    returns (out, [h reshaped to [B, T, H]])

Initialisation (matches the parameters in the golden cases bit for bit): with
``k_i = fold_in(key(seed), i)`` (the same keys as ``split(key(seed), 7)[i]`` in
partitionable threefry), parameter ``i`` of ``W1, b1, Wt, Wd, E, W2, b2`` is
``scale * normal(k_i, shape)`` with ``scale`` 0.5 for the matrices and 0.1 for the
biases; ``freqs = exp(linspace(0, 3, K))`` in float32.

Two forms: the functional ``probe_mlp_apply(params, buffers, ...)`` and the
``ProbeMLP`` nnx module (parameters as ``nnx.Param``, so ``nnx.scan`` / ``nnx.cond``
carry them as the reference's samplers carry its network).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

NULL_LABEL = 1000
NUM_EMBED = 1001
PARAM_NAMES = ("W1", "b1", "Wt", "Wd", "E", "W2", "b2")


def _shapes(channels: int, hidden: int, freqs: int) -> dict:
    return {
        "W1": (channels, hidden),
        "b1": (hidden,),
        "Wt": (2 * freqs, hidden),
        "Wd": (2 * freqs, hidden),
        "E": (NUM_EMBED, hidden),
        "W2": (hidden, channels),
        "b2": (channels,),
    }


def init_probe_mlp(seed: int, channels: int, hidden: int, freqs: int) -> tuple[dict, dict]:
    """Return ``(params, buffers)`` as dicts of float32 numpy arrays."""
    key = jax.random.key(seed)
    params = {}
    for i, (name, shape) in enumerate(_shapes(channels, hidden, freqs).items()):
        scale = 0.1 if name.startswith("b") else 0.5
        params[name] = np.asarray(scale * jax.random.normal(jax.random.fold_in(key, i), shape))
    buffers = {"freqs": np.asarray(jnp.exp(jnp.linspace(0.0, 3.0, freqs, dtype=jnp.float32)))}
    return params, buffers


def _emb(s, freqs):
    a = s[:, None] * freqs
    return jnp.concatenate([jnp.sin(a), jnp.cos(a)], axis=-1)


def probe_mlp_apply(params, buffers, x, t, y=None, dt=None):
    """``(out, [h])`` for ``x [B, ..., C]``, ``t [B]``, optional ``y [B]`` int, ``dt [B]``."""
    x = jnp.asarray(x)
    t = jnp.asarray(t)
    B = x.shape[0]
    freqs = buffers["freqs"]
    if y is None:
        y = jnp.full((B,), NULL_LABEL, dtype=jnp.int32)
    cond = _emb(t, freqs) @ params["Wt"]
    if dt is not None:
        cond = cond + _emb(jnp.asarray(dt), freqs) @ params["Wd"]
    cond = cond + params["E"][y]
    cond = cond.reshape((B,) + (1,) * (x.ndim - 2) + cond.shape[-1:])
    h = jax.nn.silu(x @ params["W1"] + params["b1"] + cond)
    out = h @ params["W2"] + params["b2"]
    return out, [h.reshape(B, -1, h.shape[-1])]


class ProbeMLP(nnx.Module):
    """nnx form of probe_mlp; ``rngs`` (optional) is the shared ``nnx.Rngs`` the
    interfaces draw from (the reference reads ``network.rngs``). It draws nothing itself."""

    def __init__(self, params: dict, buffers: dict, rngs: nnx.Rngs | None = None):
        for name in PARAM_NAMES:
            setattr(self, name, nnx.Param(jnp.asarray(params[name])))
        self.freqs = nnx.Variable(jnp.asarray(buffers["freqs"]))
        self.rngs = rngs

    @classmethod
    def init(cls, seed, channels, hidden, freqs, rngs=None):
        p, b = init_probe_mlp(seed, channels, hidden, freqs)
        return cls(p, b, rngs)

    def param_dict(self) -> dict:
        return {n: getattr(self, n).value for n in PARAM_NAMES}

    def __call__(self, x, t, y=None, dt=None):
        return probe_mlp_apply(self.param_dict(), {"freqs": self.freqs.value}, x, t, y=y, dt=dt)
