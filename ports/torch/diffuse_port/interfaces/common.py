"""Helpers every interface shares (reference.md, "Conventions" and "Time and noise")."""

import torch

from .. import NULL_CLASS
from ..case import PortError


def f32(value) -> torch.Tensor:
    """A Python number as the float32 scalar the reference's arithmetic sees."""
    return torch.tensor(value, dtype=torch.float32)


def bcast_right(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A `[B]` vector as `[B, 1, ..., 1]`, to multiply a `[B, ...]` array."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def mean_flat(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(a.shape[0], -1).mean(-1)


def sum_flat(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(a.shape[0], -1).sum(-1)


def t_shift(t: torch.Tensor, s: float) -> torch.Tensor:
    """The resolution shift `s t / (1 + (s - 1) t)` (SD3, eq. 23). `s` and `s - 1` are
    Python floats in the reference: each enters the float32 arithmetic rounded once."""
    return f32(s) * t / (1 + f32(s - 1) * t)


def null_labels(b: int) -> torch.Tensor:
    return torch.full((b,), NULL_CLASS, dtype=torch.int64)


def sample_t(draws, feeds: str, cfg: dict, b: int) -> torch.Tensor:
    """The interface's time draw from its raw file: `uniform` is the draw itself; `logitnormal`
    and `lognormal` map a standard normal `z` to `sigmoid(z t_sigma + t_mu)` / `exp(...)`."""
    dist = cfg["train_time_dist_type"]
    if dist == "uniform":
        return draws.take(feeds, "uniform", [b])
    z = draws.take(feeds, "normal", [b])
    a = z * f32(cfg["t_sigma"]) + f32(cfg["t_mu"])
    if dist == "logitnormal":
        return torch.sigmoid(a)
    if dist == "lognormal":
        return torch.exp(a)
    raise PortError(f"unknown train_time_dist_type {dist!r}")


def sample_n(draws, cfg: dict, shape) -> torch.Tensor:
    """The noise `z n_sigma + n_mu` from its raw standard normal draw."""
    z = draws.take("n", "normal", list(shape))
    return z * f32(cfg["n_sigma"]) + f32(cfg["n_mu"])


# The crate's `jvp` option (docs/format.md); equal values, so the port accepts each and always
# computes torch.func.jvp.
JVP_METHODS = ("auto", "fused", "double_backward", "forward_ad")

TIME_NOISE_DEFAULTS = {
    "train_time_dist_type": "uniform", "t_mu": 0.0, "t_sigma": 1.0, "n_mu": 0.0, "n_sigma": 1.0,
    "x_sigma": 0.5,
}
"""The settings of sample_t / sample_n and their reference defaults (format.md, `interface`)."""
