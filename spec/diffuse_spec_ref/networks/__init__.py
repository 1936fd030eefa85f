"""Networks of the golden cases: ``probe_mlp`` here; ``dit`` where its module exists.

``build_network(cfg, arrays, rngs)`` rebuilds a network from a case's ``network`` block
and its ``param.*`` / ``buffer.*`` arrays.
"""

from __future__ import annotations

import importlib

from .probe_mlp import ProbeMLP, init_probe_mlp, probe_mlp_apply


def _split(arrays: dict, role: str) -> dict:
    pre = role + "."
    return {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}


def build_network(cfg: dict, arrays: dict, rngs=None):
    kind = cfg["type"]
    if kind == "probe_mlp":
        return ProbeMLP(_split(arrays, "param"), _split(arrays, "buffer"), rngs=rngs)
    if kind == "dit":
        mod = importlib.import_module(".dit", __name__)
        if hasattr(mod, "build_network"):
            return mod.build_network(cfg, arrays, rngs)
        raise KeyError("networks.dit has no build_network(); build the DiT through that module")
    raise KeyError(f"network type {kind!r} not available in this restatement")


__all__ = ["ProbeMLP", "init_probe_mlp", "probe_mlp_apply", "build_network"]
