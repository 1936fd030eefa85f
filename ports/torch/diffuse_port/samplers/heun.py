"""Heun. `x' = x + h D(x, t)` with the guided slope `D`, then

    reference (Q1): x + h/2 (D(x, t) + g(x', t') + w (d(x, t) - g(x', t')))
                    the second slope reuses the first network output d(x, t): unguided, Euler
    variant true:   x + h/2 (D(x, t) + D(x', t'))      Heun's method

The last step is Euler.
"""

from ..case import PortError
from ..interfaces.common import f32, null_labels
from .common import Sampler, guided


class Heun(Sampler):
    name = "heun"
    OPTIONS = {"variant": "reference"}

    def __init__(self, block):
        super().__init__(block)
        if self.cfg["variant"] not in ("reference", "true"):
            raise PortError(f"heun: variant {self.cfg['variant']!r}")

    def forward(self, model, x, t, t_next, y, w, draws, i):
        h = t_next - t
        d = model.pred(x, t, y)
        if w == 1:
            first = d
        else:
            g = model.pred(x, t, null_labels(x.shape[0]))
            first = g + f32(w) * (d - g)
        x_next = x + h * first
        if self.cfg["variant"] == "true":
            second = guided(model.pred, x_next, t_next, y, w)
        elif w == 1:
            second = d  # the guidance model is not called: the second slope is d(x, t)
        else:
            g_next = model.pred(x_next, t_next, null_labels(x.shape[0]))
            second = g_next + f32(w) * (d - g_next)
        return x + h / 2 * (first + second)

    def last_step(self, model, x, t, t_next, y, w):
        return x + (t_next - t) * guided(model.pred, x, t, y, w)
