"""Kind ``coefficients``: ``c_in, c_out, c_skip, c_noise`` at ``in.t`` and, for each
``s`` of ``t_shifts``, ``t_shift(in.t_unit, s)`` (file ``out.t_shift_<s>``, ``.`` -> ``p``).

All elementwise and eager, as in the reference.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .case import Case, shift_name
from .interfaces import Interfaces, interface_class


def compute(meta: dict, t: np.ndarray, t_unit: np.ndarray) -> dict:
    cfg = dict(meta["interface"])
    cls = interface_class(cfg.pop("type"))
    iface = cls(None, **cfg)
    tj = jnp.asarray(t)
    out = {
        "out.c_in": iface.c_in(tj),
        "out.c_out": iface.c_out(tj),
        "out.c_skip": iface.c_skip(tj),
        "out.c_noise": iface.c_noise(tj),
    }
    for s in meta["t_shifts"]:
        out[f"out.t_shift_{shift_name(s)}"] = Interfaces.t_shift(jnp.asarray(t_unit), s)
    return {k: np.asarray(v) for k, v in out.items()}


def recompute(meta: dict, arrays: dict) -> dict | None:
    if meta.get("kind") != "coefficients":
        return None
    if meta["interface"]["type"] not in ("sit", "edm"):
        return None
    return compute(meta, arrays["in.t"], arrays["in.t_unit"])


def _case(name, interface, t, t_unit, t_shifts, description):
    meta = {"kind": "coefficients", "interface": interface, "t_shifts": t_shifts, "description": description}
    t = np.asarray(t, dtype=np.float32)
    t_unit = np.asarray(t_unit, dtype=np.float32)
    arrays = {"in.t": t, "in.t_unit": t_unit, **compute(meta, t, t_unit)}
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    sigmas = np.geomspace(0.002, 80.0, 23).astype(np.float32)
    t_unit = np.linspace(0.0, 1.0, 17, dtype=np.float32)
    t_unit_odd = np.array([1e-6, 0.01, 0.3333333, 0.5, 0.7, 0.999, 0.9999999], dtype=np.float32)
    return [
        _case("coef_edm_default_sigmas", {"type": "edm", "train_time_dist_type": "lognormal"},
              sigmas, t_unit, [0.25, 0.5, 1.0, 2.0], "EDM, x_sigma 0.5, sigmas on the default exp range"),
        _case("coef_edm_xs0p3_uniform", {"type": "edm", "train_time_dist_type": "uniform", "x_sigma": 0.3},
              np.linspace(0.05, 1.0, 20, dtype=np.float32), t_unit_odd, [0.125, 4.0, 8.0],
              "EDM, x_sigma 0.3 (x_sigma**2 rounds once to float32)"),
        _case("coef_edm_xs2p0_t0_q12", {"type": "edm", "train_time_dist_type": "lognormal", "x_sigma": 2.0},
              np.array([0.0, 1e-30, 1e-6, 0.5, 2.0, 1e4], dtype=np.float32), t_unit, [1.5],
              "Q12: c_noise(0) = log(0)/4 = -inf; c_in, c_out, c_skip stay finite"),
        _case("coef_sit_shifts", {"type": "sit", "train_time_dist_type": "logitnormal", "t_shift_base": 1024},
              np.array([0.0, 0.1, 0.5, 0.9, 1.0], dtype=np.float32), t_unit_odd,
              [0.125, 0.75, 1.0, 1.5, 6.0],
              "SiT: c_in = c_out = 1, c_skip = 0, c_noise = t"),
    ]
