"""LightningDiT as the reference builds it (reference.md, "lightning_dit").

The DiT's patch embedding, time / label embedders and unpatchify, with RMSNorm, SwiGLU,
2-D rotary embeddings, a q/k LayerNorm shared by q and k (Q18) and adaLN with or without a
shift. Attention has one fused `to_qkv` kernel `[D, 3D]` and an `out` kernel `[D, D]`.
"""

import math

import torch
import torch.nn.functional as F

from ..case import PortError, settings
from .dit import DiT, layer_norm, linear

DEFAULTS = {
    "input_size": 32, "patch_size": 2, "in_channels": 4, "hidden_size": 1152, "depth": 28,
    "num_heads": 16, "mlp_ratio": 4.0, "continuous_time_embed": False, "freq_embed_size": 256,
    "num_classes": 1000, "class_dropout_prob": 0.1, "enable_dropout": True, "take_dt": False,
    "take_gw": False, "qk_norm": False, "attn_norm_layer": "layer_norm", "use_rope": False,
    "swiglu": False, "adaln_shift": False, "rms_norm": False,
}

EPS = 1e-6


def rms_norm(x, weight):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + EPS) * weight


def layer_norm_affine(x, scale, bias):
    mean = x.mean(-1, keepdim=True)
    var = torch.clamp((x * x).mean(-1, keepdim=True) - mean * mean, min=0.0)
    return (x - mean) * (torch.rsqrt(var + EPS) * scale) + bias


def rotate_half(z):
    """(z[2m], z[2m+1]) -> (-z[2m+1], z[2m])."""
    pairs = z.reshape(*z.shape[:-1], -1, 2)
    return torch.stack([-pairs[..., 1], pairs[..., 0]], -1).reshape(z.shape)


class LightningDiT(DiT):
    def __init__(self, block, params, buffers):
        self.cfg = c = settings(block, DEFAULTS, "lightning_dit")
        if c["qk_norm"] and c["attn_norm_layer"] == "rms_norm":
            raise PortError("lightning_dit: qk_norm with attn_norm_layer rms_norm cannot be built (Q16)")
        self.p = params
        self.pe = buffers["x_embedder.pe"]
        self.rope = (buffers["feat_rope.freqs_cos"], buffers["feat_rope.freqs_sin"]) if c["use_rope"] else None
        self.patch = c["patch_size"]
        self.grid = c["input_size"] // c["patch_size"]
        self.heads = c["num_heads"]

    def norm(self, x, name):
        if self.cfg["rms_norm"]:
            return rms_norm(x, self.p[f"{name}.rms_weight"])
        return layer_norm(x)

    def attention(self, x, i):
        p, name = self.p, f"blocks.{i}.attn"
        b, n, d = x.shape
        h = self.heads
        qkv = linear(x, p, f"{name}.to_qkv").reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                 # [B, h, T, hd]
        if self.cfg["qk_norm"]:
            scale, bias = p[f"{name}.k_norm.scale"], p[f"{name}.k_norm.bias"]  # one norm for both (Q18)
            q, k = layer_norm_affine(q, scale, bias), layer_norm_affine(k, scale, bias)
        if self.rope is not None:
            cos, sin = self.rope
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        kt = k.transpose(-2, -1) / torch.tensor(math.sqrt(d // h), dtype=torch.float32)
        o = torch.softmax(q @ kt, dim=-1) @ v
        return linear(o.transpose(1, 2).reshape(b, n, d), p, f"{name}.out")

    def mlp(self, x, i):
        name = f"blocks.{i}.mlp"
        if self.cfg["swiglu"]:
            a, g = linear(x, self.p, f"{name}.linear12").chunk(2, dim=-1)
            return linear(F.silu(a) * g, self.p, f"{name}.linear3")
        return linear(F.gelu(linear(x, self.p, f"{name}.linear1"), approximate="tanh"), self.p, f"{name}.linear2")

    def block(self, x, c, i):
        mod = linear(F.silu(c), self.p, f"blocks.{i}.adaLN_mod.layers.1")
        if self.cfg["adaln_shift"]:
            sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=-1)
        else:
            sc1, g1, sc2, g2 = mod.chunk(4, dim=-1)
            sh1 = sh2 = torch.zeros_like(sc1)
        x = x + g1[:, None] * self.attention(self.norm(x, f"blocks.{i}.norm1") * (1 + sc1[:, None]) + sh1[:, None], i)
        x = x + g2[:, None] * self.mlp(self.norm(x, f"blocks.{i}.norm2") * (1 + sc2[:, None]) + sh2[:, None], i)
        return x

    def __call__(self, x, t, y=None, dt=None, gw=None, train=False, draws=None):
        c = self.cfg
        b = x.shape[0]
        k = c["num_classes"]
        if y is None:
            y = torch.full((b,), k, dtype=torch.int64)
        if train and c["class_dropout_prob"] > 0:  # enable_dropout is ignored (Q17)
            u = draws.take("label_dropout", "uniform", [b])
            y = torch.where(u < torch.tensor(c["class_dropout_prob"], dtype=torch.float32), torch.full_like(y, k), y)
        cond = self.time_embed("t_embedder", t) + self.label_embed(y)
        for flag, name, value in (("take_dt", "dt", dt), ("take_gw", "gw", gw)):
            if c[flag]:
                if value is None:
                    raise PortError(f"lightning_dit: {flag} and no {name} (Q15: the reference cannot run this)")
                cond = cond + self.time_embed(f"{name}_embedder", value)
        h = self.patchify(x)
        features = []
        for i in range(c["depth"]):
            h = self.block(h, cond, i)
            features.append(h)
        sh, sc = linear(F.silu(cond), self.p, "final_layer.adaLN_mod.layers.1").chunk(2, dim=-1)
        out = linear(self.norm(h, "final_layer.norm") * (1 + sc[:, None]) + sh[:, None], self.p, "final_layer.linear")
        return self.unpatchify(out), features
