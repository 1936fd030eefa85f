"""The DiT (Peebles & Xie 2023) as the reference builds it (reference.md, "dit").

Channel-last images `[B, H, W, C]`, patches of `p x p`, `T = (input_size / p)^2` tokens of
width `D`. Kernels keep the reference's layout: dense `[in, out]`, the patch conv
`[p, p, C, D]`, attention `query/key/value` `[D, heads, hd]` and `out` `[heads, hd, D]`.
"""

import math

import torch
import torch.nn.functional as F

from ..case import PortError, settings

DEFAULTS = {
    "input_size": 32, "patch_size": 2, "in_channels": 4, "hidden_size": 1152, "depth": 28,
    "num_heads": 16, "mlp_ratio": 4.0, "continuous_time_embed": False, "freq_embed_size": 256,
    "num_classes": 1000, "class_dropout_prob": 0.1, "enable_dropout": True, "take_dt": False,
    "take_gw": False,
}


def linear(x, p, name):
    return x @ p[f"{name}.kernel"] + p[f"{name}.bias"]


def layer_norm(x, eps=1e-6):
    """LayerNorm without scale or bias; the variance as E[x^2] - E[x]^2, clamped at 0."""
    mean = x.mean(-1, keepdim=True)
    var = torch.clamp((x * x).mean(-1, keepdim=True) - mean * mean, min=0.0)
    return (x - mean) * torch.rsqrt(var + eps)


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class DiT:
    def __init__(self, block, params, buffers):
        self.cfg = c = settings(block, DEFAULTS, "dit")
        self.p = params
        self.pe = buffers["x_embedder.pe"]
        self.patch = c["patch_size"]
        self.grid = c["input_size"] // c["patch_size"]
        self.heads = c["num_heads"]

    # -- embeddings -------------------------------------------------------------------------

    def time_embed(self, name, s):
        """Frequency features of a scalar per example, then Linear - SiLU - Linear."""
        size = self.cfg["freq_embed_size"]
        if self.cfg["continuous_time_embed"]:
            basis = self.p[f"{name}.gaussian_basis"].detach()  # under stop_gradient: gradient 0
            a = (s[:, None] * basis[None]) * torch.tensor(2 * math.pi, dtype=torch.float32)
            feats = torch.cat([torch.sin(a), torch.cos(a)], -1)
        else:
            half = size // 2
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
            a = s[:, None] * freqs[None]
            feats = torch.cat([torch.cos(a), torch.sin(a)], -1)
            if size % 2:
                feats = torch.cat([feats, torch.zeros_like(feats[:, :1])], -1)
        h = F.silu(linear(feats, self.p, f"{name}.mlp.layers.0"))
        return linear(h, self.p, f"{name}.mlp.layers.2")

    def label_embed(self, y):
        """A table lookup; a label past the table's last row reads NaN, as JAX does (Q10)."""
        table = self.p["y_embedder.embedding_table.embedding"]
        rows = table.shape[0]
        emb = table[y.clamp(0, rows - 1)]
        inside = ((y >= 0) & (y < rows))[:, None]
        return torch.where(inside, emb, torch.full_like(emb, float("nan")))

    # -- blocks -------------------------------------------------------------------------------

    def attention(self, x, i):
        p, name = self.p, f"blocks.{i}.attn"
        q = torch.einsum("btd,dhk->bthk", x, p[f"{name}.query.kernel"]) + p[f"{name}.query.bias"]
        k = torch.einsum("btd,dhk->bthk", x, p[f"{name}.key.kernel"]) + p[f"{name}.key.bias"]
        v = torch.einsum("btd,dhk->bthk", x, p[f"{name}.value.kernel"]) + p[f"{name}.value.bias"]
        q = q / torch.sqrt(torch.tensor(q.shape[-1], dtype=torch.float32))
        w = torch.softmax(torch.einsum("bqhk,bshk->bhqs", q, k), dim=-1)
        o = torch.einsum("bhqs,bshk->bqhk", w, v)
        return torch.einsum("bqhk,hkd->bqd", o, p[f"{name}.out.kernel"]) + p[f"{name}.out.bias"]

    def mlp(self, x, i):
        h = F.gelu(linear(x, self.p, f"blocks.{i}.mlp.linear1"), approximate="tanh")
        return linear(h, self.p, f"blocks.{i}.mlp.linear2")

    def block(self, x, c, i):
        mod = linear(F.silu(c), self.p, f"blocks.{i}.adaLN_mod.layers.1")
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=-1)
        x = x + g1[:, None] * self.attention(modulate(layer_norm(x), sh1, sc1), i)
        x = x + g2[:, None] * self.mlp(modulate(layer_norm(x), sh2, sc2), i)
        return x

    # -- patches ------------------------------------------------------------------------------

    def patchify(self, x):
        b, h, w, ch = x.shape
        p, g = self.patch, self.grid
        if h != g * p or w != g * p:
            raise PortError(f"dit: input {tuple(x.shape)} does not match input_size {self.cfg['input_size']}")
        x = x.reshape(b, g, p, g, p, ch).permute(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p * ch)
        kernel = self.p["x_proj.kernel"]
        return x @ kernel.reshape(-1, kernel.shape[-1]) + self.p["x_proj.bias"] + self.pe

    def unpatchify(self, x):
        b = x.shape[0]
        p, g = self.patch, self.grid
        ch = x.shape[-1] // (p * p)
        return x.reshape(b, g, g, p, p, ch).permute(0, 1, 3, 2, 4, 5).reshape(b, g * p, g * p, ch)

    # -- forward ------------------------------------------------------------------------------

    def __call__(self, x, t, y=None, dt=None, gw=None, train=False, draws=None):
        c = self.cfg
        b = x.shape[0]
        k = c["num_classes"]
        if y is None:
            y = torch.full((b,), k, dtype=torch.int64)
        if train and c["enable_dropout"] and c["class_dropout_prob"] > 0:
            u = draws.take("label_dropout", "uniform", [b])
            drop = u < torch.tensor(c["class_dropout_prob"], dtype=torch.float32)
            y = torch.where(drop, torch.full_like(y, k), y)
        cond = self.time_embed("t_embedder", t) + self.label_embed(y)
        if c["take_dt"]:
            cond = cond + self.time_embed("dt_embedder", dt if dt is not None else torch.zeros_like(t))
        if c["take_gw"]:
            cond = cond + self.time_embed("gw_embedder", gw if gw is not None else torch.ones_like(t))
        h = self.patchify(x)
        features = []
        for i in range(c["depth"]):
            h = self.block(h, cond, i)
            features.append(h)
        sh, sc = linear(F.silu(cond), self.p, "final_layer.adaLN_mod.layers.1").chunk(2, dim=-1)
        out = linear(modulate(layer_norm(h), sh, sc), self.p, "final_layer.linear")
        return self.unpatchify(out), features
