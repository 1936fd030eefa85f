"""Euler-jump, for an interface whose `pred` takes an interval start (MeanFlow):

    x + h pred(x, t, r = t'),   h = t' - t, every step alike

A guidance scale is accepted and ignored, as the reference does (Q14); the option
`guidance: refuse` makes a scale other than 1 an error.
"""

from ..case import PortError
from .common import Sampler


class EulerJump(Sampler):
    name = "euler_jump"
    OPTIONS = {"guidance": "ignore"}

    def __init__(self, block):
        super().__init__(block)
        if self.cfg["guidance"] not in ("ignore", "refuse"):
            raise PortError(f"euler_jump: guidance {self.cfg['guidance']!r}")

    def check(self, ts, w):
        if self.cfg["guidance"] == "refuse" and w != 1:
            raise PortError("euler_jump: guidance refused (the reference ignores it, Q14)")

    def forward(self, model, x, t, t_next, y, w, draws, i):
        return x + (t_next - t) * model.pred(x, t, y, r=t_next)

    def last_step(self, model, x, t, t_next, y, w):
        return self.forward(model, x, t, t_next, y, w, None, None)
