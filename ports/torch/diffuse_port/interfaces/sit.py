"""SiT: linear flow matching (Ma et al. 2024). Data at t = 0, noise at t = 1.

    x_t = (1 - t) x + t n,   target = n - x,   loss = mean_flat((net(x_t, t, y) - target)^2)

with `t` shifted by `s = sqrt(prod(x.shape[1:]) / t_shift_base)` (the resolution shift).
"""

import math

import torch

from ..case import PortError, settings
from .common import TIME_NOISE_DEFAULTS, bcast_right, mean_flat, sample_n, sample_t, t_shift

DEFAULTS = {**TIME_NOISE_DEFAULTS, "t_shift_base": 4096.0}


class SiT:
    def __init__(self, block, ctx=None):
        self.cfg = settings(block, DEFAULTS, "sit")
        if self.cfg["train_time_dist_type"] == "lognormal":
            raise PortError("sit: lognormal times leave [0, 1] (the reference raises)")

    # preconditioning: the network sees x_t and t as they are
    def c_in(self, t):
        return torch.ones_like(t)

    def c_out(self, t):
        return torch.ones_like(t)

    def c_skip(self, t):
        return torch.zeros_like(t)

    def c_noise(self, t):
        return t

    def target(self, x, n):
        return n - x

    def loss(self, net, x, y, draws):
        b = x.shape[0]
        t = sample_t(draws, "t", self.cfg, b)
        s = math.sqrt(math.prod(x.shape[1:]) / self.cfg["t_shift_base"])
        t = t_shift(t, s)
        n = sample_n(draws, self.cfg, x.shape)
        tb = bcast_right(t, x)
        x_t = (1 - tb) * x + tb * n
        target = self.target(x, n)
        u, features = net(x_t, t, y, train=True, draws=draws)
        loss = mean_flat((u - target) ** 2)
        return dict(loss=loss, t=t, n=n, x_t=x_t, target=target, net_out=u, features=features)

    def pred(self, net, x_t, t, y, r=None):
        return net(x_t, t, y)[0]

    def score(self, net, x_t, t, y, r=None):
        tb = bcast_right(t, x_t)
        return -(x_t + (1 - tb) * self.pred(net, x_t, t, y)) / tb
