"""Euler-Maruyama on the reverse SDE with diffusion coefficient `w(t)`:

    forward:   x + h f + sqrt(w(t)) N sqrt(|h|),   f = pred - 0.5 w(t) score (the guided drift)
    last step: x + h f, its guidance model given the conditional labels (Q6; option
               `last_step_labels: null` gives it the null class)

`N` is the raw normal draw `step.<i>` of the case. Coefficients with `a = diffusion_coeff_norm`:
linear_kl `a (t^2 / (1 - t) + t)` (infinite at t = 1, Q5: refused), linear `a t`, cos
`0.25 (a cos(pi t) + 1)^2`, concave `0.25 (a sin(pi t) + 1)^2`, constant (Q13: the reference
crashes; refused, or `constant_coeff: norm` for `w(t) = a`).
"""

import math

import torch

from ..case import PortError
from ..interfaces.common import f32
from .common import Sampler, guided


def linear_kl(t, a):
    return a * ((1 / (1 - t)) * t**2 + t)


def linear(t, a):
    return a * t


def cos(t, a):
    return 0.25 * (a * torch.cos(math.pi * t) + 1) ** 2


def concave(t, a):
    return 0.25 * (a * torch.sin(math.pi * t) + 1) ** 2


def constant(t, a):
    return a * torch.ones_like(t)


COEFFICIENTS = {"linear_kl": linear_kl, "linear": linear, "cos": cos, "concave": concave, "constant": constant}


class EulerMaruyama(Sampler):
    name = "euler-maruyama"
    OPTIONS = {
        "diffusion_coeff": "linear_kl", "diffusion_coeff_norm": 1.0,
        "last_step_labels": "conditional", "constant_coeff": "refuse",
    }

    def __init__(self, block):
        super().__init__(block)
        c = self.cfg
        if c["diffusion_coeff"] not in COEFFICIENTS:
            raise PortError(f"euler-maruyama: diffusion_coeff {c['diffusion_coeff']!r}")
        if c["diffusion_coeff"] == "constant" and c["constant_coeff"] != "norm":
            raise PortError("euler-maruyama: the constant coefficient crashes the reference (Q13)")
        if c["last_step_labels"] not in ("conditional", "null"):
            raise PortError(f"euler-maruyama: last_step_labels {c['last_step_labels']!r}")
        self.coeff = COEFFICIENTS[c["diffusion_coeff"]]
        self.norm = f32(c["diffusion_coeff_norm"])

    def check(self, ts, w):
        if self.cfg["diffusion_coeff"] == "linear_kl" and bool((ts[:-1] >= 1).any()):
            raise PortError("euler-maruyama: linear_kl is infinite at t = 1 (Q5)")

    def drift(self, model, t):
        w_t = self.coeff(t, self.norm)
        return lambda x, t_, y: model.pred(x, t_, y) - 0.5 * w_t * model.score(x, t_, y)

    def forward(self, model, x, t, t_next, y, w, draws, i):
        h = t_next - t
        f = guided(self.drift(model, t), x, t, y, w)
        noise = draws.take(f"step.{i}", "normal", list(x.shape))
        return x + h * f + torch.sqrt(self.coeff(t, self.norm)) * noise * torch.sqrt(torch.abs(h))

    def last_step(self, model, x, t, t_next, y, w):
        # Q6: the guidance model sees the conditional labels (None, without labels: the null class)
        guidance_y = y if self.cfg["last_step_labels"] == "conditional" else None
        f = guided(self.drift(model, t), x, t, y, w, guidance_y=guidance_y)
        return x + (t_next - t) * f
