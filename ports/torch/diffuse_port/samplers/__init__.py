"""The samplers: `sampler.sample(model, x0, y, w, draws) -> (grid, x_final)`.

Adding a sampler: one module with a `common.Sampler` subclass (`forward`, `last_step`), one
line in SAMPLERS (keyed by the reference's `type` spelling).
"""

from ..case import PortError
from .common import Model
from .euler import Euler
from .euler_jump import EulerJump
from .euler_maruyama import EulerMaruyama
from .heun import Heun

SAMPLERS = {
    "euler": Euler,
    "heun": Heun,
    "euler-maruyama": EulerMaruyama,
    "euler_jump": EulerJump,
}


def build(block: dict):
    kind = block["type"]
    if kind not in SAMPLERS:
        raise PortError(f"sampler type {kind!r} is not ported (ported: {sorted(SAMPLERS)})")
    return SAMPLERS[kind](block)


__all__ = ["Model", "SAMPLERS", "build"]
