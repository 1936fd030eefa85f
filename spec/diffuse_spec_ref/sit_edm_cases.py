"""Kinds ``loss`` and ``grad`` for the SiT and EDM interfaces on ``probe_mlp``.

A case builds the network from its ``param.*`` / ``buffer.*`` files, one shared
``nnx.Rngs(**rngs)``, and the interface from its ``interface`` block, then calls the
per-example loss on ``in.x`` (with ``y=in.y`` when given), eagerly. Outputs: ``out.loss``
and the intermediates of that same call (``out.t`` after any shift, ``out.n``,
``out.x_t``, ``out.target``, ``out.net_out``: SiT the network output, EDM the denoised
``D``); a ``grad`` case adds ``grad.<p>`` = d mean(loss) / d param ``p`` (``jax.grad``,
eager, the same draws).

Not exported: SiT with ``lognormal`` time, which the reference refuses with a
ValueError (see ``REFUSED``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .case import Case, split_arrays
from .interfaces import Interfaces, make_interface
from .networks.probe_mlp import init_probe_mlp, probe_mlp_apply

KINDS = ("loss", "grad")
IFACES = ("sit", "edm")

# settings the reference refuses; kept here so that the refusal itself is on record
REFUSED = [
    ({"type": "sit", "train_time_dist_type": "lognormal"},
     "SiTInterface.sample_t raises ValueError for lognormal (after drawing the time key)"),
]


class FunctionalNet:
    """``net(x, t, y=None, dt=None)`` over explicit parameter arrays (for ``jax.grad``)."""

    def __init__(self, params, buffers, rngs=None):
        self.params = params
        self.buffers = buffers
        self.rngs = rngs

    def __call__(self, x, t, y=None, dt=None):
        return probe_mlp_apply(self.params, self.buffers, x, t, y=y, dt=dt)


def network_arrays(net_cfg: dict) -> dict:
    params, buffers = init_probe_mlp(net_cfg["param_seed"], net_cfg["channels"], net_cfg["hidden"], net_cfg["freqs"])
    return {**{f"param.{k}": v for k, v in params.items()}, **{f"buffer.{k}": v for k, v in buffers.items()}}


def _loss_fn(meta, params, buffers, x, y, record=None):
    rngs = nnx.Rngs(**meta["rngs"])
    net = FunctionalNet(params, buffers, rngs)
    iface = make_interface(meta["interface"], net, rngs)
    kwargs = {} if y is None else {"y": y}
    if isinstance(iface, Interfaces):
        kwargs["record"] = record
    # (the reference's own classes, under export --reference, expose no intermediates)
    return iface(x, **kwargs)["loss"]


def compute(meta: dict, arrays: dict) -> dict:
    params = {k: jnp.asarray(v) for k, v in split_arrays(arrays, "param").items()}
    buffers = {k: jnp.asarray(v) for k, v in split_arrays(arrays, "buffer").items()}
    x = jnp.asarray(arrays["in.x"])
    y = jnp.asarray(arrays["in.y"]) if "in.y" in arrays else None
    rec = {}
    loss = _loss_fn(meta, params, buffers, x, y, rec)
    out = {"out.loss": loss, **{f"out.{k}": v for k, v in rec.items()}}
    if meta["kind"] == "grad":
        grads = jax.grad(lambda p: jnp.mean(_loss_fn(meta, p, buffers, x, y)))(params)
        out.update({f"grad.{k}": v for k, v in grads.items()})
    return {k: np.asarray(v) for k, v in out.items()}


def recompute(meta: dict, arrays: dict) -> dict | None:
    if meta.get("kind") not in KINDS:
        return None
    if meta.get("interface", {}).get("type") not in IFACES or "repa" in meta:
        return None
    if meta.get("network", {}).get("type") != "probe_mlp":
        return None
    return compute(meta, arrays)


def _case(name, kind, interface, shape, rngs, net, labels=None, x_seed=0, x_scale=1.0, description=""):
    meta = {"kind": kind, "interface": interface, "shape": list(shape), "rngs": rngs,
            "network": {"type": "probe_mlp", **net}}
    if description:
        meta["description"] = description
    assert shape[-1] == net["channels"]
    arrays = network_arrays(meta["network"])
    arrays["in.x"] = np.asarray(x_scale * jax.random.normal(jax.random.key(x_seed), tuple(shape)))
    if labels is not None:
        arrays["in.y"] = np.asarray(labels, dtype=np.int32)
        assert arrays["in.y"].shape == (shape[0],)
    arrays.update(compute(meta, arrays))
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    n3 = {"channels": 3, "hidden": 8, "freqs": 2, "param_seed": 11}
    n2 = {"channels": 2, "hidden": 6, "freqs": 3, "param_seed": -4}
    n5 = {"channels": 5, "hidden": 4, "freqs": 1, "param_seed": 2**31 - 1}
    rngs_a = {"default": 1, "time": 21, "noise": 22, "label_dropout": 23, "params": 24}
    rngs_b = {"default": -1, "time": -5, "noise": 2**31 - 1, "label_dropout": 0}
    rngs_c = {"time": 7, "noise": 8}
    return [
        # --- SiT ---
        _case("sit_uniform_grad_b3_4x4x3_labels", "grad", {"type": "sit", "train_time_dist_type": "uniform"},
              [3, 4, 4, 3], rngs_a, n3, labels=[0, 999, 1000], x_seed=101,
              description="shift sqrt(48/4096); labels incl. the null class 1000"),
        _case("sit_uniform_loss_b1_2x2x2", "loss", {"type": "sit", "train_time_dist_type": "uniform"},
              [1, 2, 2, 2], rngs_b, n2, x_seed=102, description="batch 1, no labels (null class)"),
        _case("sit_logitnormal_grad_b5_8x8x2", "grad",
              {"type": "sit", "train_time_dist_type": "logitnormal", "t_mu": 0.3, "t_sigma": 0.7},
              [5, 8, 8, 2], rngs_a, n2, labels=[3, 1, 4, 1, 5], x_seed=103, x_scale=0.5),
        _case("sit_uniform_grad_b4_seq6x3_base16", "grad",
              {"type": "sit", "train_time_dist_type": "uniform", "t_shift_base": 16},
              [4, 6, 3], rngs_c, n3, labels=[7, 7, 1000, 2], x_seed=104,
              description="rank-3 x [B, T, C]; t_shift_base 16 gives shift sqrt(18/16) > 1"),
        _case("sit_logitnormal_loss_b2_5d_noise", "loss",
              {"type": "sit", "train_time_dist_type": "logitnormal", "n_mu": -0.2, "n_sigma": 1.5,
               "t_shift_base": 36},
              [2, 2, 3, 2, 3], rngs_b, n3, x_seed=105, description="rank-5 x, shift 1 (prod 36 = base), "
              "n_mu/n_sigma set"),
        _case("sit_uniform_grad_b6_1x1x5", "grad", {"type": "sit", "train_time_dist_type": "uniform"},
              [6, 1, 1, 5], rngs_c, n5, labels=[0, 1, 2, 3, 4, 5], x_seed=106),
        # --- EDM ---
        _case("edm_lognormal_grad_b4_4x4x3_labels", "grad", {"type": "edm", "train_time_dist_type": "lognormal"},
              [4, 4, 4, 3], rngs_a, n3, labels=[10, 1000, 0, 500], x_seed=201, x_scale=0.5),
        _case("edm_lognormal_loss_b6_xs1p3", "loss",
              {"type": "edm", "train_time_dist_type": "lognormal", "x_sigma": 1.3, "t_mu": -0.5, "t_sigma": 1.4},
              [6, 3, 3, 2], rngs_b, n2, x_seed=202, x_scale=1.3),
        _case("edm_uniform_grad_b3_6x2", "grad", {"type": "edm", "train_time_dist_type": "uniform"},
              [3, 6, 2], rngs_c, n2, labels=[1, 2, 3], x_seed=203, description="rank-3 x; sigma ~ U[0,1)"),
        _case("edm_logitnormal_grad_b2_4x4x5", "grad",
              {"type": "edm", "train_time_dist_type": "logitnormal", "t_mu": 1.0, "t_sigma": 0.5,
               "n_mu": 0.05, "n_sigma": 0.9},
              [2, 4, 4, 5], rngs_a, n5, x_seed=204),
    ]
