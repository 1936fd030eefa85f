"""The loop every sampler shares (reference.md, "Samplers").

    grid = the time grid;  x = x_0 * grid[0]
    x = forward(x, t_i, t_{i+1}) for every consecutive pair but the last;  x = last_step(...) on it

The network is in eval mode. A slope is blended with the guidance model's (the model itself,
every label replaced by the null class 1000) when the scale `w != 1`: `d = g + w (d - g)`;
with `w == 1` the guidance model is not called.
"""

import torch

from ..case import REQUIRED, settings
from ..interfaces.common import f32, null_labels
from . import grid

SAMPLER_DEFAULTS = {"num_sampling_steps": REQUIRED, "sampling_time_dist": REQUIRED, "sampling_time_kwargs": {}}


class Model:
    """An interface with its network: `pred` / `score` at a scalar time expanded to `[B]`."""

    def __init__(self, interface, net):
        self.interface, self.net = interface, net

    def pred(self, x, t, y, r=None):
        return self.interface.pred(self.net, x, expand(t, x), y, None if r is None else expand(r, x))

    def score(self, x, t, y):
        return self.interface.score(self.net, x, expand(t, x), y)


def expand(t, x):
    """`ones([B]) * t`."""
    return torch.ones(x.shape[0]) * t


def guided(slope, x, t, y, w, guidance_y=None):
    """`slope(x, t, y)` blended with the guidance model's slope at the same point."""
    d = slope(x, t, y)
    if w == 1:
        return d
    g = slope(x, t, null_labels(x.shape[0]) if guidance_y is None else guidance_y)
    return g + f32(w) * (d - g)


class Sampler:
    """A sampler's settings and grid; subclasses give `forward` and `last_step`."""

    name = "sampler"
    OPTIONS: dict = {}

    def __init__(self, block):
        self.cfg = settings(block, {**SAMPLER_DEFAULTS, **self.OPTIONS}, self.name)

    def time_grid(self):
        return grid.time_grid(self.cfg["sampling_time_dist"], self.cfg["num_sampling_steps"] + 1,
                              self.cfg["sampling_time_kwargs"])

    def check(self, ts, w):
        """Refuse what the sampler refuses, before running (e.g. an infinite coefficient)."""

    def sample(self, model, x0, y, w, draws):
        ts = self.time_grid()
        self.check(ts, w)
        x = x0 * ts[0]
        for i in range(len(ts) - 2):
            x = self.forward(model, x, ts[i], ts[i + 1], y, w, draws, i)
        x = self.last_step(model, x, ts[-2], ts[-1], y, w)
        return ts, x
