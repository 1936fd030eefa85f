"""sCT and sCD: continuous-time consistency models in TrigFlow (Lu & Song, "Simplifying,
Stabilizing and Scaling Continuous-Time Consistency Models", arXiv:2410.11081, ICLR 2025).

The reference (diffuse_nnx ``interfaces/continuous.py``) declares ``sCTInterface(EDMInterface)``
and ``sCDInterface(sCTInterface)`` (the latter with ``teacher`` and ``guidance_scale``) and
leaves their bodies empty. This module is therefore not a restatement of the reference but
the specification this project adopts; the Rust crate (``src/interfaces/{trigflow,sct,scd}.rs``)
implements the same formulas, and the ``sct_*`` / ``scd_*`` fixtures pin them. The paper's
equation numbers could not be verified offline; formulas cite its sections and the steps of
its Algorithm 1 ("tangent warmup", "JVP rearrangement", "tangent normalization",
"adaptive weighting").

Settings (the reference's EDM names, the paper's defaults): ``train_time_dist_type``
``"lognormal"``, ``t_mu`` -1.0 (P_mean), ``t_sigma`` 1.4 (P_std), ``n_mu`` 0 and ``n_sigma`` 1
(the only values accepted: TrigFlow's noise is ``z = x_sigma n``, ``n ~ N(0, 1)``),
``x_sigma`` 0.5 (sigma_d), ``tangent_warmup_steps`` 10000 (H; 0 disables the warm-up),
``tangent_norm_const`` 0.1 (c). sCD adds ``teacher`` (a :class:`TrigFlowTeacher`) and
``guidance_scale`` 1.

TrigFlow (§3): ``x_t = cos(t) x + sin(t) z``, ``dx_t/dt = cos(t) z - sin(t) x``,
``f(x_t, t) = cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, t)`` (``c_noise(t) = t``, §4.1).

loss(x, *args, step=0, **kwargs), per example, in this order:

1. ``sigma = EDM.sample_t([B])`` (``time`` stream), ``t = arctan(sigma / sigma_d)``
   (Algorithm 1).
2. ``n = sample_n(x.shape)`` (``noise`` stream), ``z = n * sigma_d``, ``x_t`` as above.
3. ``dx_t/dt``: sCT ``cos(t) z - sin(t) x``; sCD the teacher's guided velocity
   ``v_u + w (v_c - v_u)`` (``w = 1``: ``v_c`` alone; ``v_u`` with the null class 1000),
   under stop_gradient (Algorithm 1, CT / CD branches).
4. ``F, J = jvp(F_fn, (x_t / sigma_d, t), (cs dx_t/dt, cs sigma_d))`` with
   ``cs = cos(t) sin(t)``, so ``J = sigma_d cs dF/dt`` (JVP rearrangement).
5. ``r = min(1, step / H)`` (1 when H = 0; tangent warmup); ``F- = stop_gradient(F)``;
   ``g = -(c c) (F- sigma_d - dx_t/dt) - (c s x_t + J) r`` (``c, s = cos t, sin t``).
6. ``g = g / (sqrt(sum g^2) + c)`` per example (tangent normalization).
7. ``w = w_phi(t) = [sin(t f), cos(t f)] @ W + b`` (the interface's log-variance head,
   ``logvar = {"W": [2K, 1], "b": [1]}``, ``logvar_freqs [K]``);
   ``loss = exp(w) / D * sum((F - F- - g)^2) - w`` (adaptive weighting).

Records ``t`` (TrigFlow time), ``n``, ``x_t``, ``target = F- + g``, ``net_out = F``.
``pred(x_t, t) = f(x_t, t)``; ``score`` raises ValueError (as the reference).

Teacher conversions (``k = sigma_d / n_sigma`` with the teacher's ``n_sigma``), see
:class:`TrigFlowTeacher`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .base import _record
from .edm import EDMInterface

NULL_LABEL = 1000


def _b(v, like):
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


# -- TrigFlow maps (the Rust trigflow.rs, op for op) ---------------------------------

def state(x, z, t):
    return _b(jnp.cos(t), x) * x + _b(jnp.sin(t), x) * z


def velocity(x, z, t):
    return _b(jnp.cos(t), x) * z - _b(jnp.sin(t), x) * x


def split(x_t, t, dxdt):
    c, s = _b(jnp.cos(t), x_t), _b(jnp.sin(t), x_t)
    return c * x_t - s * dxdt, s * x_t + c * dxdt


def velocity_from_estimates(x_hat, eps_hat, t, sigma_d):
    return velocity(x_hat, eps_hat * sigma_d, t)


def to_edm(x_t, t, sigma_d, n_sigma):
    sigma = jnp.tan(t) * (sigma_d / n_sigma)
    return x_t / _b(jnp.cos(t), x_t), sigma


def from_edm(x_e, sigma, sigma_d, n_sigma):
    t = jnp.arctan(sigma / (sigma_d / n_sigma))
    return x_e * _b(jnp.cos(t), x_e), t


def to_sit(x_t, t, sigma_d, n_sigma):
    k = sigma_d / n_sigma
    den = jnp.cos(t) + jnp.sin(t) * k
    s = jnp.sin(t) * k / den
    return x_t / _b(den, x_t), s


def velocity_from_sit(x_s, s, v, t, sigma_d, n_sigma):
    sb = _b(s, x_s)
    x_hat = x_s - sb * v
    eps_hat = (x_s + (1 - sb) * v) / n_sigma
    return velocity_from_estimates(x_hat, eps_hat, t, sigma_d)


def velocity_from_edm(x_e, sigma, d, t, sigma_d, n_sigma):
    eps_hat = (x_e - d) / (_b(sigma, x_e) * n_sigma)
    return velocity_from_estimates(d, eps_hat, t, sigma_d)


# -- the log-variance head ------------------------------------------------------------

def logvar_apply(params, freqs, t):
    """``w_phi(t) = [sin(t f), cos(t f)] @ W + b`` -> ``[B]``."""
    a = t[:, None] * freqs
    emb = jnp.concatenate([jnp.sin(a), jnp.cos(a)], axis=-1)
    return (emb @ params["W"] + params["b"])[:, 0]


def init_logvar(k: int = 8):
    """The default head: ``W = b = 0``, ``f = exp(linspace(0, 3, K))``."""
    return ({"W": jnp.zeros((2 * k, 1), jnp.float32), "b": jnp.zeros((1,), jnp.float32)},
            jnp.exp(jnp.linspace(0.0, 3.0, k, dtype=jnp.float32)))


class sCTInterface(EDMInterface):
    def __init__(
        self,
        network,
        train_time_dist_type="lognormal",
        t_mu: float = -1.0,
        t_sigma: float = 1.4,
        n_mu: float = 0.0,
        n_sigma: float = 1.0,
        x_sigma: float = 0.5,
        tangent_warmup_steps: int = 10000,
        tangent_norm_const: float = 0.1,
        logvar=None,
        logvar_freqs=None,
        rngs=None,
    ):
        super().__init__(network, train_time_dist_type, t_mu=t_mu, t_sigma=t_sigma, n_mu=n_mu,
                         n_sigma=n_sigma, x_sigma=x_sigma, rngs=rngs)
        if n_mu != 0.0 or n_sigma != 1.0:
            raise ValueError("TrigFlow's noise is x_sigma * N(0, 1): n_mu must be 0 and n_sigma 1")
        if tangent_warmup_steps < 0 or not tangent_norm_const > 0:
            raise ValueError("tangent_warmup_steps >= 0 and tangent_norm_const > 0 required")
        self.tangent_warmup_steps = tangent_warmup_steps
        self.tangent_norm_const = tangent_norm_const
        if logvar is None:
            logvar, logvar_freqs = init_logvar()
        self.logvar = logvar
        self.logvar_freqs = logvar_freqs

    # -- coefficients (TrigFlow) ---------------------------------------------------
    def c_in(self, t):
        return jnp.ones_like(t) / self.x_sigma

    def c_out(self, t):
        return jnp.sin(t) * -self.x_sigma

    def c_skip(self, t):
        return jnp.cos(t)

    def c_noise(self, t):
        return t

    # -- path --------------------------------------------------------------------
    def sample_t(self, shape):
        sigma = super().sample_t(shape)
        return jnp.arctan(sigma / self.x_sigma)

    def sample_x_t(self, x, n, t):
        return state(x, n * self.x_sigma, t)

    def target(self, x, n, t):
        return velocity(x, n * self.x_sigma, t)

    def warmup_ratio(self, step: int) -> float:
        if self.tangent_warmup_steps == 0:
            return 1.0
        return min(1.0, step / self.tangent_warmup_steps)

    def tangent_input(self, x, z, x_t, t, *args, **kwargs):
        return velocity(x, z, t)

    # -- prediction ----------------------------------------------------------------
    def network_output(self, x_t, t, *args, **kwargs):
        return self.network(x_t / self.x_sigma, t, *args, **kwargs)[0]

    def pred(self, x_t, t, *args, **kwargs):
        F = self.network_output(x_t, t, *args, **kwargs)
        return _b(jnp.cos(t), x_t) * x_t - _b(jnp.sin(t), x_t) * (F * self.x_sigma)

    def score(self, x_t, t, *args, **kwargs):
        raise ValueError(f"{type(self).__name__} does not support score calculation.")

    def normalized_tangent(self, F_sg, J, x_t, dxdt, t, r):
        c, s = _b(jnp.cos(t), x_t), _b(jnp.sin(t), x_t)
        g1 = -(c * c) * (F_sg * self.x_sigma - dxdt)
        g2 = c * s * x_t + J
        g = g1 - g2 * r
        norm = jnp.sqrt(jnp.sum(g ** 2, axis=tuple(range(1, g.ndim))))
        return g / _b(norm + self.tangent_norm_const, g)

    # -- loss ------------------------------------------------------------------------
    def loss(self, x, *args, step: int = 0, return_aux=False, record=None, **kwargs):
        xs = self.x_sigma
        t = self.sample_t((x.shape[0],))
        n = self.sample_n(x.shape)
        z = n * xs
        x_t = state(x, z, t)
        dxdt = jax.lax.stop_gradient(self.tangent_input(x, z, x_t, t, *args, **kwargs))
        cs = jnp.cos(t) * jnp.sin(t)

        def F_fn(x_in, t_in):
            return self.network(x_in, t_in, *args, **kwargs)

        F, J, features = jax.jvp(F_fn, (x_t / xs, t), (_b(cs, dxdt) * dxdt, cs * xs), has_aux=True)
        F_sg = jax.lax.stop_gradient(F)
        J = jax.lax.stop_gradient(J)
        g = jax.lax.stop_gradient(self.normalized_tangent(F_sg, J, x_t, dxdt, t, self.warmup_ratio(step)))
        w = logvar_apply(self.logvar, self.logvar_freqs, t)
        D = math.prod(x.shape[1:])
        l = jnp.sum((F - F_sg - g) ** 2, axis=tuple(range(1, x.ndim)))
        loss = jnp.exp(w) / D * l - w
        _record(record, t=t, n=n, x_t=x_t, target=F_sg + g, net_out=F)
        if return_aux:
            return loss, F, features
        return {"loss": loss}


class TrigFlowTeacher:
    """A frozen teacher of any convention, giving the TrigFlow velocity ``dx_t/dt`` at the
    student's ``(x_t, t)`` (student ``sigma_d``), with ``k = sigma_d / n_sigma``:

    * ``sit``: ``x_s = x_t / (cos t + k sin t)``, ``s = k sin t / (cos t + k sin t)``,
      ``v = pred(x_s, s)``, ``dx_t/dt = sigma_d cos t (x_s + (1 - s) v) / n_sigma - sin t (x_s - s v)``;
    * ``mean_flow``: the same with ``pred(x_s, s, r=s)`` (instantaneous velocity, ``dt = 0``);
    * ``edm``: ``x_e = x_t / cos t``, ``sigma = k tan t``, ``D = denoise(x_e, sigma)``,
      ``dx_t/dt = sigma_d cos t (x_e - D) / (sigma n_sigma) - sin t D``;
    * ``trigflow`` (setting ``x_sigma``, its own ``sigma_d'``): equal sigma_d: ``sigma_d
      F(x_t / sigma_d, t)``; else through the EDM state (``t' = arctan(sigma_d tan t / sigma_d')``,
      ``x_t' = cos t' x_t / cos t``), ``v' = sigma_d' F(x_t' / sigma_d', t')``, ``x-hat, z-hat =
      split(x_t', t', v')``, ``dx_t/dt = sigma_d cos t (z-hat / sigma_d') - sin t x-hat``.
    """

    def __init__(self, kind: str, cfg: dict, network):
        cfg = {k: v for k, v in cfg.items() if k not in ("type", "param_seed", "description")}
        self.kind = kind
        self.network = network
        if kind == "trigflow":
            self.sigma_d = float(cfg.get("x_sigma", 0.5))
            self.iface = None
            return
        from . import interface_class  # noqa: PLC0415 - the registry imports this module's siblings

        if float(cfg.get("n_mu", 0.0)) != 0.0:
            raise ValueError("the maps to TrigFlow assume centred noise (n_mu = 0)")
        self.n_sigma = float(cfg.get("n_sigma", 1.0))
        self.iface = interface_class(kind)(network, **cfg)

    def velocity(self, x_t, t, sigma_d, y=None):
        kw = {} if y is None else {"y": y}
        if self.kind in ("sit", "mean_flow"):
            x_s, s = to_sit(x_t, t, sigma_d, self.n_sigma)
            if self.kind == "sit":
                v = self.iface.pred(x_s, s, **kw)
            else:
                v = self.iface.pred(x_s, s, s, **kw)
            return velocity_from_sit(x_s, s, v, t, sigma_d, self.n_sigma)
        if self.kind == "edm":
            x_e, sigma = to_edm(x_t, t, sigma_d, self.n_sigma)
            d, _ = self.iface.denoise(x_e, sigma, **kw)
            return velocity_from_edm(x_e, sigma, d, t, sigma_d, self.n_sigma)
        sd_t = self.sigma_d
        if sd_t == sigma_d:
            return self.network(x_t / sigma_d, t, **kw)[0] * sigma_d
        x_e, sigma = to_edm(x_t, t, sigma_d, 1.0)
        x_tt, tt = from_edm(x_e, sigma, sd_t, 1.0)
        vt = self.network(x_tt / sd_t, tt, **kw)[0] * sd_t
        x_hat, z_hat = split(x_tt, tt, vt)
        return velocity_from_estimates(x_hat, z_hat / sd_t, t, sigma_d)


class sCDInterface(sCTInterface):
    def __init__(self, network, train_time_dist_type="lognormal", t_mu: float = -1.0, t_sigma: float = 1.4,
                 n_mu: float = 0.0, n_sigma: float = 1.0, x_sigma: float = 0.5, teacher=None,
                 guidance_scale: float = 1.0, **kwargs):
        if teacher is None:
            raise ValueError("Teacher model must be provided for sCDInterface.")
        super().__init__(network, train_time_dist_type, t_mu=t_mu, t_sigma=t_sigma, n_mu=n_mu,
                         n_sigma=n_sigma, x_sigma=x_sigma, **kwargs)
        self.teacher = teacher
        self.guidance_scale = guidance_scale

    def tangent_input(self, x, z, x_t, t, *args, y=None, **kwargs):
        v_c = self.teacher.velocity(x_t, t, self.x_sigma, y=y)
        w = self.guidance_scale
        if w == 1.0:
            return v_c
        null = jnp.full((t.shape[0],), NULL_LABEL, dtype=jnp.int32)
        v_u = self.teacher.velocity(x_t, t, self.x_sigma, y=null)
        return v_u + w * (v_c - v_u)
