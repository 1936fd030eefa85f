"""sCT: continuous-time consistency training in TrigFlow (Lu & Song 2024), as diffuse-spec
specifies it (the reference leaves it empty). reference.md, "sCT".

    x_t = cos(t) x + sin(t) z,  z = sigma_d n,  t = arctan(sigma / sigma_d)
    F, dF = jvp(F_theta, (x_t / sigma_d, t), (cos(t) sin(t) dxdt, cos(t) sin(t) sigma_d))
    g = -cos(t)^2 (sigma_d F- - dxdt) - r (cos(t) sin(t) x_t + sigma_d dF),  g = g / (||g|| + c)
    loss = exp(w) / D sum_flat((F - F- - g)^2) - w,  w = logvar(t)

with `F- = stop_grad(F)` and `r = min(1, step / H)` the tangent warm-up. sCD (scd.py) changes
only `dxdt`.
"""

import math

import torch

from ..case import PortError, settings
from .common import JVP_METHODS, TIME_NOISE_DEFAULTS, bcast_right, f32, sample_n, sample_t, sum_flat

DEFAULTS = {
    **TIME_NOISE_DEFAULTS, "train_time_dist_type": "lognormal", "t_mu": -1.0, "t_sigma": 1.4,
    "tangent_warmup_steps": 10000, "tangent_norm_const": 0.1, "jvp": "auto",
}


class Sct:
    name = "sct"

    def __init__(self, block, ctx):
        self.cfg = c = settings(block, self.defaults(), self.name)
        if c["n_mu"] != 0 or c["n_sigma"] != 1:
            raise PortError(f"{self.name}: n_mu = 0 and n_sigma = 1 are required")
        if c["jvp"] not in JVP_METHODS:  # every method gives the same values; the port uses torch.func.jvp
            raise PortError(f"{self.name}: jvp={c['jvp']!r} (known: {JVP_METHODS})")
        self.sd = f32(c["x_sigma"])
        self.step = ctx.meta.get("step", 0)  # the training step of the tangent warm-up
        # the adaptive weighting's log-variance head: param.logvar.{W, b}, buffer.logvar.freqs
        self.logvar_w, self.logvar_b = ctx.params["logvar.W"], ctx.params["logvar.b"]
        self.logvar_freqs = ctx.buffers["logvar.freqs"]

    @classmethod
    def defaults(cls):
        return DEFAULTS

    def c_in(self, t):
        return torch.ones_like(t) / self.sd

    def c_out(self, t):
        return -self.sd * torch.sin(t)

    def c_skip(self, t):
        return torch.cos(t)

    def c_noise(self, t):
        return t

    def logvar(self, t):
        a = t[:, None] * self.logvar_freqs
        return (torch.cat([torch.sin(a), torch.cos(a)], -1) @ self.logvar_w + self.logvar_b).reshape(-1)

    def tangent(self, x_t, t, x, z, y):
        """dx_t/dt along the path; sCD replaces it by its teacher's velocity."""
        cos, sin = bcast_right(torch.cos(t), x), bcast_right(torch.sin(t), x)
        return cos * z - sin * x

    def warmup(self):
        h = self.cfg["tangent_warmup_steps"]
        return 1.0 if h == 0 else min(1.0, self.step / h)

    def loss(self, net, x, y, draws):
        sd, b = self.sd, x.shape[0]
        sigma = sample_t(draws, "t", self.cfg, b)
        t = torch.atan(sigma / sd)
        n = sample_n(draws, self.cfg, x.shape)
        z = sd * n
        cos, sin = bcast_right(torch.cos(t), x), bcast_right(torch.sin(t), x)
        x_t = cos * x + sin * z
        dxdt = self.tangent(x_t, t, x, z, y)

        def consistency_net(x_in, t_in):
            return net(x_in, t_in, y, train=True, draws=draws)

        F, dF, features = torch.func.jvp(
            consistency_net, (x_t / sd, t), (cos * sin * dxdt, torch.cos(t) * torch.sin(t) * sd), has_aux=True
        )
        J = dF
        F_ = F.detach()
        r = self.warmup()
        g = -(cos**2) * (sd * F_ - dxdt) - r * (cos * sin * x_t + J)
        g = g / bcast_right(torch.sqrt(sum_flat(g**2)) + f32(self.cfg["tangent_norm_const"]), g)
        g = g.detach()
        w = self.logvar(t)
        values = math.prod(x.shape[1:])
        loss = torch.exp(w) / values * sum_flat((F - F_ - g) ** 2) - w
        return dict(loss=loss, t=t, n=n, x_t=x_t, target=F_ + g, net_out=F, features=features)

    def pred(self, net, x_t, t, y, r=None):
        """The consistency function cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, t)."""
        cos, sin = bcast_right(torch.cos(t), x_t), bcast_right(torch.sin(t), x_t)
        return cos * x_t - sin * self.sd * net(x_t / self.sd, t, y)[0]

    def score(self, net, x_t, t, y, r=None):
        raise PortError(f"{self.name}: no score (the reference raises)")
