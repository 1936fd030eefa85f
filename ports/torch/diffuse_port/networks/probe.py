"""The probe network (reference.md, "probe_mlp"): a one-hidden-layer MLP on the last axis,
conditioned on sinusoidal embeddings of `t` (and `dt`) and a class embedding.

    emb(s) = [sin(s freqs), cos(s freqs)]                       [B, 2K]
    cond   = emb(t) @ Wt + (emb(dt) @ Wd if dt is given) + E[y]   (y = 1000 when absent)
    h      = silu(x @ W1 + b1 + cond)                           (cond broadcast over the middle axes)
    out    = h @ W2 + b2;   features = [h as [B, T, H]]
"""

import torch

from .. import NULL_CLASS
from ..case import PortError, REQUIRED, settings

DEFAULTS = {"channels": REQUIRED, "hidden": REQUIRED, "freqs": REQUIRED}


class ProbeMlp:
    def __init__(self, block, params, buffers):
        self.cfg = settings(block, DEFAULTS, "probe_mlp")
        self.p = params
        self.freqs = buffers["freqs"]

    def emb(self, s):
        a = s[:, None] * self.freqs
        return torch.cat([torch.sin(a), torch.cos(a)], -1)

    def __call__(self, x, t, y=None, dt=None, gw=None, train=False, draws=None):
        p = self.p
        b = x.shape[0]
        if y is None:
            y = torch.full((b,), NULL_CLASS, dtype=torch.int64)
        if bool(((y < 0) | (y > NULL_CLASS)).any()):
            raise PortError(f"probe_mlp: labels outside 0..=1000: {y.tolist()}")  # the crate refuses them (Q10)
        cond = self.emb(t) @ p["Wt"]
        if dt is not None:
            cond = cond + self.emb(dt) @ p["Wd"]
        cond = cond + p["E"][y]
        cond = cond.reshape((b,) + (1,) * (x.dim() - 2) + (-1,))
        h = torch.nn.functional.silu(x @ p["W1"] + p["b1"] + cond)
        out = h @ p["W2"] + p["b2"]
        return out, [h.reshape(b, -1, h.shape[-1])]
