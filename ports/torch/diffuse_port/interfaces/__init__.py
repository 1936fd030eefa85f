"""The interfaces: each turns a network into a training loss, a prediction and a score.

    iface.loss(net, x, y, draws) -> {"loss": [B], intermediates..., "features": [...]}
    iface.pred(net, x_t, t, y, r=None), iface.score(net, x_t, t, y, r=None)
    iface.c_in / c_out / c_skip / c_noise (t)

Adding an interface: one module with a class `(block, ctx)` (`ctx`: case.Context, for the
arrays an interface owns, like sCT's log-variance head or sCD's teacher), one line in INTERFACES.
"""

from . import edm, meanflow, repa, scd, sct, sit
from ..case import PortError

INTERFACES = {
    "sit": sit.SiT,
    "edm": edm.Edm,
    "mean_flow": meanflow.MeanFlow,
    "sct": sct.Sct,
    "scd": scd.Scd,
}


def build(block: dict, ctx=None):
    """The interface a settings block names; `ctx` (case.Context) holds the arrays it owns."""
    kind = block["type"]
    if kind not in INTERFACES:
        raise PortError(f"interface type {kind!r} is not ported (ported: {sorted(INTERFACES)})")
    return INTERFACES[kind](block, ctx)
