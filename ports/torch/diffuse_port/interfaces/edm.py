"""EDM: preconditioned denoising (Karras et al. 2022). `t` is the noise level sigma.

    c_in = 1 / sqrt(xs^2 + t^2),  c_out = t xs / sqrt(t^2 + xs^2),  c_skip = xs^2 / (t^2 + xs^2),
    c_noise = log(t) / 4,         D(x_t, t, y) = c_skip x_t + c_out net(c_in x_t, c_noise, y)
    loss = mean_flat(w (D(x + s n, s) - x)^2),  w = (s^2 + xs^2) / (s xs)^2
    pred = (x_t - D) / t,  score = -(x_t - pred) / t^2 (Q2; option `score: denoiser`: -pred / t)
"""

import torch

from ..case import PortError, settings
from .common import TIME_NOISE_DEFAULTS, bcast_right, f32, mean_flat, sample_n, sample_t

DEFAULTS = {**TIME_NOISE_DEFAULTS, "score": "reference"}


class Edm:
    def __init__(self, block, ctx=None):
        self.cfg = settings(block, DEFAULTS, "edm")
        if self.cfg["score"] not in ("reference", "denoiser"):
            raise PortError(f"edm: score {self.cfg['score']!r}")
        self.xs = f32(self.cfg["x_sigma"])

    def c_in(self, t):
        return 1 / torch.sqrt(self.xs**2 + t**2)

    def c_out(self, t):
        return t * self.xs / torch.sqrt(t**2 + self.xs**2)

    def c_skip(self, t):
        return self.xs**2 / (t**2 + self.xs**2)

    def c_noise(self, t):
        return torch.log(t) / 4

    def denoise(self, net, x_t, t, y, train=False, draws=None):
        """D(x_t, t, y) and the network's features."""
        b = lambda c: bcast_right(c, x_t)
        out, features = net(b(self.c_in(t)) * x_t, self.c_noise(t), y, train=train, draws=draws)
        return b(self.c_skip(t)) * x_t + b(self.c_out(t)) * out, features

    def loss(self, net, x, y, draws):
        s = sample_t(draws, "t", self.cfg, x.shape[0])
        n = sample_n(draws, self.cfg, x.shape)
        x_t = x + bcast_right(s, x) * n
        d, features = self.denoise(net, x_t, s, y, train=True, draws=draws)
        w = (s**2 + self.xs**2) / (s * self.xs) ** 2
        loss = mean_flat(bcast_right(w, x) * (d - x) ** 2)
        return dict(loss=loss, t=s, n=n, x_t=x_t, target=x, net_out=d, features=features)

    def pred(self, net, x_t, t, y, r=None):
        return (x_t - self.denoise(net, x_t, t, y)[0]) / bcast_right(t, x_t)

    def score(self, net, x_t, t, y, r=None):
        tb = bcast_right(t, x_t)
        pred = self.pred(net, x_t, t, y)
        if self.cfg["score"] == "denoiser":
            return -pred / tb
        return -(x_t - pred) / tb**2
