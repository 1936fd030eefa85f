"""DiT cases: kind ``network`` (the backbone alone) and kinds ``loss`` / ``grad`` of the
SiT, EDM and MeanFlow interfaces on a ``dit`` network (incl. its label dropout).

* ``network``: ``(out, features) = dit(in.x, in.t, y=in.y, dt=in.dt, gw=in.gw)`` in
  eval-free form with ``enable_dropout`` off (no label is dropped, nothing drawn);
  outputs ``out.out`` and ``out.feature.<i>``.
* ``loss`` / ``grad``: as for probe_mlp, but the cases carry only ``out.loss`` and
  ``grad.*`` (one per ``param.*``; ``x_embedder.pe`` is a buffer and gets none).
  The backbone starts in train mode; with ``enable_dropout`` and
  ``class_dropout_prob > 0`` it draws ``uniform([B])`` from the shared ``label_dropout``
  stream at every forward made in train mode. SiT / EDM: time, noise, then the DiT's
  draw. MeanFlow: time x2, noise, the guidance forwards (eval mode: no draw), the
  condition drop, then the JVP forward, which draws only on the mixture path
  (kappa != 0), the only path that switches the network back to train mode (Q8).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .case import Case, split_arrays
from .interfaces import make_interface
from .meanflow_cases import ProbeNet, probe_arrays
from .networks.dit import FunctionalDiT, dit_apply, init_dit
from .networks.lightning_dit import FunctionalLightningDiT, init_lightning

IFACES = ("sit", "edm", "mean_flow")


def make_network(net_cfg: dict, params: dict, buffers: dict, rngs=None):
    """A functional network (params may be tracers) with train / eval modes."""
    kind = net_cfg["type"]
    if kind == "dit":
        return FunctionalDiT(net_cfg, params, buffers, rngs)
    if kind == "lightning_dit":
        return FunctionalLightningDiT(net_cfg, params, buffers, rngs)
    if kind == "probe_mlp":
        return ProbeNet(params, buffers, rngs)
    raise KeyError(f"network type {kind!r}")


def network_arrays(net_cfg: dict) -> dict:
    if net_cfg["type"] == "probe_mlp":
        return probe_arrays(net_cfg)
    init = init_lightning if net_cfg["type"] == "lightning_dit" else init_dit
    params, buffers = init(net_cfg["param_seed"], net_cfg)
    return {**{f"param.{k}": v for k, v in params.items()}, **{f"buffer.{k}": v for k, v in buffers.items()}}


def _as_jnp(d: dict) -> dict:
    return {k: jnp.asarray(v) for k, v in d.items()}


# ---------------------------------------------------------------------------
# network


def compute_network(meta: dict, arrays: dict) -> dict:
    cfg = meta["network"]
    i = _as_jnp(split_arrays(arrays, "in"))
    out, feats = dit_apply(
        _as_jnp(split_arrays(arrays, "param")), _as_jnp(split_arrays(arrays, "buffer")), cfg,
        i["x"], i["t"], y=i.get("y"), dt=i.get("dt"), gw=i.get("gw"), training=False,
    )
    res = {"out.out": np.asarray(out)}
    for j, f in enumerate(feats):
        res[f"out.feature.{j}"] = np.asarray(f)
    return res


# ---------------------------------------------------------------------------
# loss / grad


def _loss(meta, params, buffers, x, y):
    rngs = nnx.Rngs(**meta["rngs"])
    net = make_network(meta["network"], params, buffers, rngs)
    iface = make_interface(meta["interface"], net, rngs)
    kwargs = {} if y is None else {"y": y}
    return iface(x, **kwargs)["loss"]


def compute_loss(meta: dict, arrays: dict) -> dict:
    params = _as_jnp(split_arrays(arrays, "param"))
    buffers = _as_jnp(split_arrays(arrays, "buffer"))
    x = jnp.asarray(arrays["in.x"])
    y = jnp.asarray(arrays["in.y"]) if "in.y" in arrays else None
    out = {"out.loss": _loss(meta, params, buffers, x, y)}
    if meta["kind"] == "grad":
        grads = jax.grad(lambda p: jnp.mean(_loss(meta, p, buffers, x, y)))(params)
        out.update({f"grad.{k}": v for k, v in grads.items()})
    return {k: np.asarray(v) for k, v in out.items()}


def recompute(meta: dict, arrays: dict) -> dict | None:
    if meta.get("network", {}).get("type") != "dit" or "repa" in meta:
        return None
    kind = meta.get("kind")
    if kind == "network":
        return compute_network(meta, arrays)
    if kind in ("loss", "grad") and meta.get("interface", {}).get("type") in IFACES:
        return compute_loss(meta, arrays)
    return None


# ---------------------------------------------------------------------------
# fixtures


def dit_cfg(**kw) -> dict:
    """A small DiT config (8x8x4 input, patch 2 -> 16 tokens, hidden 24, depth 2). Hidden 24, not
    the reference cases' 32, so that even the fixed sin-cos position table differs from
    ../shared/golden and that set stays an independent check."""
    cfg = {
        "type": "dit", "input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 24, "depth": 2,
        "num_heads": 2, "mlp_ratio": 2.0, "continuous_time_embed": False, "freq_embed_size": 16,
        "num_classes": 10, "class_dropout_prob": 0.1, "enable_dropout": False, "take_dt": False,
        "take_gw": False, "param_seed": 0,
    }
    cfg.update(kw)
    return cfg


def _normal(seed, shape, scale=1.0):
    return np.asarray(np.float32(scale) * jax.random.normal(jax.random.key(seed), tuple(shape)))


def _network_case(name, cfg, batch, t, y, dt, gw=None, x_seed=0, description=""):
    meta = {"kind": "network", "network": cfg}
    if description:
        meta["description"] = description
    arrays = network_arrays(cfg)
    s = int(cfg["input_size"])
    arrays["in.x"] = _normal(x_seed, (batch, s, s, int(cfg["in_channels"])))
    arrays["in.t"] = np.asarray(t, dtype=np.float32)
    arrays["in.y"] = np.asarray(y, dtype=np.int32)
    arrays["in.dt"] = np.asarray(dt, dtype=np.float32)
    if gw is not None:
        arrays["in.gw"] = np.asarray(gw, dtype=np.float32)
    arrays.update(compute_network(meta, arrays))
    return Case(name, meta, arrays)


def _loss_case(name, kind, interface, cfg, batch, rngs, labels=None, x_seed=0, description=""):
    s = int(cfg["input_size"])
    shape = [batch, s, s, int(cfg["in_channels"])]
    meta = {"kind": kind, "interface": interface, "network": cfg, "rngs": rngs, "shape": shape}
    if description:
        meta["description"] = description
    arrays = network_arrays(cfg)
    arrays["in.x"] = _normal(x_seed, shape)
    if labels is not None:
        arrays["in.y"] = np.asarray(labels, dtype=np.int32)
    arrays.update(compute_loss(meta, arrays))
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    r1 = {"default": 3, "time": 71, "noise": 72, "label_dropout": 73, "params": 74, "dropout": 75}
    r2 = {"time": 81, "noise": 82, "label_dropout": 83}
    # MeanFlow needs the null class 1000 (Q10): num_classes 1000 with a null row, kept small otherwise
    mf_net = dict(hidden_size=16, num_heads=2, freq_embed_size=8, num_classes=1000, class_dropout_prob=0.5,
                  enable_dropout=True, take_dt=True)
    return [
        # --- network ---
        _network_case("dit_net_sincos_dt_b3", dit_cfg(take_dt=True, param_seed=1), 3,
                      [0.0, 0.37, 1.0], [0, 9, 10], [0.0, 0.2, 0.9], x_seed=501,
                      description="discrete (sinusoidal) time embedding, take_dt; y = 10 = K is the null row"),
        _network_case("dit_net_continuous_gw_b2", dit_cfg(continuous_time_embed=True, take_dt=True, take_gw=True,
                                                            param_seed=2, mlp_ratio=1.5), 2,
                      [0.25, 0.8], [3, 10], [0.05, 0.0], gw=[1.0, 4.0], x_seed=502,
                      description="continuous (gaussian basis) embedders for t, dt and gw; mlp_ratio 1.5"),
        _network_case("dit_net_oddfreq_heads4_patch4", dit_cfg(freq_embed_size=15, num_heads=4, patch_size=4,
                                                                 depth=3, param_seed=3), 2,
                      [0.5, 0.01], [1, 2], [0.0, 0.0], x_seed=503,
                      description="odd freq_embed_size (a zero column is appended), 4 heads, patch 4 "
                                  "(4 tokens), depth 3, no dt embedder (in.dt ignored)"),
        _network_case("dit_net_nonull_q10", dit_cfg(class_dropout_prob=0.0, param_seed=4), 2,
                      [0.3, 0.6], [4, 10], [0.0, 0.0], x_seed=504,
                      description="Q10: class_dropout_prob 0 -> the table has K rows; y = K reads out of "
                                  "range and that example is NaN"),
        # --- SiT / EDM on a DiT, label dropout in train mode ---
        _loss_case("sit_dit_dropout_grad_b4", "grad", {"type": "sit", "train_time_dist_type": "logitnormal"},
                   dit_cfg(class_dropout_prob=0.5, enable_dropout=True, param_seed=5), 4, r1,
                   labels=[1, 2, 3, 4], x_seed=505,
                   description="DiT label dropout draws uniform([B]) from label_dropout after time and noise"),
        _loss_case("sit_dit_nodropout_grad_b3_continuous", "grad",
                   {"type": "sit", "train_time_dist_type": "uniform"},
                   dit_cfg(continuous_time_embed=True, param_seed=6), 3, r2, labels=[0, 5, 10], x_seed=506,
                   description="enable_dropout off: nothing drawn by the DiT; gaussian_basis is under "
                               "stop_gradient, so its gradient is 0"),
        _loss_case("edm_dit_dropout_loss_b3", "loss", {"type": "edm", "train_time_dist_type": "lognormal"},
                   dit_cfg(class_dropout_prob=0.3, enable_dropout=True, param_seed=7), 3, r2,
                   labels=[7, 8, 9], x_seed=507, description="EDM's c_noise = log(sigma)/4 into the DiT"),
        # --- MeanFlow on a DiT: which forwards draw label dropout (Q8) ---
        _loss_case("mf_dit_mixture_grad_b4", "grad",
                   {"type": "mean_flow", "train_time_dist_type": "uniform", "guidance_scale": 0.5,
                    "guidance_mixture_ratio": 0.3, "fm_portion": 0.5, "cond_drop_ratio": 0.25},
                   dit_cfg(param_seed=8, **mf_net), 4, r1, labels=[3, 1000, 7, 999], x_seed=508,
                   description="mixture path: guidance forwards in eval mode (no draw), back to train "
                               "mode, so the JVP forward draws label dropout after the condition drop"),
        _loss_case("mf_dit_cfgonly_grad_b4", "grad",
                   {"type": "mean_flow", "train_time_dist_type": "logitnormal", "guidance_scale": 1.5,
                    "guidance_mixture_ratio": 0.0, "fm_portion": 0.25, "cond_drop_ratio": 0.5},
                   dit_cfg(param_seed=9, **mf_net), 4, r2, labels=[3, 1000, 7, 999], x_seed=509,
                   description="Q8: CFG-only leaves the DiT in eval mode; the JVP forward draws nothing"),
        _loss_case("mf_dit_noguidance_grad_b3", "grad",
                   {"type": "mean_flow", "train_time_dist_type": "uniform", "guidance_scale": 1.0,
                    "guidance_mixture_ratio": 0.0, "fm_portion": 0.0, "cond_drop_ratio": 0.0, "norm_power": 0.0},
                   dit_cfg(param_seed=10, **mf_net), 3, r1, labels=[1, 2, 3], x_seed=510,
                   description="Q8: no guidance still switches to eval mode: no label dropout at all"),
        _loss_case("mf_dit_k10_q10_loss_b4", "loss",
                   {"type": "mean_flow", "train_time_dist_type": "uniform", "guidance_scale": 2.0,
                    "guidance_mixture_ratio": 0.0, "guidance_t_max": 0.7, "fm_portion": 0.0,
                    "cond_drop_ratio": 0.0},
                   dit_cfg(hidden_size=16, num_heads=2, freq_embed_size=8, take_dt=True, param_seed=12), 4, r2,
                   labels=[1, 2, 3, 4], x_seed=511,
                   description="Q10: num_classes 10, but the null class is hard-coded 1000: the "
                               "unconditional pass reads past the table (NaN), so exactly the examples "
                               "with t <= guidance_t_max = 0.7 get a NaN loss"),
    ]
