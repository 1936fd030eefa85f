"""Kind ``sampler`` for ``euler``, ``heun`` and ``euler-maruyama`` over SiT / EDM with
``probe_mlp`` (``euler_jump`` needs MeanFlow and lives with the MeanFlow cases).

``out.timegrid`` is ``sampler.sample_t(num_sampling_steps + 1)``; ``out.x_final`` is
``sampler.sample(nnx.Rngs(rng_seed), interface, in.x, guidance_scale=w, y=in.y)``
(``y`` omitted when the case has no labels). The network is an nnx module, so that
``nnx.scan`` carries its parameters and the Rngs exactly as the reference carries its
own; the non-last steps are compiled, the last one eager, the guidance blend compiled
by ``nnx.cond`` everywhere (golden-format.md, "Bit-level notes").

Not exported: ``diffusion_coeff: constant`` (quirk Q13: the reference crashes, its
coefficient is a Python float where ``bcast_right`` wants an array); see ``REFUSED``.
Exported quirks: Q1 (guided Heun), Q4 (exp grid has one point more), Q5 (linear_kl at
t_start = 1 gives NaN), Q6 (guided EM's last step uses the conditional labels).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .case import Case, split_arrays
from .interfaces import make_interface
from .networks.probe_mlp import ProbeMLP
from .samplers import make_sampler
from .sit_edm_cases import network_arrays

TYPES = ("euler", "heun", "euler-maruyama")
IFACES = ("sit", "edm")

REFUSED = [
    ({"type": "euler-maruyama", "diffusion_coeff": "constant"},
     "Q13: the constant coefficient returns a Python float; bcast_right(float, score) raises AttributeError"),
    ({"type": "euler-maruyama", "diffusion_coeff": "linear_kl", "sampling_time_kwargs": {"t_start": 1.0}},
     "Q5: w(1) = 1/(1-1) is infinite, so the reference's sample is NaN; the crate refuses this "
     "sampler at construction instead (tests/sampler_quirks.rs), so no fixture records the NaN"),
]


def compute(meta: dict, arrays: dict) -> dict:
    sampler = make_sampler(meta["sampler"])
    net = ProbeMLP(split_arrays(arrays, "param"), split_arrays(arrays, "buffer"))
    iface = make_interface(meta["interface"], net)
    x = jnp.asarray(arrays["in.x"])
    kwargs = {"y": jnp.asarray(arrays["in.y"])} if "in.y" in arrays else {}
    timegrid = sampler.sample_t(sampler.num_sampling_steps + 1)
    x_final = sampler.sample(nnx.Rngs(meta["rng_seed"]), iface, x,
                             guidance_scale=meta.get("guidance_scale", 1.0), **kwargs)
    return {"out.timegrid": np.asarray(timegrid), "out.x_final": np.asarray(x_final)}


def recompute(meta: dict, arrays: dict) -> dict | None:
    if meta.get("kind") != "sampler":
        return None
    if meta["sampler"]["type"] not in TYPES or meta.get("interface", {}).get("type") not in IFACES:
        return None
    if meta.get("network", {}).get("type") != "probe_mlp":
        return None
    return compute(meta, arrays)


def check_refused(sampler_cfg: dict, interface_cfg: dict, net_cfg: dict) -> str:
    """Run a refused configuration and return the error it raises (for the record)."""
    meta = {"sampler": sampler_cfg, "interface": interface_cfg, "rng_seed": 0, "guidance_scale": 1.0}
    arrays = network_arrays({"type": "probe_mlp", **net_cfg})
    arrays["in.x"] = np.zeros((1, 2, 2, net_cfg["channels"]), np.float32)
    try:
        compute(meta, arrays)
    except Exception as e:  # noqa: BLE001 - the point is to see what the reference's code path raises
        return f"{type(e).__name__}: {e}"
    return "no error"


NET = {"channels": 3, "hidden": 8, "freqs": 2, "param_seed": 13}
SIT = {"type": "sit", "train_time_dist_type": "uniform"}
EDM = {"type": "edm", "train_time_dist_type": "lognormal"}


def _case(name, sampler, interface, rng_seed, guidance_scale, shape, labels, x_seed, description=""):
    meta = {"kind": "sampler", "sampler": sampler, "interface": interface, "rng_seed": rng_seed,
            "guidance_scale": float(guidance_scale), "network": {"type": "probe_mlp", **NET}}
    if description:
        meta["description"] = description
    arrays = network_arrays(meta["network"])
    arrays["in.x"] = np.asarray(jax.random.normal(jax.random.key(x_seed), tuple(shape)))
    if labels is not None:
        arrays["in.y"] = np.asarray(labels, dtype=np.int32)
    arrays.update(compute(meta, arrays))
    return Case(name, meta, arrays)


def fixture_cases() -> list[Case]:
    s = [3, 4, 4, 3]
    y = [1, 2, 1000]
    return [
        # --- euler ---
        _case("smp_euler_sit_7", {"type": "euler", "num_sampling_steps": 7, "sampling_time_dist": "uniform"},
              SIT, 0, 1.0, s, y, 401),
        _case("smp_euler_sit_1_nolabels", {"type": "euler", "num_sampling_steps": 1, "sampling_time_dist": "uniform"},
              SIT, 0, 1.0, [2, 3, 3], None, 402, description="one step: only last_step runs (scan of length 0)"),
        _case("smp_euler_sit_6_shift_cfg2p5",
              {"type": "euler", "num_sampling_steps": 6, "sampling_time_dist": "uniform",
               "sampling_time_kwargs": {"t_shift_cur": 256, "t_shift_base": 1024, "t_end": 0.1}},
              SIT, 0, 2.5, s, y, 403),
        _case("smp_euler_edm_exp_5_cfg1p7",
              {"type": "euler", "num_sampling_steps": 5, "sampling_time_dist": "exp",
               "sampling_time_kwargs": {"sigma_max": 10.0}},
              EDM, 0, 1.7, s, y, 404, description="Q4: exp grid has num_sampling_steps + 2 points"),
        # --- heun ---
        _case("smp_heun_sit_5", {"type": "heun", "num_sampling_steps": 5, "sampling_time_dist": "uniform"},
              SIT, 0, 1.0, s, y, 405, description="Q1: unguided Heun equals Euler"),
        _case("smp_heun_sit_4_cfg3_q1", {"type": "heun", "num_sampling_steps": 4, "sampling_time_dist": "uniform",
                                         "sampling_time_kwargs": {"t_start": 0.9}},
              SIT, 0, 3.0, s, y, 406, description="Q1: guided second slope mixes g(x_next, t_next) with d(x, t)"),
        _case("smp_heun_edm_exp_8", {"type": "heun", "num_sampling_steps": 8, "sampling_time_dist": "exp",
                                     "sampling_time_kwargs": {"sigma_min": 0.01, "sigma_max": 20.0, "rho": 3.0}},
              EDM, 0, 1.0, s, None, 407),
        _case("smp_heun_edm_exp_3_cfg0p5", {"type": "heun", "num_sampling_steps": 3, "sampling_time_dist": "exp"},
              EDM, 0, 0.5, s, y, 408, description="guidance scale below 1"),
        # --- euler-maruyama, every exportable coefficient ---
        _case("smp_em_sit_8_linearkl", {"type": "euler-maruyama", "num_sampling_steps": 8,
                                        "sampling_time_dist": "uniform",
                                        "sampling_time_kwargs": {"t_start": 0.95, "t_end": 0.05}},
              SIT, 7, 1.0, s, y, 409, description="default coefficient linear_kl, norm 1"),
        _case("smp_em_sit_9_linear_cfg2_q6", {"type": "euler-maruyama", "num_sampling_steps": 9,
                                              "sampling_time_dist": "uniform", "diffusion_coeff": "linear",
                                              "diffusion_coeff_norm": 0.7,
                                              "sampling_time_kwargs": {"t_end": 0.05}},
              SIT, -3, 2.0, s, y, 411, description="Q6: the guided last step feeds y, not the null label, "
                                                   "to the guidance drift"),
        _case("smp_em_sit_7_cos", {"type": "euler-maruyama", "num_sampling_steps": 7,
                                   "sampling_time_dist": "uniform", "diffusion_coeff": "cos",
                                   "diffusion_coeff_norm": 0.8, "sampling_time_kwargs": {"t_end": 0.03}},
              SIT, 2**31 - 1, 1.0, s, None, 412),
        _case("smp_em_sit_5_concave_cfg1p5", {"type": "euler-maruyama", "num_sampling_steps": 5,
                                              "sampling_time_dist": "uniform", "diffusion_coeff": "concave",
                                              "sampling_time_kwargs": {"t_end": 0.02, "t_shift_cur": 8192}},
              SIT, 11, 1.5, s, y, 413),
        _case("smp_em_edm_exp_4_linear", {"type": "euler-maruyama", "num_sampling_steps": 4,
                                          "sampling_time_dist": "exp", "diffusion_coeff": "linear",
                                          "diffusion_coeff_norm": 0.05,
                                          "sampling_time_kwargs": {"sigma_max": 5.0, "sigma_min": 0.05}},
              EDM, 5, 1.0, s, y, 414, description="EM on the EDM interface (score with the Q2 formula)"),
    ]
