"""sCT / sCD cases on ``probe_mlp``: kinds ``loss``, ``grad`` and ``pred``.

The reference leaves sCT / sCD empty, so these cases pin the project's own specification
(``interfaces/consistency.py``; the Rust ``src/interfaces/{trigflow,sct,scd}.rs``). Layout,
beyond golden-format.md:

* ``interface``: ``{"type": "sct" | "scd", ...}`` with the settings of
  ``sCTInterface`` / ``sCDInterface`` (absent keys take the paper's defaults listed there);
* ``step`` (top level; loss / grad): the training step handed to ``loss(x, step=...)``, which
  drives the tangent warm-up ``r = min(1, step / tangent_warmup_steps)``;
* the interface's log-variance head: ``param.logvar.W [2K, 1]``, ``param.logvar.b [1]``
  (trainable: a ``grad`` case has ``grad.logvar.W``, ``grad.logvar.b``) and
  ``buffer.logvar.freqs [K]``;
* sCD: ``teacher: {"interface": {"type": "sit" | "edm" | "mean_flow" | "trigflow", ...},
  "network": {"type": "probe_mlp", ...}}`` and the teacher's arrays, all as buffers (it is
  frozen): ``buffer.teacher.<W1|b1|Wt|Wd|E|W2|b2|freqs>``.

``loss`` / ``grad``: the student network from ``param.*`` (without ``logvar.*``) and
``buffer.freqs``, one shared ``nnx.Rngs(**rngs)``, the interface, and the per-example loss
of ``in.x`` (``y=in.y`` when given) at ``step``. Outputs ``out.loss``, ``out.t`` (TrigFlow
time), ``out.n``, ``out.x_t``, ``out.target`` (``F- + g``), ``out.net_out`` (``F``);
``grad.*`` = d mean(loss) / d param for the network and the head (``jax.grad``, eager, the
same draws). Draws: ``time`` once, then ``noise`` once.

``pred``: ``out.pred = f(in.x_t, in.t, y=in.y)``, the consistency function (no
``out.score``: the interfaces refuse it).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .case import Case, split_arrays
from .interfaces.consistency import TrigFlowTeacher, sCDInterface, sCTInterface
from .networks.probe_mlp import init_probe_mlp, probe_mlp_apply

KINDS = ("loss", "grad", "pred")
IFACES = {"sct": sCTInterface, "scd": sCDInterface}
HEAD = "logvar."
TEACHER = "teacher."


class _Net:
    """``probe_mlp`` over explicit arrays (tracers allowed, for ``jax.grad``)."""

    def __init__(self, params, buffers, rngs=None):
        self.params = params
        self.buffers = buffers
        self.rngs = rngs

    def __call__(self, x, t, y=None, dt=None):
        return probe_mlp_apply(self.params, self.buffers, x, t, y=y, dt=dt)


def _jnp(d):
    return {k: jnp.asarray(v) for k, v in d.items()}


def _build(meta, params, buffers, rngs):
    """The interface of a case over ``params`` (network + ``logvar.*``) and ``buffers``."""
    net = _Net({k: v for k, v in params.items() if not k.startswith(HEAD)},
               {"freqs": buffers["freqs"]}, rngs)
    cfg = dict(meta["interface"])
    kind = cfg.pop("type")
    cfg.pop("description", None)
    head = {"W": params["logvar.W"], "b": params["logvar.b"]}
    kw = dict(logvar=head, logvar_freqs=buffers["logvar.freqs"], rngs=rngs)
    if kind == "scd":
        tb = {k[len(TEACHER):]: v for k, v in buffers.items() if k.startswith(TEACHER)}
        tnet = _Net({k: v for k, v in tb.items() if k != "freqs"}, {"freqs": tb["freqs"]})
        tmeta = meta["teacher"]
        kw["teacher"] = TrigFlowTeacher(tmeta["interface"]["type"], tmeta["interface"], tnet)
    return IFACES[kind](net, **cfg, **kw)


def _loss(meta, params, buffers, x, y, record=None):
    rngs = nnx.Rngs(**meta["rngs"])
    iface = _build(meta, params, buffers, rngs)
    kwargs = {} if y is None else {"y": y}
    return iface(x, step=meta.get("step", 0), record=record, **kwargs)["loss"]


def compute_loss(meta: dict, arrays: dict) -> dict:
    params = _jnp(split_arrays(arrays, "param"))
    buffers = _jnp(split_arrays(arrays, "buffer"))
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
    iface = _build(meta, _jnp(split_arrays(arrays, "param")), _jnp(split_arrays(arrays, "buffer")), nnx.Rngs(0))
    kwargs = {"y": jnp.asarray(arrays["in.y"])} if "in.y" in arrays else {}
    return {"out.pred": np.asarray(iface.pred(jnp.asarray(arrays["in.x_t"]), jnp.asarray(arrays["in.t"]), **kwargs))}


def recompute(meta: dict, arrays: dict) -> dict | None:
    if meta.get("kind") not in KINDS or meta.get("interface", {}).get("type") not in IFACES:
        return None
    if meta.get("network", {}).get("type") != "probe_mlp":
        return None
    if meta["kind"] == "pred":
        return compute_pred(meta, arrays)
    return compute_loss(meta, arrays)


# ---------------------------------------------------------------------------
# fixtures

def _normal(seed, shape, scale=1.0):
    return np.asarray(np.float32(scale) * jax.random.normal(jax.random.key(seed), tuple(shape)))


def _probe(net_cfg: dict, prefix: str, role_params: str) -> dict:
    p, b = init_probe_mlp(net_cfg["param_seed"], net_cfg["channels"], net_cfg["hidden"], net_cfg["freqs"])
    return {**{f"{role_params}.{prefix}{k}": v for k, v in p.items()},
            **{f"buffer.{prefix}{k}": v for k, v in b.items()}}


def _head(seed: int, k: int) -> dict:
    """A non-trivial log-variance head (zeros would hide the weighting's gradient path)."""
    return {
        "param.logvar.W": _normal(seed, (2 * k, 1), 0.3),
        "param.logvar.b": np.asarray([0.2], dtype=np.float32),
        "buffer.logvar.freqs": np.asarray(jnp.exp(jnp.linspace(0.0, 3.0, k, dtype=jnp.float32))),
    }


def _arrays(meta, head_seed, head_k):
    arrays = _probe(meta["network"], "", "param")
    arrays.update(_head(head_seed, head_k))
    if "teacher" in meta:
        arrays.update(_probe(meta["teacher"]["network"], TEACHER, "buffer"))
    return arrays


def _loss_case(name, kind, interface, shape, rngs, net, step=0, labels=None, teacher=None, x_seed=0,
               x_scale=0.5, head_k=4, description=""):
    meta = {"kind": kind, "interface": interface, "network": {"type": "probe_mlp", **net},
            "shape": list(shape), "rngs": rngs, "step": step}
    if teacher is not None:
        meta["teacher"] = teacher
    if description:
        meta["description"] = description
    arrays = _arrays(meta, x_seed + 1000, head_k)
    arrays["in.x"] = _normal(x_seed, shape, x_scale)
    if labels is not None:
        arrays["in.y"] = np.asarray(labels, dtype=np.int32)
    arrays.update(compute_loss(meta, arrays))
    return Case(name, meta, arrays)


def _pred_case(name, interface, shape, t, y, net, x_seed, head_k=3, description=""):
    meta = {"kind": "pred", "interface": interface, "network": {"type": "probe_mlp", **net}}
    if description:
        meta["description"] = description
    arrays = _arrays(meta, x_seed + 1000, head_k)
    arrays["in.x_t"] = _normal(x_seed, shape)
    arrays["in.t"] = np.asarray(t, dtype=np.float32)
    if y is not None:
        arrays["in.y"] = np.asarray(y, dtype=np.int32)
    arrays.update(compute_pred(meta, arrays))
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    n3 = {"channels": 3, "hidden": 8, "freqs": 2, "param_seed": 91}
    n4 = {"channels": 4, "hidden": 6, "freqs": 3, "param_seed": -91}
    n2 = {"channels": 2, "hidden": 5, "freqs": 2, "param_seed": 92}
    t3 = {"channels": 3, "hidden": 7, "freqs": 2, "param_seed": 93}
    t4 = {"channels": 4, "hidden": 5, "freqs": 3, "param_seed": 94}
    ra = {"default": 1, "time": 71, "noise": 72, "params": 73}
    rb = {"time": -5, "noise": 2**31 - 1}
    rc = {"time": 8, "noise": 9}
    lab4 = [3, 1000, 7, 999]
    sct = {"type": "sct"}
    scd = {"type": "scd"}
    pi2 = float(np.float32(math.pi / 2))
    return [
        # --- sCT: loss / grad ---
        _loss_case("sct_defaults_grad_b4_4x4x3_step2500", "grad", sct, [4, 4, 4, 3], ra, n3, step=2500,
                   labels=lab4, x_seed=501,
                   description="paper defaults (lognormal P_mean -1, P_std 1.4, sigma_d 0.5, c 0.1, "
                               "H 10000); step 2500: warm-up r = 0.25"),
        _loss_case("sct_warm_grad_b5_seq6x4_c0p5", "grad",
                   {**sct, "tangent_warmup_steps": 1000, "tangent_norm_const": 0.5, "x_sigma": 1.0},
                   [5, 6, 4], rb, n4, step=20000, x_seed=502, x_scale=1.0,
                   description="warm-up done (r = 1), c 0.5, sigma_d 1, rank-3 x, no labels"),
        _loss_case("sct_step0_loss_b3_r0", "loss", {**sct, "t_mu": -0.4, "t_sigma": 1.0}, [3, 2, 2, 3], rc, n3,
                   step=0, labels=[0, 1, 2], x_seed=503,
                   description="step 0: r = 0, the tangent is -cos^2(t) (sigma_d F - dx_t/dt) alone"),
        _loss_case("sct_nowarmup_uniform_grad_b4", "grad",
                   {**sct, "train_time_dist_type": "uniform", "tangent_warmup_steps": 0, "x_sigma": 0.7},
                   [4, 3, 3, 2], ra, n2, step=3, labels=[5, 6, 1000, 8], x_seed=504, x_scale=0.7,
                   description="H = 0: r = 1 from the first step; sigma ~ U[0, 1); sigma_d 0.7"),
        _loss_case("sct_logitnormal_grad_b6_head8", "grad",
                   {**sct, "train_time_dist_type": "logitnormal", "t_mu": 0.3, "t_sigma": 0.8,
                    "tangent_warmup_steps": 400},
                   [6, 2, 2, 4], rc, n4, step=100, x_seed=505, head_k=8,
                   description="sigma = sigmoid(N 0.8 + 0.3), r = 0.25, 8-frequency head"),
        # --- sCD: loss / grad with each teacher convention ---
        _loss_case("scd_sit_teacher_grad_b4", "grad", {**scd, "tangent_warmup_steps": 100}, [4, 3, 3, 3], ra, n3,
                   step=50, labels=lab4, x_seed=511,
                   teacher={"interface": {"type": "sit"}, "network": {"type": "probe_mlp", **t3}},
                   description="SiT teacher, no guidance (one teacher pass), r = 0.5"),
        _loss_case("scd_sit_teacher_cfg2_nsigma1p5_grad_b5", "grad",
                   {**scd, "guidance_scale": 2.0, "tangent_warmup_steps": 0}, [5, 2, 2, 3], rb, n3,
                   step=0, labels=[1, 2, 1000, 4, 5], x_seed=512,
                   teacher={"interface": {"type": "sit", "n_sigma": 1.5}, "network": {"type": "probe_mlp", **t3}},
                   description="SiT teacher with n_sigma 1.5 (k = sigma_d / 1.5), CFG w = 2"),
        _loss_case("scd_edm_teacher_cfg1p5_grad_b4", "grad",
                   {**scd, "guidance_scale": 1.5, "tangent_warmup_steps": 10, "x_sigma": 0.6},
                   [4, 2, 3, 4], rc, n4, step=5, labels=[9, 8, 7, 1000], x_seed=513, x_scale=0.6,
                   teacher={"interface": {"type": "edm", "x_sigma": 0.5}, "network": {"type": "probe_mlp", **t4}},
                   description="EDM teacher (its own x_sigma 0.5) for a student with sigma_d 0.6, w 1.5"),
        _loss_case("scd_meanflow_teacher_loss_b3", "loss", {**scd, "guidance_scale": 0.5}, [3, 5, 3], ra, n3,
                   step=9000, x_seed=514,
                   teacher={"interface": {"type": "mean_flow"}, "network": {"type": "probe_mlp", **t3}},
                   description="MeanFlow teacher through its instantaneous velocity (dt = 0); w 0.5; no labels"),
        _loss_case("scd_trigflow_teacher_same_sigma_loss_b4", "loss", scd, [4, 2, 2, 2], rc, n2, step=10000,
                   labels=[1, 2, 3, 4], x_seed=515,
                   teacher={"interface": {"type": "trigflow", "x_sigma": 0.5},
                            "network": {"type": "probe_mlp", "channels": 2, "hidden": 4, "freqs": 2,
                                        "param_seed": 95}},
                   description="TrigFlow teacher with the student's sigma_d: dx_t/dt = sigma_d F_teacher"),
        _loss_case("scd_trigflow_teacher_sigma0p8_grad_b3", "grad", {**scd, "guidance_scale": 3.0}, [3, 3, 3, 4],
                   rb, n4, step=20000, labels=[0, 1000, 2], x_seed=516,
                   teacher={"interface": {"type": "trigflow", "x_sigma": 0.8}, "network": {"type": "probe_mlp", **t4}},
                   description="TrigFlow teacher with sigma_d' 0.8 != 0.5: mapped through the EDM state; w 3"),
        # --- pred: the consistency function ---
        _pred_case("sct_pred_b6_labels", sct, [6, 3, 3, 3], [0.0, 0.05, 0.4, 0.9, 1.5, pi2],
                   [0, 1000, 3, 4, 999, 6], n3, x_seed=521,
                   description="f(x_t, t) incl. t = 0 (f = x_t exactly) and t = pi/2 (float32)"),
        _pred_case("sct_pred_sigma1_nolabels_seq", {**sct, "x_sigma": 1.0}, [3, 4, 4], [0.3, 1.1, 1.5645], None,
                   n4, x_seed=522, description="sigma_d 1, rank-3, null labels; 1.1 and 1.5645 are the "
                                               "two-step sampling times"),
    ]
