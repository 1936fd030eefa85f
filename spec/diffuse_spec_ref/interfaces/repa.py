"""REPA: the reference's ``DiT_REPA`` wrapper (diffuse_nnx ``interfaces/repa.py``).

Settings: ``feature_dim``, ``repa_loss_weight``, ``repa_depth``, ``proj_dim``.

* Projector ``projector.layers.{0,2,4}``: ``Linear(hidden, proj) - silu - Linear(proj,
  proj) - silu - Linear(proj, feature_dim)`` (an ``nnx.Sequential``, so the Linears sit
  at indices 0, 2, 4; kernels ``[in, out]``). The reference builds them with
  ``nnx.Linear``'s defaults (lecun-normal kernel, zero bias) from the *network's*
  ``nnx.Rngs``, i.e. three draws of its ``params`` stream at wrapper construction
  (``init_projector`` does the same; the golden projectors match it bit for bit).
  ``hidden`` is the network's hidden size (the features' last axis).
* loss(x, x_feature, *args, **kw): ``(diffusion_loss, _, feats) =
  interface(x, *args, return_aux=True, **kw)`` (all the interface's draws happen
  there); ``f = feats[repa_depth - 1]`` ``[N, T, D]``; ``proj =
  projector(f.reshape(-1, D)).reshape(N, T, -1)``; both ``x_feature`` and ``proj`` are
  divided by their ``jnp.linalg.norm`` over the last axis; ``cos = sum(a * b, -1)``;
  ``repa_loss = mean_flat(-cos)`` (mean over T); ``loss = diffusion_loss +
  repa_loss_weight * repa_loss``. All per example.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

PROJECTOR_LAYERS = (0, 2, 4)


def init_projector(rngs: nnx.Rngs, hidden: int, proj_dim: int, feature_dim: int) -> dict:
    """The reference's projector init: three ``nnx.Linear`` built from ``rngs`` (its
    ``params`` stream) in order. Returns ``{'layers.0.kernel': ..., ...}``."""
    dims = [(hidden, proj_dim), (proj_dim, proj_dim), (proj_dim, feature_dim)]
    out = {}
    for i, (a, b) in zip(PROJECTOR_LAYERS, dims):
        lin = nnx.Linear(a, b, rngs=rngs)
        out[f"layers.{i}.kernel"] = lin.kernel.value
        out[f"layers.{i}.bias"] = lin.bias.value
    return out


def _linear(x, k, b):
    y = jax.lax.dot_general(x, k, (((x.ndim - 1,), (0,)), ((), ())))
    return y + jnp.reshape(b, (1,) * (y.ndim - 1) + (-1,))


class REPA(nnx.Module):
    """Wraps an interface; ``projector`` holds ``layers.<i>.{kernel,bias}`` as nnx.Param
    (paths ``projector.layers.<i>.*`` as in the golden cases)."""

    def __init__(self, interface, *, feature_dim: int, repa_loss_weight: float, repa_depth: int,
                 proj_dim: int, projector: dict | None = None, hidden_size: int | None = None):
        self.interface = interface
        self.repa_depth = int(repa_depth)
        self.repa_loss_weight = repa_loss_weight
        if projector is None:
            if hidden_size is None:
                hidden_size = int(interface.network.hidden_size)
            projector = init_projector(interface.network.rngs, hidden_size, int(proj_dim), int(feature_dim))
        self.projector = {k: nnx.Param(jnp.asarray(v)) for k, v in sorted(projector.items())}

    def project(self, f):
        p = {k: v.value for k, v in self.projector.items()}
        h = f
        for j, i in enumerate(PROJECTOR_LAYERS):
            h = _linear(h, p[f"layers.{i}.kernel"], p[f"layers.{i}.bias"])
            if j < len(PROJECTOR_LAYERS) - 1:
                h = jax.nn.silu(h)
        return h

    def loss(self, x, x_feature, *args, **kwargs):
        diffusion_loss, _, feats = self.interface(x, *args, return_aux=True, **kwargs)
        f = feats[self.repa_depth - 1]
        N, T, D = f.shape
        proj = self.project(f.reshape(-1, D)).reshape(N, T, -1)
        xf = x_feature / jnp.linalg.norm(x_feature, axis=-1, keepdims=True)
        pf = proj / jnp.linalg.norm(proj, axis=-1, keepdims=True)
        cos = jnp.sum(xf * pf, axis=-1)
        repa_loss = self.interface.mean_flat(-cos)
        return diffusion_loss, repa_loss

    def pred(self, *args, **kwargs):
        return self.interface.pred(*args, **kwargs)

    def score(self, *args, **kwargs):
        return self.interface.score(*args, **kwargs)

    def __call__(self, x, x_feature, *args, **kwargs):
        diffusion_loss, repa_loss = self.loss(x, x_feature, *args, **kwargs)
        return {
            "loss": diffusion_loss + self.repa_loss_weight * repa_loss,
            "diffusion_loss": diffusion_loss,
            "repa_loss": repa_loss,
        }
