"""Base of the interfaces: the reference's ``Interfaces`` (diffuse_nnx ``interfaces/continuous.py``).

An interface wraps a network ``net(x, t, *args, y=None, dt=None, **kw) -> (out, features)``
and draws its randomness from one shared ``nnx.Rngs`` (streams ``time``, ``noise``,
``label_dropout``; the network's own draws, e.g. DiT label dropout, advance the same
counters). The reference reads the streams as ``self.network.rngs``; here ``rngs`` may
also be handed to the constructor (it defaults to ``network.rngs``).

Helpers, as in the reference:

* ``bcast_right(x, y)`` reshapes ``x [B]`` to ``[B, 1, ..., 1]`` (rank of ``y``);
* ``mean_flat(x)`` means over every axis but the first;
* ``t_shift(t, s) = s * t / (1 + (s - 1) * t)`` with ``s`` a Python float.

Every expression below keeps the reference's operand order and its Python-float
constants (weakly typed, so they enter float32 arithmetic as rounded float32 values),
because eager float32 results depend on both.

Restatement-only addition: ``loss(..., record=dict)`` stores the intermediates of the
call (``t``, ``n``, ``x_t``, ``target``, ``net_out``; MeanFlow adds ``r``) in ``record``;
the golden cases carry them as ``out.*``.
"""

from __future__ import annotations

import enum

import jax.numpy as jnp
from flax import nnx


class TrainingTimeDistType(enum.Enum):
    UNIFORM = 1
    LOGNORMAL = 2
    LOGITNORMAL = 3


def parse_time_dist(value) -> TrainingTimeDistType:
    """'uniform' | 'lognormal' | 'logitnormal' (underscores ignored, any case) or the enum."""
    if isinstance(value, TrainingTimeDistType):
        return value
    return TrainingTimeDistType[str(value).replace("_", "").upper()]


class Interfaces(nnx.Module):
    """Common part of the diffusion / flow-matching interfaces."""

    def __init__(self, network, train_time_dist_type, rngs: nnx.Rngs | None = None):
        self.network = network
        self.train_time_dist_type = parse_time_dist(train_time_dist_type)
        if rngs is None:
            rngs = getattr(network, "rngs", None)
        self.rngs = rngs

    # -- preconditioning and paths: one definition per interface --------------
    def c_in(self, t):
        raise NotImplementedError

    def c_out(self, t):
        raise NotImplementedError

    def c_skip(self, t):
        raise NotImplementedError

    def c_noise(self, t):
        raise NotImplementedError

    def sample_t(self, shape):
        raise NotImplementedError

    def sample_n(self, shape):
        raise NotImplementedError

    def sample_x_t(self, x, n, t):
        raise NotImplementedError

    def target(self, x, n, t):
        raise NotImplementedError

    def pred(self, x_t, t, *args, **kwargs):
        raise NotImplementedError

    def score(self, x_t, t, *args, **kwargs):
        raise NotImplementedError

    def loss(self, x, *args, return_aux=False, record=None, **kwargs):
        raise NotImplementedError

    def __call__(self, x, *args, **kwargs):
        """The per-example loss: ``{'loss': [B]}``, or ``(loss, net_out, features)``
        with ``return_aux=True`` (what REPA consumes)."""
        return self.loss(x, *args, **kwargs)

    # -- helpers ------------------------------------------------------------
    @staticmethod
    def mean_flat(x):
        return jnp.mean(x, axis=list(range(1, x.ndim)))

    @staticmethod
    def bcast_right(x, y):
        assert len(y.shape) >= x.ndim
        return x.reshape(x.shape + (1,) * (len(y.shape) - x.ndim))

    @staticmethod
    def t_shift(t, shift):
        return shift * t / (1 + (shift - 1) * t)


def _record(record, **values):
    if record is not None:
        record.update(values)
