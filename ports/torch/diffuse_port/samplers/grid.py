"""The time grids (reference.md, "Samplers", grids).

uniform: JAX's float32 linspace(t_start, t_end, steps), `start (1 - i/div) + stop (i/div)`
    with the last point set to `stop`, then the resolution shift with `s = sqrt(t_shift_cur /
    t_shift_base)`. Noise at t = 1 (SiT, MeanFlow time). As XLA compiles it: `i/div` is
    `i * (1/div)` and the sum is one fused multiply-add, `fma(start, 1 - i r, i (stop r))`.
exp: EDM's sigma schedule `(smax^(1/rho) + i/(steps - 1) (smin^(1/rho) - smax^(1/rho)))^rho`,
    then a trailing 0: steps + 1 points (Q4). The two roots are Python floats (double), each
    rounded once to float32; the rest is float32.
"""

import math

import torch

from ..case import PortError
from ..interfaces.common import f32, t_shift

UNIFORM = {"t_start": 1.0, "t_end": 0.0, "t_shift_base": 4096.0, "t_shift_cur": 4096.0}
EXP = {"sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}


def kwargs(given: dict, defaults: dict, what: str) -> dict:
    unknown = set(given) - set(defaults)
    if unknown:
        raise PortError(f"{what} grid: unknown sampling_time_kwargs {sorted(unknown)}")
    return {**defaults, **given}


def fma(a, b, c):
    """a * b + c rounded once to float32 (the float64 product of two float32s is exact)."""
    return (a.double() * b.double() + c.double()).float()


def uniform(steps: int, kw: dict) -> torch.Tensor:
    kw = kwargs(kw, UNIFORM, "uniform")
    start, stop = f32(kw["t_start"]), f32(kw["t_end"])
    i = torch.arange(steps - 1, dtype=torch.float32)
    r = 1 / f32(steps - 1)
    ts = torch.cat([fma(start, 1 - i * r, i * (stop * r)), stop[None]])
    return t_shift(ts, math.sqrt(kw["t_shift_cur"] / kw["t_shift_base"]))


def exp(steps: int, kw: dict) -> torch.Tensor:
    kw = kwargs(kw, EXP, "exp")
    rho = kw["rho"]
    # the two roots are Python floats in the reference: computed in double, rounded once
    hi = kw["sigma_max"] ** (1 / rho)
    span = kw["sigma_min"] ** (1 / rho) - hi
    i = torch.arange(steps, dtype=torch.float32)
    sigmas = (f32(hi) + i / (steps - 1) * f32(span)) ** f32(rho)
    return torch.cat([sigmas, torch.zeros(1)])


GRIDS = {"uniform": uniform, "exp": exp}


def time_grid(dist: str, steps: int, kw: dict) -> torch.Tensor:
    if dist not in GRIDS:
        raise PortError(f"sampling_time_dist {dist!r} is not ported (ported: {sorted(GRIDS)})")
    return GRIDS[dist](steps, kw)
