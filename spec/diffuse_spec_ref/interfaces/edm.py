"""EDM (t is sigma): the reference's ``EDMInterface``.

* ``c_in = 1 / sqrt(xs^2 + t^2)``, ``c_out = t xs / sqrt(t^2 + xs^2)``,
  ``c_skip = xs^2 / (t^2 + xs^2)``, ``c_noise = log(t) / 4`` (``-inf`` at ``t = 0``:
  quirk Q12). ``xs^2`` is the Python float ``x_sigma ** 2`` rounded once to float32.
* ``sample_t``: ``time`` stream, ``uniform``, ``lognormal`` ``exp(N t_sigma + t_mu)``,
  or ``logitnormal``; ``sample_n``: ``noise`` stream, ``N n_sigma + n_mu``.
* loss(x): ``s = sample_t([B])`` (no shift); ``n = sample_n``; ``x_t = x + s n``;
  ``F = net(c_in(s) x_t, c_noise(s))[0]``; ``D = c_skip x_t + c_out F``;
  ``w = (s^2 + xs^2) / (s xs)^2``; ``loss = mean_flat(w (D - x)^2)``.
* ``pred = (x_t - D) / t``; ``score = -(x_t - pred) / t^2``. Quirk Q2: the score the
  denoiser implies is ``-pred / t``; the reference's formula is kept.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .base import Interfaces, TrainingTimeDistType, _record


class EDMInterface(Interfaces):
    def __init__(
        self,
        network,
        train_time_dist_type="lognormal",
        t_mu: float = 0.0,
        t_sigma: float = 1.0,
        n_mu: float = 0.0,
        n_sigma: float = 1.0,
        x_sigma: float = 0.5,
        rngs=None,
    ):
        super().__init__(network, train_time_dist_type, rngs=rngs)
        self.t_mu = t_mu
        self.t_sigma = t_sigma
        self.n_mu = n_mu
        self.n_sigma = n_sigma
        self.x_sigma = x_sigma

    def c_in(self, t):
        return 1 / jnp.sqrt(self.x_sigma ** 2 + t ** 2)

    def c_out(self, t):
        return t * self.x_sigma / jnp.sqrt(t ** 2 + self.x_sigma ** 2)

    def c_skip(self, t):
        return self.x_sigma ** 2 / (t ** 2 + self.x_sigma ** 2)

    def c_noise(self, t):
        return jnp.log(t) / 4

    def sample_t(self, shape):
        key = self.rngs.time()
        kind = self.train_time_dist_type
        if kind == TrainingTimeDistType.UNIFORM:
            return jax.random.uniform(key, shape=shape)
        if kind == TrainingTimeDistType.LOGNORMAL:
            return jnp.exp(jax.random.normal(key, shape=shape) * self.t_sigma + self.t_mu)
        if kind == TrainingTimeDistType.LOGITNORMAL:
            return jax.nn.sigmoid(jax.random.normal(key, shape=shape) * self.t_sigma + self.t_mu)
        raise ValueError(f"Training Time Distribution Type {kind} not supported.")

    def sample_n(self, shape):
        key = self.rngs.noise()
        return jax.random.normal(key, shape=shape) * self.n_sigma + self.n_mu

    def sample_x_t(self, x, n, t):
        return x + self.bcast_right(t, n) * n

    def target(self, x, n, t):
        return x

    def denoise(self, x_t, t, *args, **kwargs):
        """``D(x_t, t)`` and the network's features (restatement helper)."""
        F_x, features = self.network(
            self.bcast_right(self.c_in(t), x_t) * x_t, self.c_noise(t), *args, **kwargs
        )
        D_x = self.bcast_right(self.c_skip(t), x_t) * x_t + self.bcast_right(self.c_out(t), F_x) * F_x
        return D_x, features

    def pred(self, x_t, t, *args, **kwargs):
        D_x, _ = self.denoise(x_t, t, *args, **kwargs)
        return (x_t - D_x) / self.bcast_right(t, x_t)

    def score(self, x_t, t, *args, **kwargs):
        tangent = self.pred(x_t, t, *args, **kwargs)
        t = self.bcast_right(t, x_t)
        return -(x_t - tangent) / (t ** 2)

    def loss(self, x, *args, return_aux=False, record=None, **kwargs):
        sigma = self.sample_t((x.shape[0],))
        n = self.sample_n(x.shape)
        x_t = self.sample_x_t(x, n, sigma)
        target = self.target(x, n, sigma)
        D_x, features = self.denoise(x_t, sigma, *args, **kwargs)
        weight = (sigma ** 2 + self.x_sigma ** 2) / (sigma * self.x_sigma) ** 2
        loss = self.mean_flat(self.bcast_right(weight, D_x) * (D_x - target) ** 2)
        _record(record, t=sigma, n=n, x_t=x_t, target=target, net_out=D_x)
        if return_aux:
            return loss, D_x, features
        return {"loss": loss}
