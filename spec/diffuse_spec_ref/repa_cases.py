"""REPA cases: kinds ``loss`` / ``grad`` with a ``repa`` block (any interface, any network).

The network comes from the ``param.*`` / ``buffer.*`` files other than
``param.projector.*``, which are the REPA projector's layers (``layers.{0,2,4}``).
The wrapper calls the interface's loss with ``return_aux=True`` (every draw of the
interface and the network happens there, in that interface's order), projects
``features[repa_depth - 1]`` and compares with ``in.x_feature`` (``[B, T,
feature_dim]``). Outputs ``out.loss``, ``out.diffusion_loss``, ``out.repa_loss`` (per
example) and, for ``grad``, ``grad.<p>`` for every ``param.*`` incl. the projector's.

Fixture projectors are built as the reference builds them: ``nnx.Linear`` defaults
drawn from the ``params`` stream of ``nnx.Rngs(params=rngs["params"])`` (the golden
projectors match this bit for bit, the network having drawn nothing from that stream).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .case import Case, split_arrays
from .dit_cases import dit_cfg, make_network, network_arrays
from .interfaces import make_interface
from .interfaces.repa import REPA, init_projector

PROJ = "projector."


def _split(params: dict):
    net = {k: v for k, v in params.items() if not k.startswith(PROJ)}
    proj = {k[len(PROJ):]: v for k, v in params.items() if k.startswith(PROJ)}
    return net, proj


def _outputs(meta, params, buffers, x, x_feature, y):
    rngs = nnx.Rngs(**meta["rngs"])
    net_p, proj_p = _split(params)
    net = make_network(meta["network"], net_p, buffers, rngs)
    iface = make_interface(meta["interface"], net, rngs)
    wrapper = REPA(iface, projector=proj_p, **meta["repa"])
    kwargs = {} if y is None else {"y": y}
    return wrapper(x, x_feature, **kwargs)


def compute(meta: dict, arrays: dict) -> dict:
    params = {k: jnp.asarray(v) for k, v in split_arrays(arrays, "param").items()}
    buffers = {k: jnp.asarray(v) for k, v in split_arrays(arrays, "buffer").items()}
    x = jnp.asarray(arrays["in.x"])
    xf = jnp.asarray(arrays["in.x_feature"])
    y = jnp.asarray(arrays["in.y"]) if "in.y" in arrays else None
    o = _outputs(meta, params, buffers, x, xf, y)
    out = {f"out.{k}": v for k, v in o.items()}
    if meta["kind"] == "grad":
        grads = jax.grad(lambda p: jnp.mean(_outputs(meta, p, buffers, x, xf, y)["loss"]))(params)
        out.update({f"grad.{k}": v for k, v in grads.items()})
    return {k: np.asarray(v) for k, v in out.items()}


def recompute(meta: dict, arrays: dict) -> dict | None:
    if "repa" not in meta or meta.get("kind") not in ("loss", "grad"):
        return None
    return compute(meta, arrays)


# ---------------------------------------------------------------------------
# fixtures


def _tokens(net_cfg: dict, shape) -> tuple[int, int]:
    """(T, hidden) of the network's features for an input of ``shape``."""
    if net_cfg["type"] in ("dit", "lightning_dit"):
        g = int(net_cfg["input_size"]) // int(net_cfg["patch_size"])
        return g * g, int(net_cfg["hidden_size"])
    T = int(np.prod(shape[1:-1]))
    return T, int(net_cfg["hidden"])


def _case(name, kind, interface, net_cfg, shape, rngs, repa, labels=None, x_seed=0, description=""):
    meta = {"kind": kind, "interface": interface, "network": net_cfg, "rngs": rngs, "shape": list(shape),
            "repa": repa}
    if description:
        meta["description"] = description
    arrays = network_arrays(net_cfg)
    T, hidden = _tokens(net_cfg, shape)
    proj = init_projector(nnx.Rngs(params=rngs["params"]), hidden, repa["proj_dim"], repa["feature_dim"])
    arrays.update({f"param.{PROJ}{k}": np.asarray(v) for k, v in proj.items()})
    arrays["in.x"] = np.asarray(jax.random.normal(jax.random.key(x_seed), tuple(shape)))
    arrays["in.x_feature"] = np.asarray(
        jax.random.normal(jax.random.key(x_seed + 1), (shape[0], T, repa["feature_dim"]))
    )
    if labels is not None:
        arrays["in.y"] = np.asarray(labels, dtype=np.int32)
    arrays.update(compute(meta, arrays))
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    n4 = {"type": "probe_mlp", "channels": 4, "hidden": 12, "freqs": 2, "param_seed": 31}
    r1 = {"default": 1, "time": 91, "noise": 92, "label_dropout": 93, "params": 94}
    r2 = {"time": 95, "noise": 96, "label_dropout": 97, "params": -98}
    return [
        _case("repa_sit_probe_grad_b3_w0p5", "grad", {"type": "sit", "train_time_dist_type": "logitnormal"},
              n4, [3, 4, 4, 4], r1, {"feature_dim": 6, "proj_dim": 10, "repa_depth": 1, "repa_loss_weight": 0.5},
              labels=[1, 2, 1000], x_seed=601),
        _case("repa_edm_probe_grad_b2_nolabels", "grad", {"type": "edm", "train_time_dist_type": "lognormal"},
              n4, [2, 3, 3, 4], r2, {"feature_dim": 5, "proj_dim": 7, "repa_depth": 1, "repa_loss_weight": 2.0},
              x_seed=602, description="no labels: the network gets the null class"),
        _case("repa_meanflow_probe_grad_b4", "grad",
              {"type": "mean_flow", "train_time_dist_type": "uniform", "guidance_scale": 0.6,
               "guidance_mixture_ratio": 0.2, "fm_portion": 0.5, "cond_drop_ratio": 0.4},
              n4, [4, 2, 2, 4], r1, {"feature_dim": 4, "proj_dim": 8, "repa_depth": 1, "repa_loss_weight": 1.0},
              labels=[5, 6, 7, 8], x_seed=603,
              description="MeanFlow's features are the aux output of its JVP forward"),
        _case("repa_sit_dit_depth2_grad_b2", "grad", {"type": "sit", "train_time_dist_type": "uniform"},
              dit_cfg(hidden_size=16, num_heads=2, freq_embed_size=8, class_dropout_prob=0.5, enable_dropout=True,
                      param_seed=11),
              [2, 8, 8, 4], r2, {"feature_dim": 6, "proj_dim": 12, "repa_depth": 2, "repa_loss_weight": 0.25},
              labels=[3, 9], x_seed=604,
              description="DiT, features of block 2 (repa_depth 2), label dropout drawn in train mode"),
    ]
