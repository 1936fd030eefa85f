"""The ``euler_jump`` sampler over a MeanFlow interface (reference ``EulerJumpSampler``).

The step class itself lives with the other samplers (``samplers.EulerJumpSampler``:
same time grids, same ``sample`` loop); this module is the MeanFlow-facing entry point
and states the sampler in full:

* grid: ``sample_t(num_sampling_steps + 1)`` (``uniform``: ``linspace(t_start, t_end)``
  then the shift with ``s = sqrt(t_shift_cur / t_shift_base)``; ``exp``: the EDM grid
  plus a trailing 0, quirk Q4);
* ``x = x_init * grid[0]``; for each consecutive pair ``(t, t_next)``:
  ``t_b = ones([B]) * t``, ``r_b = ones([B]) * t_next``,
  ``x = x + u * bcast(r_b - t_b)`` with ``u = interface.pred(x, t_b, r=r_b, **net_kwargs)
  = net(x, t_b, dt=t_b - r_b, y=...)[0]``; every pair but the last runs inside one
  ``nnx.scan`` (compiled), the last eagerly (``last_step`` is Euler's, which calls the
  jump ``forward``);
* quirk Q14: ``g_net`` and ``guidance_scale`` are accepted and ignored (no
  unconditional pass is made, whatever the scale); the sampler's ``rng`` is never drawn.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from . import samplers
from .samplers import EulerJumpSampler


def euler_jump_sample(
    interface,
    x,
    num_sampling_steps: int,
    *,
    sampling_time_dist: str = "uniform",
    sampling_time_kwargs: dict | None = None,
    rng_seed: int = 0,
    g_net=None,
    guidance_scale: float = 1.0,
    **net_kwargs,
):
    """Run euler_jump; returns ``(timegrid, x_final)``. ``interface`` is a
    ``MeanFlowInterface`` (anything with ``pred(x, t, r=..., **kw)``)."""
    # looked up at call time, so that export's --reference swap of SAMPLERS applies
    sampler = samplers.SAMPLERS["euler_jump"](num_sampling_steps, sampling_time_dist, sampling_time_kwargs or {})
    grid = sampler.sample_t(num_sampling_steps + 1)
    x_final = sampler.sample(
        nnx.Rngs(rng_seed), interface, jnp.asarray(x), g_net=g_net, guidance_scale=guidance_scale, **net_kwargs
    )
    return grid, x_final


__all__ = ["EulerJumpSampler", "euler_jump_sample"]
