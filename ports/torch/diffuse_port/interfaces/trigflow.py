"""The TrigFlow maps of sCD: a frozen teacher's prediction as a TrigFlow velocity dx_t/dt
(reference.md, "sCD"). Each teacher is `V(x_t, t, y)` with the student's `sigma_d`; `k =
sigma_d / n_sigma` with the teacher's `n_sigma` (its `n_mu` is 0). The teacher runs in eval
mode without gradient.
"""

import torch

from ..case import settings
from . import edm, meanflow, sit
from .common import bcast_right, f32


class SiTTeacher:
    """x_s = x_t / (cos t + k sin t), s = k sin t / (cos t + k sin t), v = net(x_s, s, y);
    V = sigma_d cos(t) (x_s + (1 - s) v) / n_sigma - sin(t) (x_s - s v)."""

    def __init__(self, block, net):
        self.inner = self.interface(block)
        self.net = net
        self.n_sigma = f32(self.inner.cfg["n_sigma"])

    @staticmethod
    def interface(block):
        return sit.SiT(block)

    def velocity_net(self, x_s, s, y):
        return self.net(x_s, s, y)[0]

    def __call__(self, x_t, t, y, sd):
        k = sd / self.n_sigma
        cos, sin = bcast_right(torch.cos(t), x_t), bcast_right(torch.sin(t), x_t)
        den = cos + k * sin
        x_s = x_t / den
        s = (k * sin / den).reshape(-1)
        v = self.velocity_net(x_s, s, y)
        sb = bcast_right(s, x_t)
        return sd * cos * (x_s + (1 - sb) * v) / self.n_sigma - sin * (x_s - sb * v)


class MeanFlowTeacher(SiTTeacher):
    """The SiT map on MeanFlow's instantaneous velocity net(x_s, s, y, dt = 0)."""

    @staticmethod
    def interface(block):
        return meanflow.MeanFlow(block)

    def velocity_net(self, x_s, s, y):
        return self.net(x_s, s, y, dt=torch.zeros_like(s))[0]


class EdmTeacher:
    """x_e = x_t / cos t, sigma = k tan t, D the teacher's denoiser;
    V = sigma_d cos(t) (x_e - D) / (sigma n_sigma) - sin(t) D."""

    def __init__(self, block, net):
        self.inner = edm.Edm(block)
        self.net = net
        self.n_sigma = f32(self.inner.cfg["n_sigma"])

    def __call__(self, x_t, t, y, sd):
        k = sd / self.n_sigma
        cos, sin = bcast_right(torch.cos(t), x_t), bcast_right(torch.sin(t), x_t)
        x_e = x_t / cos
        sigma = k * torch.tan(t)
        d = self.inner.denoise(self.net, x_e, sigma, y)[0]
        return sd * cos * (x_e - d) / (bcast_right(sigma, x_t) * self.n_sigma) - sin * d


class TrigFlowTeacher:
    """A TrigFlow diffusion model F with its own sigma_d'. Equal sigma_d: V = sigma_d F(x_t /
    sigma_d, t). Otherwise through its own time t' = arctan(sigma_d tan(t) / sigma_d')."""

    def __init__(self, block, net):
        self.cfg = settings(block, {"x_sigma": 0.5}, "trigflow")
        self.net = net
        self.sd_teacher = f32(self.cfg["x_sigma"])

    def __call__(self, x_t, t, y, sd):
        b = lambda a: bcast_right(a, x_t)
        if bool(self.sd_teacher == sd):
            return sd * self.net(x_t / sd, t, y)[0]
        st = self.sd_teacher
        t2 = torch.atan(sd * torch.tan(t) / st)
        x_t2 = b(torch.cos(t2)) * x_t / b(torch.cos(t))
        v2 = st * self.net(x_t2 / st, t2, y)[0]
        x_hat = b(torch.cos(t2)) * x_t2 - b(torch.sin(t2)) * v2
        e_hat = (b(torch.sin(t2)) * x_t2 + b(torch.cos(t2)) * v2) / st
        return sd * b(torch.cos(t)) * e_hat - b(torch.sin(t)) * x_hat


TEACHERS = {
    "sit": SiTTeacher,
    "mean_flow": MeanFlowTeacher,
    "edm": EdmTeacher,
    "trigflow": TrigFlowTeacher,
}
