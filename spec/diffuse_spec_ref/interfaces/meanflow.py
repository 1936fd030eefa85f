"""MeanFlow: the reference's ``MeanFlowInterface`` (SiT path, network also takes ``dt``).

Settings and defaults (the reference's names): everything of SiT (``t_mu 0, t_sigma 1,
n_mu 0, n_sigma 1, x_sigma 0.5``; ``t_shift_base`` is accepted and ignored, quirk Q9),
plus ``guidance_scale 1`` (w), ``guidance_mixture_ratio 0.5`` (kappa),
``guidance_t_min 0``, ``guidance_t_max 1``, ``norm_eps 1e-3``, ``norm_power 1``,
``fm_portion 0.75``, ``cond_drop_ratio 0.5``. ``sample_t`` is SiT's (``uniform`` or
``logitnormal`` from the ``time`` stream; ``lognormal`` refused after its key is drawn).

loss(x, y=None), in the reference's order of draws and evaluations:

1. ``t = sample_t([B])`` then ``r = sample_t([B])`` (two ``time`` draws);
   ``t, r = max(t, r), min(t, r)``; the first ``int(B * fm_portion)`` examples get
   ``r = t``. No time shift (Q9).
2. ``n = sample_n(x.shape)`` (``noise`` stream).
3. Guided velocity: ``network.eval()`` first; ``v = n - x``; absent ``y`` / ``neg_y``
   become the null class 1000. If ``w == 1`` and ``kappa == 0``: ``v`` kept.
   Otherwise ``v_unc = net(x_t, t, y=neg_y, dt=zeros([B]))[0]`` (a zero ``dt``, not
   omitted); ``kappa == 0``: ``v = where(t_min <= t <= t_max, v_unc + w (v - v_unc),
   v)``; else ``v_c = net(x_t, t, y=y, dt=zeros)[0]``, ``network.train()``, and
   ``v = where(in interval, w v + (1 - w - kappa) v_unc + kappa v_c, v)`` with
   ``1 - w - kappa`` a Python float. Q8: only this mixture path switches the network
   back to train mode; otherwise it stays in eval mode for the rest of the step
   (a DiT then draws no label dropout in the JVP forward).
4. Condition drop (Q7), ``label_dropout`` stream: ``m = uniform([B]) <
   cond_drop_ratio``; ``k = sum(m)``; the *first k* examples get ``y = neg_y`` and
   ``v = n - x`` (not the examples whose draw fell below the ratio).
5. ``(u, du/dt, feats) = jvp(lambda x_t, t, r: net(x_t, t, dt=t - r, y=y), (x_t, t, r),
   (v, 1, 0), has_aux)``; ``target = stop_grad(v - clip(t - r, 0, 1) du/dt)``.
6. ``l = sum over non-batch axes (u - target)^2``; ``loss = stop_grad(1 / (l +
   norm_eps)^norm_power) * l`` (per example).

``pred(x_t, t, r, **kw) = net(x_t, t, dt=t - r, **kw)[0]``;
``score(x_t, t, **kw) = -(x_t + (1 - t) pred(x_t, t, r=0)) / t^2`` (Q3: ``r = 0`` and
``t^2`` where SiT divides by ``t``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .base import _record
from .sit import SiTInterface

NULL_LABEL = 1000


def _set_mode(network, training: bool) -> None:
    """``network.train()`` / ``network.eval()`` as the reference calls them (every nnx
    Module has both; a plain functional network without them has no mode)."""
    fn = getattr(network, "train" if training else "eval", None)
    if fn is not None:
        fn()


class MeanFlowInterface(SiTInterface):
    def __init__(
        self,
        network,
        train_time_dist_type="uniform",
        t_mu: float = 0.0,
        t_sigma: float = 1.0,
        n_mu: float = 0.0,
        n_sigma: float = 1.0,
        x_sigma: float = 0.5,
        guidance_scale: float = 1.0,
        guidance_mixture_ratio: float = 0.5,
        guidance_t_min: float = 0.0,
        guidance_t_max: float = 1.0,
        norm_eps: float = 1e-3,
        norm_power: float = 1.0,
        fm_portion: float = 0.75,
        cond_drop_ratio: float = 0.5,
        t_shift_base: int = 4096,
        rngs=None,
    ):
        # the reference does not forward t_shift_base (SiT's default stays; unused: Q9)
        super().__init__(
            network, train_time_dist_type,
            t_mu=t_mu, t_sigma=t_sigma, n_mu=n_mu, n_sigma=n_sigma, x_sigma=x_sigma, rngs=rngs,
        )
        self.guidance_scale = guidance_scale
        self.guidance_mixture_ratio = guidance_mixture_ratio
        self.guidance_t_min = guidance_t_min
        self.guidance_t_max = guidance_t_max
        self.norm_eps = norm_eps
        self.norm_power = norm_power
        self.fm_portion = fm_portion
        self.cond_drop_ratio = cond_drop_ratio

    # -- training pieces ---------------------------------------------------
    def sample_t_r(self, shape):
        t = self.sample_t(shape)
        r = self.sample_t(shape)
        t, r = jnp.maximum(t, r), jnp.minimum(t, r)
        fm_mask = jnp.arange(t.shape[0]) < int(t.shape[0] * self.fm_portion)
        r = jnp.where(fm_mask, t, r)
        return t, r

    def cond_drop(self, x, n, v, y, neg_y):
        unguided_v = n - x
        mask = jax.random.uniform(self.rngs.label_dropout(), shape=y.shape) < self.cond_drop_ratio
        num_drop = jnp.sum(mask).astype(jnp.int32)
        drop_mask = jnp.arange(y.shape[0]) < num_drop  # Q7: a prefix, not the drawn examples
        y = jnp.where(drop_mask, neg_y, y)
        v = jnp.where(self.bcast_right(drop_mask, v), unguided_v, v)
        return v, y

    def _in_interval(self, t, v):
        return self.bcast_right((t >= self.guidance_t_min) & (t <= self.guidance_t_max), v)

    def insta_velocity(self, x, n, t, *args, y=None, neg_y=None, **kwargs):
        _set_mode(self.network, False)
        v = n - x
        x_t = self.sample_x_t(x, n, t)
        if y is None:
            y = jnp.zeros((t.shape[0],), dtype=jnp.int32) + NULL_LABEL
        if neg_y is None:
            neg_y = jnp.zeros((t.shape[0],), dtype=jnp.int32) + NULL_LABEL
        if self.guidance_scale == 1.0 and self.guidance_mixture_ratio == 0.0:
            return v, y, neg_y  # Q8: left in eval mode
        x_in = self.bcast_right(self.c_in(t), x_t) * x_t
        v_uncond = self.network(x_in, t, *args, y=neg_y, dt=jnp.zeros_like(t), **kwargs)[0]
        if self.guidance_mixture_ratio == 0.0:
            return jnp.where(
                self._in_interval(t, v), v_uncond + self.guidance_scale * (v - v_uncond), v
            ), y, neg_y  # Q8: left in eval mode
        v_cond = self.network(x_in, t, *args, y=y, dt=jnp.zeros_like(t), **kwargs)[0]
        _set_mode(self.network, True)
        w, kappa = self.guidance_scale, self.guidance_mixture_ratio
        return jnp.where(
            self._in_interval(t, v),
            w * v + (1 - w - kappa) * v_uncond + kappa * v_cond,
            v,
        ), y, neg_y

    def target(self, x, n, t, r, *args, y=None, neg_y=None, **kwargs):
        """Returns ``((u, features), target)``; ``target`` is under stop_gradient."""
        v, y, neg_y = self.insta_velocity(x, n, t, *args, y=y, neg_y=neg_y, **kwargs)
        v, y = self.cond_drop(x, n, v, y, neg_y=neg_y)
        x_t = self.sample_x_t(x, n, t)

        def u_fn(x_t, t, r):
            return self.network(
                self.bcast_right(self.c_in(t), x_t) * x_t, t, *args, dt=t - r, y=y, **kwargs
            )

        u, dudt, feat = jax.jvp(u_fn, (x_t, t, r), (v, jnp.ones_like(t), jnp.zeros_like(r)), has_aux=True)
        target = jax.lax.stop_gradient(v - jnp.clip(self.bcast_right(t - r, v), 0.0, 1.0) * dudt)
        return (u, feat), target

    # -- prediction ----------------------------------------------------------
    def pred(self, x_t, t, r, *args, **kwargs):
        return self.network(self.bcast_right(self.c_in(t), x_t) * x_t, t, *args, dt=t - r, **kwargs)[0]

    def score(self, x_t, t, *args, **kwargs):
        tangent = self.pred(x_t, t, jnp.zeros_like(t), *args, **kwargs)
        t = self.bcast_right(t, x_t)
        return -(x_t + (1 - t) * tangent) / t ** 2

    # -- loss ----------------------------------------------------------------
    def loss(self, x, *args, return_aux=False, record=None, **kwargs):
        t, r = self.sample_t_r((x.shape[0],))
        n = self.sample_n(x.shape)
        (net_out, features), target = self.target(x, n, t, r, *args, **kwargs)
        loss = jnp.sum((net_out - target) ** 2, axis=list(range(1, x.ndim)))
        adp_w = 1.0 / (loss + self.norm_eps) ** self.norm_power
        loss = jax.lax.stop_gradient(adp_w) * loss
        _record(record, t=t, r=r, n=n, x_t=self.sample_x_t(x, n, t), target=target, net_out=net_out)
        if return_aux:
            return loss, net_out, features
        return {"loss": loss}
