"""REPA (Yu et al. 2025): aligns the network's block features with frozen target features.

    f = features[repa_depth - 1];  proj = Linear - SiLU - Linear - SiLU - Linear (f)
    repa_loss = mean over T of -cos(x_feature, proj);  loss = diffusion_loss + weight * repa_loss
"""

import torch
import torch.nn.functional as F

from ..case import REQUIRED, settings

DEFAULTS = {"feature_dim": REQUIRED, "repa_loss_weight": REQUIRED, "repa_depth": REQUIRED, "proj_dim": REQUIRED}


class Repa:
    def __init__(self, block, inner, params):
        self.cfg = settings(block, DEFAULTS, "repa")
        self.inner = inner
        self.p = {k: v for k, v in params.items() if k.startswith("projector.")}

    def project(self, f):
        lin = lambda h, i: h @ self.p[f"projector.layers.{i}.kernel"] + self.p[f"projector.layers.{i}.bias"]
        return lin(F.silu(lin(F.silu(lin(f, 0)), 2)), 4)

    def loss(self, net, x, y, draws, x_feature):
        out = self.inner.loss(net, x, y, draws)
        proj = self.project(out["features"][self.cfg["repa_depth"] - 1])
        unit = lambda a: a / torch.linalg.vector_norm(a, dim=-1, keepdim=True)
        cos = (unit(x_feature) * unit(proj)).sum(-1)
        repa_loss = (-cos).mean(-1)
        loss = out["loss"] + self.cfg["repa_loss_weight"] * repa_loss
        return dict(loss=loss, diffusion_loss=out["loss"], repa_loss=repa_loss)
