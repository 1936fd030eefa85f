"""sCD: continuous-time consistency distillation (Lu & Song 2024), as diffuse-spec specifies it.
sCT with one change: the tangent `dxdt` is the frozen teacher's guided probability-flow
velocity in TrigFlow (trigflow.py), without gradient:

    dxdt = v_u + w (v_c - v_u),  v_c = V(x_t, t, y),  v_u = V(x_t, t, 1000)   (w = 1: v_c only)
"""

import torch

from ..case import PortError
from .common import null_labels
from .sct import DEFAULTS as SCT_DEFAULTS, Sct
from .trigflow import TEACHERS

DEFAULTS = {**SCT_DEFAULTS, "guidance_scale": 1.0}


class Scd(Sct):
    name = "scd"

    def __init__(self, block, ctx):
        super().__init__(block, ctx)
        self.teacher = build_teacher(ctx)

    @classmethod
    def defaults(cls):
        return DEFAULTS

    def tangent(self, x_t, t, x, z, y):
        w = self.cfg["guidance_scale"]
        with torch.no_grad():
            v_c = self.teacher(x_t, t, y, self.sd)
            if w == 1:
                return v_c
            v_u = self.teacher(x_t, t, null_labels(x_t.shape[0]), self.sd)
            return v_u + w * (v_c - v_u)


def build_teacher(ctx):
    """The case's `teacher` block: its interface and its network, whose arrays are all
    `buffer.teacher.<path>` (frozen)."""
    from .. import networks

    block = ctx.meta.get("teacher")
    if block is None:
        raise PortError("scd: the case has no teacher block")
    kind = block["interface"]["type"]
    if kind not in TEACHERS:
        raise PortError(f"scd: teacher interface {kind!r} is not ported")
    arrays = ctx.case.arrays("buffer", "teacher.")
    return TEACHERS[kind](block["interface"], networks.build(block["network"], arrays, arrays))
