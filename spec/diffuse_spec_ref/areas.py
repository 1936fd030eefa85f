"""The case areas: one module per area, each with ``fixture_cases() -> list[Case]`` and
``recompute(meta, arrays) -> dict | None``. Modules not written yet are skipped with a note.
"""

from __future__ import annotations

import importlib
import sys

AREAS = ["rng_cases", "coef_cases", "sit_edm_cases", "pred_cases", "sampler_cases",
         "meanflow_cases", "dit_cases", "repa_cases", "consistency_cases", "dino_cases",
         "lightning_cases"]


def load_areas(names=None, quiet: bool = False) -> dict:
    """``{area: module}`` for the areas present, in ``AREAS`` order."""
    out = {}
    for name in names or AREAS:
        try:
            mod = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{name}":
                raise  # the area exists but something it imports is missing: a real error
            if not quiet:
                print(f"note: area {name} not present yet, skipped", file=sys.stderr)
            continue
        for fn in ("fixture_cases", "recompute"):
            if not callable(getattr(mod, fn, None)):
                raise TypeError(f"area {name} lacks {fn}()")
        out[name] = mod
    return out
