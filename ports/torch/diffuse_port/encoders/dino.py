"""REPA's feature detector: DINOv2 behind the reference's JAX preprocess (docs/dino.md,
format.md "`encoder`").

    pixels = preprocess(x)              # [B, H, W, 3] in [-1, 1] -> [B, 3, h, h], h = 224 (H // 256)
    features = Dino(block, params)(pixels)   # -> [B, (h / 14)^2, D], the CLS token dropped

The resize is JAX's bicubic (`jax.image.resize(..., "bicubic", antialias=False)`), written out:
Keys' cubic with `a = -0.5`, float32 sample positions, taps outside the image dropped and the
rest renormalised. torch's `F.interpolate(mode="bicubic")` is a different function (`a = -0.75`,
edge taps clamped): docs/dino.md measures it 1e-1 of the pixel scale away.

The ViT is transformers' `FlaxDinov2Model` as the reference runs it: Flax LayerNorm (variance
`E[x^2] - E[x]^2`, the scale folded into the `rsqrt`), exact-erf GELU, the layer scale's
`layerscale_value` applied twice over the stored `lambda1`. Kernels keep the Flax layout:
dense `[in, out]`, the patch conv `[14, 14, 3, D]`.
"""

import torch
import torch.nn.functional as F

from ..case import REQUIRED, PortError, settings

f32 = torch.float32

# transformers' Dinov2Config defaults (facebook/dinov2-base); `intermediate_size` is accepted
# and never read, as Dinov2Config does: the MLP is `mlp_ratio * hidden_size` wide.
DEFAULTS = {
    "stage": REQUIRED, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": None, "mlp_ratio": 4, "patch_size": 14, "image_size": 224,
    "layer_norm_eps": 1e-6, "layerscale_value": 1.0, "hidden_act": "gelu",
    "use_swiglu_ffn": False, "qkv_bias": True,
}

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=f32)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225], dtype=f32)


# -- JAX's bicubic resize ------------------------------------------------------------------------


def fma(a, b, c):
    """float32's fused multiply-add `a * b + c`, rounded once, as XLA compiles the resize's
    positions and kernel. The product of two float32 values is exact in float64, so the only
    rounding is the final one to float32 (up to a double rounding that does not occur here)."""
    a, b, c = (torch.as_tensor(v, dtype=f32).double() for v in (a, b, c))
    return (a * b + c).to(f32)


def keys_cubic(d):
    """Keys' cubic convolution kernel with `a = -0.5` at float32 distances `d >= 0`, in the
    Horner form and with the fused multiply-adds of the reference's compiled resize:

        |d| < 1:      ((1.5 d - 2.5) d) d + 1
        1 <= |d| < 2: ((-0.5 d + 2.5) d - 4) d + 2
        |d| >= 2:     0

    Unfused float32 costs up to 12 of the 16 ulp of scale `out.pixels` allows: the outer taps
    are small differences of numbers near 2."""
    near = fma(fma(1.5, d, -2.5) * d, d, 1.0)
    far = fma(fma(fma(-0.5, d, 2.5), d, -4.0), d, 2.0)
    return torch.where(d >= 2.0, torch.zeros_like(d), torch.where(d >= 1.0, far, near))


def resize_weights(n_in: int, n_out: int, inv_scale: torch.Tensor) -> torch.Tensor:
    """The `[n_in, n_out]` matrix of one axis: output `j` samples the input at the float32
    position `c_j = (j + 0.5) * inv_scale - 0.5` (one fused multiply-add); taps outside
    `0..n_in-1` get no weight and each column is renormalised to sum to 1. A column whose
    weights sum to at most 1000 eps, or whose `c_j` lies outside `[-0.5, n_in - 0.5]`, is zero
    (JAX's rule; neither happens for the image and table resizes here)."""
    pos = fma(torch.arange(n_out, dtype=f32) + 0.5, inv_scale, -0.5)
    dist = (pos[None, :] - torch.arange(n_in, dtype=f32)[:, None]).abs()
    w = keys_cubic(dist)
    total = w.sum(0, keepdim=True)
    usable = (total.abs() > 1000 * torch.finfo(f32).eps) & (pos >= -0.5) & (pos <= n_in - 0.5)
    return torch.where(usable, w / total, torch.zeros_like(w))


def resize_axis(x: torch.Tensor, axis: int, n_out: int, inv_scale: torch.Tensor) -> torch.Tensor:
    """Resample one axis of `x` to `n_out` samples (each output a float32 sum over its taps)."""
    w = resize_weights(x.shape[axis], n_out, inv_scale)
    return torch.tensordot(x.movedim(axis, -1), w, dims=1).movedim(-1, axis)


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """Images `[B, H, W, 3]` in `[-1, 1]` -> the encoder's pixels `[B, 3, h, h]`,
    `h = 224 * (H // 256)` (Q19: 288 and 511 give 224)."""
    if x.dim() != 4 or x.shape[-1] != 3:
        raise PortError(f"dino: images must be [B, H, W, 3], got {tuple(x.shape)}")
    height = x.shape[1]
    h = 224 * (height // 256)                # a non-square image is squashed to h x h as well
    if h == 0:
        raise PortError(f"dino: height {height} is below 256 (Q19: the resize would be to 0 pixels)")
    x = (x + 1.0) / 2.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    # jax.image.resize keeps each axis's scale n_out / n_in a Python float: the inverse is
    # computed in float64 and rounded to float32 once. Height first, then width (the other
    # order is up to 3 ulp of scale further from the reference).
    for axis in (1, 2):
        inv = torch.tensor(1.0 / (h / x.shape[axis]), dtype=f32)
        x = resize_axis(x, axis, h, inv)
    return x.permute(0, 3, 1, 2)


# -- the ViT ---------------------------------------------------------------------------------------


def linear(x, p, name):
    out = x @ p[f"{name}.kernel"]
    return out + p[f"{name}.bias"] if f"{name}.bias" in p else out


def layer_norm(x, p, name, eps):
    """Flax's LayerNorm: variance `E[x^2] - E[x]^2` (clamped at 0), `(x - mean) * (rsqrt(var + eps) * scale) + bias`."""
    mean = x.mean(-1, keepdim=True)
    var = torch.clamp((x * x).mean(-1, keepdim=True) - mean * mean, min=0.0)
    mul = torch.rsqrt(var + eps) * p[f"{name}.scale"]
    return (x - mean) * mul + p[f"{name}.bias"]


class Dino:
    def __init__(self, block, params):
        self.cfg = c = settings(block, DEFAULTS, "dino")
        if c["use_swiglu_ffn"] or c["hidden_act"] != "gelu":
            raise PortError("dino: only the GELU MLP is ported (the reference's Flax model has no SwiGLU)")
        self.p = params
        self.d = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.patch = c["patch_size"]
        self.eps = torch.tensor(c["layer_norm_eps"], dtype=f32)
        self.ls = torch.tensor(c["layerscale_value"], dtype=f32)

    def position_table(self, s: int, batch: int) -> torch.Tensor:
        """`[1, 1 + s*s, D]`: the CLS row, then the 16 x 16 patch rows resized to `s x s`
        with the JAX resize at the scale `float32((s + 0.1) / 16)`."""
        table = self.p["embeddings.position_embeddings"]
        n = round((table.shape[1] - 1) ** 0.5)
        if s == n:
            return table
        if batch > 1:
            raise PortError("dino: batch > 1 with a resized position table (the reference fails: it "
                            "reshapes the table to [B, -1, D])")
        # transformers' Flax interpolation: the scale is a float32 array, so its inverse too
        inv = 1.0 / torch.tensor((s + 0.1) / n, dtype=f32)
        grid = table[:, 1:].reshape(1, n, n, self.d)
        for axis in (1, 2):
            grid = resize_axis(grid, axis, s, inv)
        grid = grid.reshape(1, s * s, self.d)
        return torch.cat([table[:, :1], grid], dim=1)

    def embed(self, pixels):
        b, _, h, w = pixels.shape
        p, s = self.patch, h // self.patch
        x = pixels.permute(0, 2, 3, 1)                                  # NHWC, as the Flax conv
        x = x.reshape(b, s, p, s, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, s * s, p * p * 3)
        kernel = self.p["embeddings.patch_embeddings.projection.kernel"]
        tokens = x @ kernel.reshape(-1, self.d) + self.p["embeddings.patch_embeddings.projection.bias"]
        cls = self.p["embeddings.cls_token"].expand(b, 1, self.d)
        return torch.cat([cls, tokens], dim=1) + self.position_table(s, b)

    def attention(self, x, i):
        name = f"encoder.layer.{i}.attention"
        b, t, _ = x.shape
        hd = self.d // self.heads
        q, k, v = (linear(x, self.p, f"{name}.attention.{n}").reshape(b, t, self.heads, hd)
                   for n in ("query", "key", "value"))
        q = q / torch.sqrt(torch.tensor(hd, dtype=f32))
        w = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k), dim=-1)
        o = torch.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, t, self.d)
        return linear(o, self.p, f"{name}.output.dense")

    def layer_scale(self, x, i, which):
        # Flax's Dinov2LayerScale multiplies the stored lambda1 by layerscale_value, twice
        lam = self.ls * self.p[f"encoder.layer.{i}.layer_scale{which}.lambda1"] * self.ls
        return lam * x

    def mlp(self, x, i):
        h = F.gelu(linear(x, self.p, f"encoder.layer.{i}.mlp.fc1"), approximate="none")  # exact erf
        return linear(h, self.p, f"encoder.layer.{i}.mlp.fc2")

    def layer(self, x, i):
        """Pre-LN: `x + ls1 * attn(norm1(x))`, then `x + ls2 * mlp(norm2(x))`."""
        norm = lambda x, which: layer_norm(x, self.p, f"encoder.layer.{i}.norm{which}", self.eps)
        x = x + self.layer_scale(self.attention(norm(x, 1), i), i, 1)
        return x + self.layer_scale(self.mlp(norm(x, 2), i), i, 2)

    def __call__(self, pixels):
        x = self.embed(pixels)
        for i in range(self.cfg["num_hidden_layers"]):
            x = self.layer(x, i)
        x = layer_norm(x, self.p, "layernorm", self.eps)
        return x[:, 1:]
