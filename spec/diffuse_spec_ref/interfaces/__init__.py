"""JAX restatement of the reference's interfaces (diffuse_nnx ``interfaces/``).

``make_interface(cfg, network, rngs)`` builds one from a case's ``interface`` block
(``type`` plus the reference's own argument names; absent ones take the defaults).
Other modules (MeanFlow, REPA) register themselves in ``INTERFACES`` or are found by
``_lazy`` below when present.
"""

from __future__ import annotations

import importlib
import inspect

from .base import Interfaces, TrainingTimeDistType, parse_time_dist
from .edm import EDMInterface
from .sit import SiTInterface

INTERFACES = {"sit": SiTInterface, "edm": EDMInterface}

# interface types implemented in sibling modules written elsewhere: type -> (module, class)
_lazy = {
    "mean_flow": ((".mean_flow", ".meanflow"), "MeanFlowInterface"),
}


def interface_class(kind: str):
    if kind in INTERFACES:
        return INTERFACES[kind]
    if kind in _lazy:
        mods, cls = _lazy[kind]
        for m in mods:
            try:
                mod = importlib.import_module(m, __name__)
            except ModuleNotFoundError:
                continue
            return getattr(mod, cls)
    raise KeyError(f"interface type {kind!r} not available in this restatement")


def make_interface(cfg: dict, network, rngs=None):
    cfg = dict(cfg)
    kind = cfg.pop("type")
    cls = interface_class(kind)
    if rngs is not None:
        if "rngs" in inspect.signature(cls.__init__).parameters:
            cfg["rngs"] = rngs
        else:
            # the reference's own classes read the streams as network.rngs
            network.rngs = rngs
    return cls(network, **cfg)


__all__ = [
    "Interfaces",
    "TrainingTimeDistType",
    "parse_time_dist",
    "SiTInterface",
    "EDMInterface",
    "INTERFACES",
    "interface_class",
    "make_interface",
]
