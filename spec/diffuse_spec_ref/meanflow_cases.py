"""MeanFlow cases on ``probe_mlp``: kinds ``loss``, ``grad``, ``pred`` and ``sampler``
(``euler_jump``).

* ``loss`` / ``grad``: the network from ``param.*`` / ``buffer.*``, one shared
  ``nnx.Rngs(**rngs)``, ``MeanFlowInterface`` from ``interface``; the per-example loss
  of ``in.x`` (``y=in.y`` when given), eagerly. Outputs ``out.loss`` and that call's
  ``out.t``, ``out.r``, ``out.n``, ``out.x_t``, ``out.target`` (the stop-gradient JVP
  target), ``out.net_out`` (u); ``grad.<p>`` = d mean(loss) / d p by ``jax.grad``
  (eager; fresh streams with the same seeds, so the same draws).
* ``pred``: ``out.pred = pred(in.x_t, in.t, in.r, y=in.y)``, ``out.score =
  score(in.x_t, in.t, y=in.y)`` (Q3: r = 0 and a division by t^2).
* ``sampler``: ``euler_jump`` (see ``eulerjump.py``), ``out.timegrid`` and
  ``out.x_final``; ``guidance_scale`` is recorded and ignored (Q14).

Draw order of one MeanFlow loss: ``time`` twice (t, then r), ``noise`` once,
``label_dropout`` once (the condition drop); the guidance forwards draw nothing on
probe_mlp (eval mode is irrelevant to it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .case import Case, split_arrays
from .eulerjump import euler_jump_sample
from .interfaces import make_interface
from .networks.probe_mlp import ProbeMLP, init_probe_mlp, probe_mlp_apply

KINDS = ("loss", "grad", "pred", "sampler")

# settings the reference refuses; kept here so that the refusal itself is on record
REFUSED = [
    ({"type": "mean_flow", "train_time_dist_type": "lognormal"},
     "MeanFlow uses SiT's sample_t, which raises ValueError for lognormal (after drawing the "
     "first time key)"),
]


class ProbeNet:
    """``probe_mlp`` over an explicit parameter dict (tracers allowed, for ``jax.grad``),
    with the reference's ``train()`` / ``eval()`` (no effect on probe_mlp)."""

    def __init__(self, params, buffers, rngs=None):
        self.params = params
        self.buffers = buffers
        self.rngs = rngs
        self.training = True
        self.hidden_size = int(params["W1"].shape[-1])

    def train(self):
        self.training = True

    def eval(self):
        self.training = False

    def __call__(self, x, t, y=None, dt=None):
        return probe_mlp_apply(self.params, self.buffers, x, t, y=y, dt=dt)


def probe_arrays(net_cfg: dict) -> dict:
    params, buffers = init_probe_mlp(net_cfg["param_seed"], net_cfg["channels"], net_cfg["hidden"], net_cfg["freqs"])
    return {**{f"param.{k}": v for k, v in params.items()}, **{f"buffer.{k}": v for k, v in buffers.items()}}


def _as_jnp(d: dict) -> dict:
    return {k: jnp.asarray(v) for k, v in d.items()}


def _loss(meta, params, buffers, x, y, record=None):
    rngs = nnx.Rngs(**meta["rngs"])
    net = ProbeNet(params, buffers, rngs)
    iface = make_interface(meta["interface"], net, rngs)
    kwargs = {} if y is None else {"y": y}
    return iface(x, record=record, **kwargs)["loss"]


def compute_loss(meta: dict, arrays: dict) -> dict:
    params = _as_jnp(split_arrays(arrays, "param"))
    buffers = _as_jnp(split_arrays(arrays, "buffer"))
    x = jnp.asarray(arrays["in.x"])
    y = jnp.asarray(arrays["in.y"]) if "in.y" in arrays else None
    rec = {}
    loss = _loss(meta, params, buffers, x, y, rec)
    out = {"out.loss": loss, **{f"out.{k}": v for k, v in rec.items()}}
    if meta["kind"] == "grad":
        grads = jax.grad(lambda p: jnp.mean(_loss(meta, p, buffers, x, y)))(params)
        out.update({f"grad.{k}": v for k, v in grads.items()})
    return {k: np.asarray(v) for k, v in out.items()}


def compute_pred(meta: dict, arrays: dict) -> dict:
    net = ProbeNet(_as_jnp(split_arrays(arrays, "param")), _as_jnp(split_arrays(arrays, "buffer")))
    iface = make_interface(meta["interface"], net, nnx.Rngs(0))
    x_t, t, r = (jnp.asarray(arrays[k]) for k in ("in.x_t", "in.t", "in.r"))
    kwargs = {"y": jnp.asarray(arrays["in.y"])} if "in.y" in arrays else {}
    return {
        "out.pred": np.asarray(iface.pred(x_t, t, r, **kwargs)),
        "out.score": np.asarray(iface.score(x_t, t, **kwargs)),
    }


def compute_sampler(meta: dict, arrays: dict) -> dict:
    net = ProbeMLP(split_arrays(arrays, "param"), split_arrays(arrays, "buffer"))
    iface = make_interface(meta["interface"], net, nnx.Rngs(0))
    s = dict(meta["sampler"])
    assert s.pop("type") == "euler_jump"
    kwargs = {"y": jnp.asarray(arrays["in.y"])} if "in.y" in arrays else {}
    grid, x_final = euler_jump_sample(
        iface, arrays["in.x"], s.pop("num_sampling_steps"), rng_seed=meta.get("rng_seed", 0),
        guidance_scale=meta.get("guidance_scale", 1.0), **s, **kwargs,
    )
    return {"out.timegrid": np.asarray(grid), "out.x_final": np.asarray(x_final)}


def recompute(meta: dict, arrays: dict) -> dict | None:
    kind = meta.get("kind")
    if kind not in KINDS or "repa" in meta:
        return None
    if meta.get("network", {}).get("type") != "probe_mlp":
        return None
    if meta.get("interface", {}).get("type") != "mean_flow":
        return None
    if kind == "sampler":
        if meta.get("sampler", {}).get("type") != "euler_jump":
            return None
        return compute_sampler(meta, arrays)
    if kind == "pred":
        return compute_pred(meta, arrays)
    return compute_loss(meta, arrays)


# ---------------------------------------------------------------------------
# fixtures

def _normal(seed, shape, scale=1.0):
    return np.asarray(np.float32(scale) * jax.random.normal(jax.random.key(seed), tuple(shape)))


def _meta(kind, interface, net, **extra):
    meta = {"kind": kind, "interface": {"type": "mean_flow", **interface}, "network": {"type": "probe_mlp", **net}}
    meta.update(extra)
    return meta


def _loss_case(name, kind, interface, shape, rngs, net, labels=None, x_seed=0, x_scale=1.0, description=""):
    meta = _meta(kind, interface, net, shape=list(shape), rngs=rngs)
    if description:
        meta["description"] = description
    assert shape[-1] == net["channels"]
    arrays = probe_arrays(meta["network"])
    arrays["in.x"] = _normal(x_seed, shape, x_scale)
    if labels is not None:
        arrays["in.y"] = np.asarray(labels, dtype=np.int32)
        assert arrays["in.y"].shape == (shape[0],)
    arrays.update(compute_loss(meta, arrays))
    return Case(name, meta, arrays)


def _pred_case(name, interface, shape, t, r, y, net, x_seed, description=""):
    meta = _meta("pred", interface, net)
    if description:
        meta["description"] = description
    arrays = probe_arrays(meta["network"])
    arrays["in.x_t"] = _normal(x_seed, shape)
    arrays["in.t"] = np.asarray(t, dtype=np.float32)
    arrays["in.r"] = np.asarray(r, dtype=np.float32)
    if y is not None:
        arrays["in.y"] = np.asarray(y, dtype=np.int32)
    arrays.update(compute_pred(meta, arrays))
    return Case(name, meta, arrays)


def _sampler_case(name, sampler, shape, net, y=None, guidance_scale=1.0, rng_seed=0, x_seed=0, description=""):
    meta = _meta("sampler", {"train_time_dist_type": "uniform"}, net,
                 sampler={"type": "euler_jump", **sampler}, rng_seed=rng_seed, guidance_scale=guidance_scale)
    if description:
        meta["description"] = description
    arrays = probe_arrays(meta["network"])
    arrays["in.x"] = _normal(x_seed, shape)
    if y is not None:
        arrays["in.y"] = np.asarray(y, dtype=np.int32)
    arrays.update(compute_sampler(meta, arrays))
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    n3 = {"channels": 3, "hidden": 8, "freqs": 2, "param_seed": 13}
    n4 = {"channels": 4, "hidden": 6, "freqs": 3, "param_seed": -13}
    n2 = {"channels": 2, "hidden": 5, "freqs": 1, "param_seed": 2**31 - 2}
    ra = {"default": 1, "time": 61, "noise": 62, "label_dropout": 63, "params": 64}
    rb = {"time": -7, "noise": 2**31 - 1, "label_dropout": 0}
    rc = {"time": 5, "noise": 6, "label_dropout": 7}
    lab4 = [2, 1000, 7, 999]
    lab6 = [0, 1, 2, 3, 4, 5]
    return [
        # --- loss / grad: guidance paths x fm_portion x cond_drop x norm_power ---
        _loss_case("mf_defaults_grad_b4_4x4x3", "grad", {"train_time_dist_type": "uniform"}, [4, 4, 4, 3], ra, n3,
                   labels=lab4, x_seed=401,
                   description="all defaults: w 1, kappa 0.5 (mixture path), fm 0.75, drop 0.5, eps 1e-3, power 1"),
        _loss_case("mf_noguidance_grad_b6_fm0_drop0_pow0", "grad",
                   {"train_time_dist_type": "logitnormal", "t_mu": -0.4, "guidance_scale": 1.0,
                    "guidance_mixture_ratio": 0.0, "fm_portion": 0.0, "cond_drop_ratio": 0.0, "norm_power": 0.0},
                   [6, 3, 3, 3], rb, n3, labels=lab6, x_seed=402,
                   description="w 1 and kappa 0: v = n - x kept, no guidance forward; every r < t; "
                               "no drop; power 0: plain sum loss"),
        _loss_case("mf_cfgonly_grad_b5_fm0p25_drop0p3", "grad",
                   {"train_time_dist_type": "logitnormal", "t_mu": 0.2, "t_sigma": 0.8, "guidance_scale": 2.5,
                    "guidance_mixture_ratio": 0.0, "guidance_t_min": 0.2, "guidance_t_max": 0.8,
                    "fm_portion": 0.25, "cond_drop_ratio": 0.3, "norm_eps": 0.01},
                   [5, 4, 4, 4], ra, n4, labels=[9, 8, 1000, 6, 5], x_seed=403,
                   description="CFG only (kappa 0): v = v_unc + w (v - v_unc) inside [0.2, 0.8]; "
                               "int(5 * 0.25) = 1 example with r = t"),
        _loss_case("mf_mixture_grad_b4_fm1_drop0p9", "grad",
                   {"train_time_dist_type": "uniform", "guidance_scale": 0.4, "guidance_mixture_ratio": 0.3,
                    "guidance_t_max": 0.75, "fm_portion": 1.0, "cond_drop_ratio": 0.9, "norm_eps": 0.5,
                    "norm_power": 0.5},
                   [4, 2, 2, 3], rc, n3, labels=lab4, x_seed=404,
                   description="mixture w v + (1 - w - kappa) v_unc + kappa v_c; fm 1: r = t everywhere, "
                               "target = v; drop 0.9 (Q7: a prefix of the batch); power 0.5"),
        _loss_case("mf_mixture_grad_b8_fm0p75_pow1", "grad",
                   {"train_time_dist_type": "logitnormal", "t_mu": -0.4, "guidance_scale": 0.2,
                    "guidance_mixture_ratio": 0.92, "guidance_t_max": 0.75, "fm_portion": 0.75,
                    "cond_drop_ratio": 0.1, "norm_eps": 1.0},
                   [8, 2, 2, 2], ra, n2, labels=[1, 2, 3, 4, 1000, 5, 6, 7], x_seed=405,
                   description="the reference's ImageNet MeanFlow settings on a tiny net"),
        _loss_case("mf_nolabels_loss_b3_seq5x4", "loss",
                   {"train_time_dist_type": "uniform", "guidance_scale": 1.5, "guidance_mixture_ratio": 0.0,
                    "fm_portion": 0.5, "cond_drop_ratio": 0.7},
                   [3, 5, 4], rb, n4, x_seed=406,
                   description="rank-3 x [B, T, C]; no labels: y and neg_y are both the null class 1000"),
        _loss_case("mf_b1_loss_cfg_interval_empty", "loss",
                   {"train_time_dist_type": "uniform", "guidance_scale": 3.0, "guidance_mixture_ratio": 0.0,
                    "guidance_t_min": 0.999, "guidance_t_max": 1.0, "fm_portion": 0.75, "cond_drop_ratio": 0.0},
                   [1, 3, 3, 2], rc, n2, labels=[4], x_seed=407,
                   description="batch 1: int(1 * 0.75) = 0, so r < t; guidance interval excludes t, v kept"),
        # --- pred / score ---
        _pred_case("mf_pred_b6_labels", {"train_time_dist_type": "uniform"}, [6, 3, 3, 3],
                   [0.05, 0.2, 0.5, 0.7, 0.9, 1.0], [0.0, 0.2, 0.1, 0.69, 0.0, 0.5], [0, 1000, 3, 4, 999, 6],
                   n3, x_seed=408, description="pred at (t, r) incl. r = t (dt 0); score at r = 0 over t^2 (Q3)"),
        _pred_case("mf_pred_t0_q12_nolabels", {"train_time_dist_type": "uniform"}, [3, 4, 4],
                   [0.0, 0.4, 0.8], [0.0, 0.1, 0.8], None, n4, x_seed=409,
                   description="t = 0: score divides by t^2 = 0 (inf/NaN); rank-3 x_t; null labels"),
        # --- euler_jump ---
        _sampler_case("mf_eulerjump_1_labels", {"num_sampling_steps": 1, "sampling_time_dist": "uniform"},
                      [3, 4, 4, 3], n3, y=[1, 1000, 2], x_seed=410,
                      description="one jump from t = 1 to 0 (last step only, eager)"),
        _sampler_case("mf_eulerjump_3_cfg4_q14", {"num_sampling_steps": 3, "sampling_time_dist": "uniform"},
                      [3, 4, 4, 3], n3, y=[1, 1000, 2], guidance_scale=4.0, x_seed=410,
                      description="Q14: guidance_scale 4 is ignored; equals the unguided 3-step run"),
        _sampler_case("mf_eulerjump_3_unguided", {"num_sampling_steps": 3, "sampling_time_dist": "uniform"},
                      [3, 4, 4, 3], n3, y=[1, 1000, 2], x_seed=410, description="reference for the Q14 case"),
        _sampler_case("mf_eulerjump_5_shift_start0p8", {
            "num_sampling_steps": 5, "sampling_time_dist": "uniform",
            "sampling_time_kwargs": {"t_start": 0.8, "t_end": 0.0, "t_shift_cur": 16384}},
            [2, 3, 4], n4, x_seed=411, rng_seed=7,
            description="shifted grid (s = 2), t_start 0.8 (x starts at 0.8 x_init), rank-3, no labels"),
    ]
