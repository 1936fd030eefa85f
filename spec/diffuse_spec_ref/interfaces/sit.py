"""SiT (flow matching, noise at t = 1): the reference's ``SiTInterface``.

* ``c_in = 1``, ``c_out = 1``, ``c_skip = 0``, ``c_noise = t``.
* ``sample_t``: from the ``time`` stream, ``uniform`` U[0,1) or ``logitnormal``
  ``sigmoid(N * t_sigma + t_mu)``; ``lognormal`` is refused (ValueError), as in the
  reference.
* ``sample_n``: from the ``noise`` stream, ``N * n_sigma + n_mu``.
* ``x_t = (1 - t) x + t n``; ``target = n - x``.
* loss(x): ``t = sample_t([B])``; ``t = t_shift(t, sqrt(prod(x.shape[1:]) /
  t_shift_base))``; ``n = sample_n(x.shape)``; ``out = net(c_in * x_t, t, *args,
  **kwargs)[0]``; ``loss = mean_flat((out - target)^2)``. Draw order: time, noise, then
  whatever the network draws.
* ``pred(x_t, t) = net(c_in * x_t, t)[0]``; ``score = -(x_t + (1 - t) pred) / t``
  (infinite at ``t = 0``: quirk Q12).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .base import Interfaces, TrainingTimeDistType, _record


class SiTInterface(Interfaces):
    def __init__(
        self,
        network,
        train_time_dist_type="uniform",
        t_mu: float = 0.0,
        t_sigma: float = 1.0,
        n_mu: float = 0.0,
        n_sigma: float = 1.0,
        x_sigma: float = 0.5,
        t_shift_base: int = 4096,
        rngs=None,
    ):
        super().__init__(network, train_time_dist_type, rngs=rngs)
        self.t_mu = t_mu
        self.t_sigma = t_sigma
        self.n_mu = n_mu
        self.n_sigma = n_sigma
        self.x_sigma = x_sigma
        self.t_shift_base = t_shift_base

    def c_in(self, t):
        return jnp.ones_like(t)

    def c_out(self, t):
        return jnp.ones_like(t)

    def c_skip(self, t):
        return jnp.zeros_like(t)

    def c_noise(self, t):
        return t

    def sample_t(self, shape):
        key = self.rngs.time()
        kind = self.train_time_dist_type
        if kind == TrainingTimeDistType.UNIFORM:
            return jax.random.uniform(key, shape=shape)
        if kind == TrainingTimeDistType.LOGITNORMAL:
            return jax.nn.sigmoid(jax.random.normal(key, shape=shape) * self.t_sigma + self.t_mu)
        # the key has been drawn (the counter advanced) before the refusal, as in the reference
        raise ValueError(f"Training Time Distribution Type {kind} not supported.")

    def sample_n(self, shape):
        key = self.rngs.noise()
        return jax.random.normal(key, shape=shape) * self.n_sigma + self.n_mu

    def sample_x_t(self, x, n, t):
        t = self.bcast_right(t, x)
        return (1 - t) * x + t * n

    def target(self, x, n, t):
        return n - x

    def pred(self, x_t, t, *args, **kwargs):
        return self.network(self.bcast_right(self.c_in(t), x_t) * x_t, t, *args, **kwargs)[0]

    def score(self, x_t, t, *args, **kwargs):
        tangent = self.pred(x_t, t, *args, **kwargs)
        t = self.bcast_right(t, x_t)
        return -(x_t + (1 - t) * tangent) / t

    def loss(self, x, *args, return_aux=False, record=None, **kwargs):
        t = self.sample_t((x.shape[0],))
        t = self.t_shift(t, math.sqrt(math.prod(x.shape[1:]) / self.t_shift_base))
        n = self.sample_n(x.shape)
        x_t = self.sample_x_t(x, n, t)
        target = self.target(x, n, t)
        net_out, features = self.network(
            self.bcast_right(self.c_in(t), x_t) * x_t, t, *args, **kwargs
        )
        loss = self.mean_flat((net_out - target) ** 2)
        _record(record, t=t, n=n, x_t=x_t, target=target, net_out=net_out)
        if return_aux:
            return loss, net_out, features
        return {"loss": loss}
