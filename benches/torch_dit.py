"""The bench-s training step as a PyTorch user would write it, eager mode (or under
``torch.compile`` with ``--compile``), for benches/compare: the DiT of Peebles & Xie (the
facebookresearch/DiT layout: patch conv, fused qkv Linear, ``F.scaled_dot_product_attention``,
``nn.LayerNorm`` without affine, tanh GELU, adaLN-Zero modulation) with the SiT, EDM, MeanFlow
and sCT losses. MeanFlow's and sCT's JVP follow the recipe of the public PyTorch MeanFlow
ports, the fastest public one: ``torch.func.jvp`` under ``no_grad`` (attention on the math
backend there, since the fused CPU kernel has no forward-AD formula), then a separate forward
with gradients (fused SDPA). Same sizes, batch and settings as the crate's bench-s step: DiT
16x16x4, patch 2, hidden 192, depth 6, 3 heads, MLP ratio 4, 256 frequencies, 1000 classes,
label dropout 0.1; batch 16, float32; MeanFlow with the reference defaults (w = 1,
kappa = 0.5: two no-grad forwards for the guided velocity, fm_portion 0.75, cond drop 0.5).
``--net lightning``: the LightningDiT of the same sizes with the reference's ImageNet switches,
as its authors' PyTorch code writes it (RMSNorm with a weight, SwiGLU ``w12`` / ``w3`` at
width int(2/3 * 4D), the fast 2-D rotary embedding on q and k from precomputed cos / sin
tables, adaLN with shift); the same losses.

Worker protocol (as examples/bench_step.rs --serve): ``{"ready": ...}`` after setup, then
``warmup N`` / ``run N`` -> ``{"times_ms": [...]}``, ``trim`` (glibc malloc_trim, so that
VmRSS measures live memory) -> ``{"trimmed": true}``, ``quit``.

    python benches/torch_dit.py --interface sit|edm|meanflow|sct [--net dit|lightning] [--config bench-s|bench-xl]
                                [--device cpu|cuda] [--bf16] [--batch N] [--threads N] [--compile]
                                [--serve | --steps N]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BENCH_S = dict(input_size=16, patch_size=2, in_channels=4, hidden_size=192, depth=6, num_heads=3)
BENCH_XL = dict(input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16)
NULL = 1000


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    def __init__(self, d, freq=256):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t):
        half = self.freq // 2
        f = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        a = t[:, None].float() * f[None]
        return self.mlp(torch.cat([torch.cos(a), torch.sin(a)], dim=-1))


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, heads)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        m = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, m), nn.GELU(approximate="tanh"), nn.Linear(m, d))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c):
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN(c).chunk(6, dim=-1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1))
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh2, sc2))


class DiT(nn.Module):
    def __init__(self, input_size, patch_size, in_channels, hidden_size, depth, num_heads,
                 num_classes=1000, class_dropout_prob=0.1, take_dt=False):
        super().__init__()
        d, p = hidden_size, patch_size
        self.p, self.c, self.num_classes, self.drop = p, in_channels, num_classes, class_dropout_prob
        self.x_embedder = nn.Conv2d(in_channels, d, p, stride=p)
        g = input_size // p
        self.register_buffer("pos_embed", torch.randn(1, g * g, d) * 0.02)
        self.t_embedder = TimestepEmbedder(d)
        self.dt_embedder = TimestepEmbedder(d) if take_dt else None
        self.y_embedder = nn.Embedding(num_classes + 1, d)
        self.blocks = nn.ModuleList([Block(d, num_heads) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, p * p * in_channels)

    def forward(self, x, t, y, dt=None):
        # x: [B, C, H, W]
        b, _, h, _ = x.shape
        x = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
        if self.training and self.drop > 0:
            y = torch.where(torch.rand(b, device=x.device) < self.drop, torch.full_like(y, self.num_classes), y)
        c = self.t_embedder(t) + self.y_embedder(y)
        if self.dt_embedder is not None:
            c = c + self.dt_embedder(dt if dt is not None else torch.zeros_like(t))
        for blk in self.blocks:
            x = blk(x, c)
        sh, sc = self.final_adaLN(c).chunk(2, dim=-1)
        x = self.final(modulate(self.final_norm(x), sh, sc))
        g, p = h // self.p, self.p
        x = x.reshape(b, g, g, p, p, self.c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, self.c, h, h)


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, grid):
    half = head_dim // 2
    f = 1.0 / (10000 ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    a = torch.arange(grid, dtype=torch.float32)[:, None] * f[None]
    a = a.repeat_interleave(2, dim=-1)                                 # [grid, half]
    ang = torch.cat([a[:, None, :].expand(grid, grid, half), a[None, :, :].expand(grid, grid, half)], -1)
    ang = ang.reshape(grid * grid, head_dim)
    return ang.cos(), ang.sin()


def rotate_half(z):
    z = z.unflatten(-1, (-1, 2))
    return torch.stack([-z[..., 1], z[..., 0]], -1).flatten(-2)


class RopeAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.w12 = nn.Linear(d, 2 * hidden)
        self.w3 = nn.Linear(hidden, d)

    def forward(self, x):
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class LightningBlock(nn.Module):
    def __init__(self, d, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(d), RMSNorm(d)
        self.attn = RopeAttention(d, heads)
        self.mlp = SwiGLU(d, int(2 / 3 * int(d * mlp_ratio)))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c, cos, sin):
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN(c).chunk(6, dim=-1)
        x = x + g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1), cos, sin)
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh2, sc2))


class LightningDiT(DiT):
    """The DiT skeleton (patch conv, embedders, final layer) with LightningDiT blocks and an
    RMSNorm final norm."""

    def __init__(self, input_size, patch_size, in_channels, hidden_size, depth, num_heads, **kw):
        super().__init__(input_size, patch_size, in_channels, hidden_size, depth, num_heads, **kw)
        self.blocks = nn.ModuleList([LightningBlock(hidden_size, num_heads) for _ in range(depth)])
        self.final_norm = RMSNorm(hidden_size)
        cos, sin = rope_tables(hidden_size // num_heads, input_size // patch_size)
        self.register_buffer("rope_cos", cos)
        self.register_buffer("rope_sin", sin)

    def forward(self, x, t, y, dt=None):
        b, _, h, _ = x.shape
        x = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed
        if self.training and self.drop > 0:
            y = torch.where(torch.rand(b, device=x.device) < self.drop, torch.full_like(y, self.num_classes), y)
        c = self.t_embedder(t) + self.y_embedder(y)
        if self.dt_embedder is not None:
            c = c + self.dt_embedder(dt if dt is not None else torch.zeros_like(t))
        for blk in self.blocks:
            x = blk(x, c, self.rope_cos, self.rope_sin)
        sh, sc = self.final_adaLN(c).chunk(2, dim=-1)
        x = self.final(modulate(self.final_norm(x), sh, sc))
        g, p = h // self.p, self.p
        x = x.reshape(b, g, g, p, p, self.c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, self.c, h, h)


def bcast(v, x):
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def sit_loss(net, x, y):
    b = x.shape[0]
    t = torch.rand(b, device=x.device)
    s = math.sqrt(x[0].numel() / 4096)
    t = s * t / (1 + (s - 1) * t)
    n = torch.randn_like(x)
    tb = bcast(t, x)
    out = net((1 - tb) * x + tb * n, t, y)
    return ((out - (n - x)) ** 2).mean(dim=(1, 2, 3))


def edm_loss(net, x, y, xs=0.5):
    b = x.shape[0]
    sigma = torch.exp(torch.randn(b, device=x.device) * 1.2 - 1.2)
    n = torch.randn_like(x)
    sb = bcast(sigma, x)
    x_t = x + sb * n
    c_in = 1 / torch.sqrt(xs ** 2 + sb ** 2)
    c_out = sb * xs / torch.sqrt(sb ** 2 + xs ** 2)
    c_skip = xs ** 2 / (sb ** 2 + xs ** 2)
    d = c_skip * x_t + c_out * net(c_in * x_t, torch.log(sigma) / 4, y)
    w = (sb ** 2 + xs ** 2) / (sb * xs) ** 2
    return (w * (d - x) ** 2).mean(dim=(1, 2, 3))


def meanflow_loss(net, x, y, w=1.0, kappa=0.5, fm_portion=0.75, cond_drop=0.5, eps=1e-3, power=1.0,
                  fwd=None, jvp=None):
    """MeanFlow with the recipe of the public PyTorch ports: ``torch.func.jvp`` under ``no_grad``
    for ``du/dt`` (the math SDPA backend: the fused CPU kernel has no forward-AD formula), then
    a separate forward with gradients for ``u``. ``fwd`` / ``jvp``: compiled versions of the
    network call and of the JVP (``--compile``)."""
    fwd = net if fwd is None else fwd
    b = x.shape[0]
    a, c = torch.rand(b, device=x.device), torch.rand(b, device=x.device)
    t, r = torch.maximum(a, c), torch.minimum(a, c)
    r = torch.where(torch.arange(b, device=x.device) < int(b * fm_portion), t, r)
    n = torch.randn_like(x)
    tb = bcast(t, x)
    x_t = (1 - tb) * x + tb * n
    v = n - x
    neg_y = torch.full_like(y, NULL)
    net.eval()
    with torch.no_grad():
        if not (w == 1.0 and kappa == 0.0):
            zeros = torch.zeros_like(t)
            v_unc = fwd(x_t, t, neg_y, dt=zeros)
            v_c = fwd(x_t, t, y, dt=zeros)
            v = w * v + (1 - w - kappa) * v_unc + kappa * v_c
    net.train()
    k = (torch.rand(b, device=x.device) < cond_drop).sum()
    drop = torch.arange(b, device=x.device) < k
    y = torch.where(drop, neg_y, y)
    v = torch.where(bcast(drop, v), n - x, v)
    with torch.no_grad():
        if jvp is not None:
            dudt = jvp(x_t, t, r, y, v)
        else:
            dudt = meanflow_jvp(net, x_t, t, r, y, v)
    u = fwd(x_t, t, y, dt=t - r)
    target = (v - torch.clamp(bcast(t - r, v), 0.0, 1.0) * dudt).detach()
    l = ((u - target) ** 2).sum(dim=(1, 2, 3))
    return (1.0 / (l + eps) ** power).detach() * l


def meanflow_jvp(net, x_t, t, r, y, v):
    with sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(lambda x_t, t, r: net(x_t, t, y, dt=t - r), (x_t, t, r),
                              (v, torch.ones_like(t), torch.zeros_like(r)))[1]


def sct_jvp(net, x_in, t, y, tx, tt):
    with sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(lambda a, b: net(a, b, y), (x_in, t), (tx, tt))[1]


def sct_loss(net, x, y, xs=0.5, p_mean=-1.0, p_std=1.4, c=0.1, step=0, warmup=10000, fwd=None, jvp=None):
    """sCT (Lu & Song 2024, Algorithm 1) with the paper's defaults at step 0 (so r = 0; the JVP
    is computed all the same), the same recipe: ``torch.func.jvp`` under ``no_grad``, then a
    forward with gradients. The log-variance head is a zero-initialised linear map of a
    Fourier embedding of t, as the crate's."""
    fwd = net if fwd is None else fwd
    b = x.shape[0]
    t = torch.atan(torch.exp(torch.randn(b, device=x.device) * p_std + p_mean) / xs)
    z = torch.randn_like(x) * xs
    tb = bcast(t, x)
    cos, sin = torch.cos(tb), torch.sin(tb)
    x_t = cos * x + sin * z
    dxdt = cos * z - sin * x
    cs = torch.cos(t) * torch.sin(t)
    x_in = x_t / xs
    with torch.no_grad():
        tx, tt = bcast(cs, dxdt) * dxdt, cs * xs
        J = jvp(x_in, t, y, tx, tt) if jvp is not None else sct_jvp(net, x_in, t, y, tx, tt)
    F = fwd(x_in, t, y)
    F_sg = F.detach()
    r = min(1.0, step / warmup) if warmup else 1.0
    g = -(cos * cos) * (F_sg * xs - dxdt) - r * (cos * sin * x_t + J)
    g = g / bcast(g.flatten(1).norm(dim=1) + c, g)
    freqs = torch.exp(torch.linspace(0.0, 3.0, 8, device=x.device))
    a = t[:, None] * freqs
    w = (torch.cat([torch.sin(a), torch.cos(a)], -1) @ net.logvar_w + net.logvar_b)[:, 0]
    d = x[0].numel()
    l = ((F - F_sg - g.detach()) ** 2).flatten(1).sum(1)
    return torch.exp(w) / d * l - w


LOSSES = {"sit": sit_loss, "edm": edm_loss, "meanflow": meanflow_loss, "sct": sct_loss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interface", default="sit", choices=sorted(LOSSES))
    ap.add_argument("--net", default="dit", choices=["dit", "lightning"])
    ap.add_argument("--config", default="bench-s", choices=["bench-s", "bench-xl"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=0, help="override the configuration's batch")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the network (and MeanFlow's / sCT's JVP function)")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    arch, batch = (BENCH_S, 16) if a.config == "bench-s" else (BENCH_XL, 256)
    batch = a.batch or batch
    torch.manual_seed(0)
    net = (LightningDiT if a.net == "lightning" else DiT)(**arch, take_dt=(a.interface == "meanflow")).to(dev)
    if a.interface == "sct":
        net.logvar_w = nn.Parameter(torch.zeros(16, 1, device=dev))
        net.logvar_b = nn.Parameter(torch.zeros(1, device=dev))
    params = [p for p in net.parameters()]
    s = arch["input_size"]
    x = torch.randn(batch, arch["in_channels"], s, s, device=dev)
    y = (torch.arange(batch, device=dev) * 37) % 1000
    loss_fn = LOSSES[a.interface]
    compile_notes = []
    if a.compile:
        fwd = torch.compile(net)
        kw = {"fwd": fwd}
        if a.interface in ("meanflow", "sct"):
            eager = (lambda x_t, t, r, y, v: meanflow_jvp(net, x_t, t, r, y, v)) if a.interface == "meanflow" else \
                (lambda x_in, t, y, tx, tt: sct_jvp(net, x_in, t, y, tx, tt))
            compiled = torch.compile(eager)
            state = {"jvp": compiled}

            def jvp_fn(*args):
                # Inductor may fail to lower the JVP (torch 2.11 on CPU: "LoweringException:
                # NotImplementedError: ExpandView" at the patch convolution, whose weight
                # tangent is an expanded zero): the JVP then runs eagerly, the forwards stay compiled.
                try:
                    return state["jvp"](*args)
                except Exception as e:  # noqa: BLE001
                    if state["jvp"] is eager:
                        raise
                    print(f"torch.compile of the JVP failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                          "the JVP runs eagerly", file=sys.stderr)
                    compile_notes.append("jvp eager: " + str(e).splitlines()[0][:160])
                    state["jvp"] = eager
                    return eager(*args)
            kw["jvp"] = jvp_fn
        plain = loss_fn
        if a.interface in ("meanflow", "sct"):
            loss_fn = lambda net_, x_, y_: plain(net_, x_, y_, **kw)  # noqa: E731
        else:
            loss_fn = lambda net_, x_, y_: plain(fwd, x_, y_)  # noqa: E731
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if (a.bf16 and cuda) else contextlib.nullcontext()

    def run(n):
        out = []
        for _ in range(n):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            net.train()
            with amp:
                loss = loss_fn(net, x, y).mean()
            grads = torch.autograd.grad(loss, params)
            if cuda:
                torch.cuda.synchronize()
            out.append((time.perf_counter() - t0) * 1e3)
            del loss, grads
        return out

    info = {"impl": "torch", "interface": a.interface, "net": a.net, "compile": a.compile, "torch": torch.__version__, "device": str(dev),
            "threads": torch.get_num_threads(), "bf16": a.bf16, "batch": batch}
    if not a.serve:
        run(1)
        res = {"info": dict(info, compile_notes=compile_notes), "times_ms": run(a.steps)}
        if cuda:
            res["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
        print(json.dumps(res))
        return
    print(json.dumps({"ready": True, "info": info}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        if parts[0] in ("run", "warmup"):
            res = {"times_ms": run(int(parts[1])), "compile_notes": compile_notes}
            if cuda:
                res["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
            print(json.dumps(res), flush=True)
        elif parts[0] == "trim":
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            print(json.dumps({"trimmed": True}), flush=True)
        else:
            print(json.dumps({"error": f"unknown command {line!r}"}), flush=True)


if __name__ == "__main__":
    main()
