"""MeanFlow (Geng et al. 2025): the network `u(x_t, t, dt = t - r, y)` learns the average
velocity over `[r, t]` on SiT's path, with the exact JVP target

    target = stop_grad(v - clip(t - r, 0, 1) du/dt),   (u, du/dt) = jvp(u, (x_t, t, r), (v, 1, 0))

where `v` is the (optionally guided) instantaneous velocity `n - x`. The loss is the adaptively
weighted `l = sum_flat((u - target)^2)`: `stop_grad(1 / (l + norm_eps)^norm_power) l`.
The JVP is torch.func.jvp (forward mode), as the public PyTorch MeanFlow ports do.
"""

import math

import torch

from ..case import PortError, settings
from .common import JVP_METHODS, TIME_NOISE_DEFAULTS, bcast_right, f32, null_labels, sample_n, sample_t, sum_flat

DEFAULTS = {
    **TIME_NOISE_DEFAULTS, "t_shift_base": 4096.0,  # accepted and ignored (Q9)
    "guidance_scale": 1.0, "guidance_mixture_ratio": 0.5, "guidance_t_min": 0.0, "guidance_t_max": 1.0,
    "norm_eps": 1e-3, "norm_power": 1.0, "fm_portion": 0.75, "cond_drop_ratio": 0.5,
    # crate options: the corrections of Q7 and Q3, and the JVP method (equal values)
    "cond_drop": "prefix", "score": "reference", "jvp": "auto",
}


class MeanFlow:
    def __init__(self, block, ctx=None):
        self.cfg = c = settings(block, DEFAULTS, "mean_flow")
        if c["train_time_dist_type"] == "lognormal":
            raise PortError("mean_flow: lognormal times leave [0, 1] (the reference raises)")
        if c["cond_drop"] not in ("prefix", "sampled") or c["score"] not in ("reference", "instantaneous"):
            raise PortError(f"mean_flow: options cond_drop={c['cond_drop']!r} score={c['score']!r}")
        if c["jvp"] not in JVP_METHODS:  # every method gives the same values; the port uses torch.func.jvp
            raise PortError(f"mean_flow: jvp={c['jvp']!r} (known: {JVP_METHODS})")

    def c_in(self, t):
        return torch.ones_like(t)

    def c_out(self, t):
        return torch.ones_like(t)

    def c_skip(self, t):
        return torch.zeros_like(t)

    def c_noise(self, t):
        return t

    def target(self, v, dudt, t, r):
        return v - bcast_right(torch.clamp(t - r, 0, 1), v) * dudt

    def guided_velocity(self, net, x_t, t, y, v):
        """Step 3: classifier-free guidance of the target velocity, the network in eval mode.
        Returns the velocity and the mode of the JVP forward: back to train only on the
        mixture path (Q8)."""
        c = self.cfg
        w, kappa = c["guidance_scale"], c["guidance_mixture_ratio"]
        if w == 1 and kappa == 0:
            return v, False
        b = x_t.shape[0]
        zero_dt = torch.zeros(b)
        with torch.no_grad():
            v_unc = net(x_t, t, null_labels(b), dt=zero_dt)[0]
            if kappa == 0:
                guided, train = v_unc + w * (v - v_unc), False
            else:
                v_c = net(x_t, t, y, dt=zero_dt)[0]
                guided, train = w * v + (1 - w - kappa) * v_unc + kappa * v_c, True
        inside = (f32(c["guidance_t_min"]) <= t) & (t <= f32(c["guidance_t_max"]))
        return torch.where(bcast_right(inside, v), guided, v), train

    def loss(self, net, x, y, draws):
        c = self.cfg
        b = x.shape[0]
        y = null_labels(b) if y is None else y
        # 1. times (no shift, Q9): t >= r, and r = t on the first floor(B fm_portion) examples
        t = sample_t(draws, "t", c, b)
        r = sample_t(draws, "r", c, b)
        t, r = torch.maximum(t, r), torch.minimum(t, r)
        fm = torch.arange(b) < math.floor(b * c["fm_portion"])
        r = torch.where(fm, t, r)
        # 2. the path
        n = sample_n(draws, c, x.shape)
        tb = bcast_right(t, x)
        x_t = (1 - tb) * x + tb * n
        v = n - x
        # 3. guidance
        v, train = self.guided_velocity(net, x_t, t, y, v)
        # 4. condition drop: k = #(u < ratio); the first k examples are dropped (Q7)
        u = draws.take("cond_drop", "uniform", [b])
        m = u < f32(c["cond_drop_ratio"])
        drop = torch.arange(b) < int(m.sum()) if c["cond_drop"] == "prefix" else m
        y = torch.where(drop, null_labels(b), y)
        v = torch.where(bcast_right(drop, v), n - x, v)

        # 5. the JVP along (v, 1, 0); the network draws its label dropout here in train mode
        def average_velocity(x_in, t_in, r_in):
            return net(x_in, t_in, y, dt=t_in - r_in, train=train, draws=draws)

        u, dudt, features = torch.func.jvp(
            average_velocity, (x_t, t, r), (v, torch.ones_like(t), torch.zeros_like(r)), has_aux=True
        )
        target = self.target(v, dudt, t, r).detach()
        # 6. the adaptive weight
        l = sum_flat((u - target) ** 2)
        weight = 1 / (l + f32(c["norm_eps"])) ** f32(c["norm_power"])
        loss = weight.detach() * l
        return dict(loss=loss, t=t, r=r, n=n, x_t=x_t, target=target, net_out=u, features=features)

    def pred(self, net, x_t, t, y, r=None):
        if r is None:
            raise PortError("mean_flow: pred needs the interval start r")
        return net(x_t, t, y, dt=t - r)[0]

    def score(self, net, x_t, t, y, r=None):
        tb = bcast_right(t, x_t)
        if self.cfg["score"] == "instantaneous":  # SiT's score with u(x, t, t)
            return -(x_t + (1 - tb) * self.pred(net, x_t, t, y, r=t)) / tb
        return -(x_t + (1 - tb) * self.pred(net, x_t, t, y, r=torch.zeros_like(t))) / tb**2  # Q3
