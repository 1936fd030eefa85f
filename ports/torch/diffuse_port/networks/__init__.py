"""The backbones. A network is built from its settings block and its arrays, and called as

    out, features = net(x, t, y=None, dt=None, gw=None, train=False, draws=None)

`train` is the mode (explicit: the DiT drops labels in train mode, taking the draw from
`draws`); `features` is the list of per-block tokens `[B, T, hidden]`.

Adding a network: one module with a class taking `(cfg_block, params, buffers)`, one line in
NETWORKS.
"""

from ..case import PortError
from . import dit, lightning_dit, probe

NETWORKS = {
    "probe_mlp": probe.ProbeMlp,
    "dit": dit.DiT,
    "lightning_dit": lightning_dit.LightningDiT,
}


def build(block: dict, params: dict, buffers: dict):
    """The network a settings block names, on the given parameter and buffer arrays."""
    kind = block["type"]
    if kind not in NETWORKS:
        raise PortError(f"network type {kind!r} is not ported (ported: {sorted(NETWORKS)})")
    return NETWORKS[kind](block, params, buffers)
