"""The image encoders (format.md, "`encoder`"). An encoder is built from its settings block and
its parameters, and called on preprocessed pixels; `preprocess` is the encoder's own.

Adding an encoder: one module with a `preprocess` function and a class taking
`(cfg_block, params)`, one line in ENCODERS.
"""

from ..case import PortError
from . import dino

ENCODERS = {
    "dino": (dino.preprocess, dino.Dino),
}


def build(block: dict, params: dict):
    """`(preprocess, encoder)` for the settings block."""
    kind = block["type"]
    if kind not in ENCODERS:
        raise PortError(f"encoder type {kind!r} is not ported (ported: {sorted(ENCODERS)})")
    preprocess, encoder = ENCODERS[kind]
    return preprocess, encoder(block, params)
