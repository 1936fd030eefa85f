"""Kind ``pred`` for SiT and EDM: ``out.pred = pred(in.x_t, in.t, y=in.y)`` and
``out.score = score(in.x_t, in.t, y=in.y)``, eager, on ``probe_mlp``.

SiT: ``pred = net(x_t, t)[0]``, ``score = -(x_t + (1 - t) pred) / t``.
EDM: ``pred = (x_t - D) / t``, ``score = -(x_t - pred) / t^2`` (quirk Q2).
The ``_q12`` cases put ``t = 0`` in the batch: SiT's score is infinite there (or NaN
where the numerator is 0), EDM's ``c_noise = log(0)/4 = -inf`` makes that example NaN.
MeanFlow's ``pred`` (with ``in.r``) lives with the MeanFlow cases.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .case import Case, split_arrays
from .interfaces import make_interface
from .networks.probe_mlp import ProbeMLP
from .sit_edm_cases import network_arrays

IFACES = ("sit", "edm")


def compute(meta: dict, arrays: dict) -> dict:
    net = ProbeMLP(split_arrays(arrays, "param"), split_arrays(arrays, "buffer"))
    iface = make_interface(meta["interface"], net)
    x_t = jnp.asarray(arrays["in.x_t"])
    t = jnp.asarray(arrays["in.t"])
    kwargs = {"y": jnp.asarray(arrays["in.y"])} if "in.y" in arrays else {}
    return {
        "out.pred": np.asarray(iface.pred(x_t, t, **kwargs)),
        "out.score": np.asarray(iface.score(x_t, t, **kwargs)),
    }


def recompute(meta: dict, arrays: dict) -> dict | None:
    if meta.get("kind") != "pred" or meta.get("interface", {}).get("type") not in IFACES:
        return None
    if meta.get("network", {}).get("type") != "probe_mlp":
        return None
    return compute(meta, arrays)


def _case(name, interface, shape, t, y, net, x_seed, x_scale=1.0, description=""):
    meta = {"kind": "pred", "interface": interface, "network": {"type": "probe_mlp", **net}}
    if description:
        meta["description"] = description
    arrays = network_arrays(meta["network"])
    arrays["in.x_t"] = np.asarray(x_scale * jax.random.normal(jax.random.key(x_seed), tuple(shape)))
    arrays["in.t"] = np.asarray(t, dtype=np.float32)
    if y is not None:
        arrays["in.y"] = np.asarray(y, dtype=np.int32)
    arrays.update(compute(meta, arrays))
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    n3 = {"channels": 3, "hidden": 8, "freqs": 2, "param_seed": 12}
    n4 = {"channels": 4, "hidden": 5, "freqs": 3, "param_seed": -12}
    return [
        _case("pred_sit_b7_labels", {"type": "sit", "train_time_dist_type": "uniform"}, [7, 3, 3, 3],
              [0.01, 0.1, 0.25, 0.5, 0.75, 0.99, 1.0], [0, 1, 2, 1000, 998, 5, 6], n3, x_seed=301),
        _case("pred_sit_b3_seq_nolabels", {"type": "sit", "train_time_dist_type": "logitnormal"}, [3, 5, 4],
              [0.3, 0.6, 0.9], None, n4, x_seed=302, description="rank-3 x_t, no labels (null class)"),
        _case("pred_sit_t0_q12", {"type": "sit", "train_time_dist_type": "uniform"}, [2, 2, 2, 3],
              [0.0, 0.5], [1, 2], n3, x_seed=303, description="Q12: score divides by t; t = 0 gives inf"),
        _case("pred_edm_b6_labels_q2", {"type": "edm", "train_time_dist_type": "lognormal"}, [6, 3, 3, 3],
              [0.002, 0.05, 0.5, 1.0, 10.0, 80.0], [7, 1000, 3, 0, 999, 4], n3, x_seed=304, x_scale=2.0,
              description="Q2: score = -(x_t - pred) / t^2, not -pred / t"),
        _case("pred_edm_xs1p3_seq", {"type": "edm", "train_time_dist_type": "lognormal", "x_sigma": 1.3},
              [4, 3, 4], [0.01, 0.3, 2.5, 40.0], [9, 8, 7, 6], n4, x_seed=305, x_scale=3.0),
        _case("pred_edm_t0_q12", {"type": "edm", "train_time_dist_type": "lognormal"}, [2, 2, 2, 3],
              [0.0, 0.7], None, n3, x_seed=306,
              description="Q12: c_noise(0) = -inf, so the t = 0 example is NaN in pred and score"),
    ]
