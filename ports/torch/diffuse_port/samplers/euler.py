"""Euler: `x + h d(x, t)`, `h = t' - t`, on every step (the last included)."""

from .common import Sampler, guided


class Euler(Sampler):
    name = "euler"

    def forward(self, model, x, t, t_next, y, w, draws, i):
        return x + (t_next - t) * guided(model.pred, x, t, y, w)

    def last_step(self, model, x, t, t_next, y, w):
        return self.forward(model, x, t, t_next, y, w, None, None)
