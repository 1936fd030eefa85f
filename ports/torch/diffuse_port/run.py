"""Run one case and write the candidate files `diffuse-spec verify` reads:
`OUT/<case name>/out.*.npy` and `grad.*.npy`, with the golden file names (format.md, "verify").

    python -m diffuse_port.run fixtures/v1/<case> OUT

One handler per kind (format.md, "The kinds"); adding a kind is one function and one line in
KINDS.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from . import encoders, interfaces, networks, samplers
from .case import Case, Context, PortError
from .interfaces.common import t_shift
from .interfaces.repa import Repa


def float_name(s: float) -> str:
    """`t_shift_<s>`'s spelling: Python's repr of the float, `.` -> `p`, `-` -> `m`."""
    return repr(float(s)).replace(".", "p").replace("-", "m")


def coefficients(case: Case) -> dict:
    iface = interfaces.build(case.meta["interface"], Context(case))
    t, t_unit = case.tensor("in.t"), case.tensor("in.t_unit")
    out = {f"out.{c}": getattr(iface, c)(t) for c in ("c_in", "c_out", "c_skip", "c_noise")}
    for s in case.meta["t_shifts"]:
        out[f"out.t_shift_{float_name(s)}"] = t_shift(t_unit, s)
    return out


def loss(case: Case, grad: bool = False) -> dict:
    ctx = Context(case, requires_grad=grad)
    net = networks.build(case.meta["network"], ctx.params, ctx.buffers)
    iface = interfaces.build(case.meta["interface"], ctx)
    x, y = case.tensor("in.x"), case.maybe("in.y")
    if list(x.shape) != case.meta["shape"]:
        raise PortError(f"{case.name}: in.x has shape {list(x.shape)}, case.json says {case.meta['shape']}")
    draws = case.draws()
    if "repa" in case.meta:
        result = Repa(case.meta["repa"], iface, ctx.params).loss(net, x, y, draws, case.tensor("in.x_feature"))
        names = ["loss", "diffusion_loss", "repa_loss"]
    else:
        result = iface.loss(net, x, y, draws)
        # intermediates only on the probe network (format.md, `loss` and `grad`)
        names = ["loss"]
        if case.meta["network"]["type"] == "probe_mlp":
            names += [k for k in ("t", "r", "n", "x_t", "target", "net_out") if k in result]
    draws.finish()
    out = {f"out.{k}": result[k] for k in names}
    if grad:
        # the gradient of the mean per-example loss; a parameter the loss does not reach gets zeros
        paths = sorted(ctx.params)
        grads = torch.autograd.grad(result["loss"].mean(), [ctx.params[p] for p in paths], allow_unused=True)
        for path, g in zip(paths, grads):
            out[f"grad.{path}"] = torch.zeros_like(ctx.params[path]) if g is None else g
    return out


def pred(case: Case) -> dict:
    ctx = Context(case)
    net = networks.build(case.meta["network"], ctx.params, ctx.buffers)
    iface = interfaces.build(case.meta["interface"], ctx)
    x_t, t, y, r = case.tensor("in.x_t"), case.tensor("in.t"), case.maybe("in.y"), case.maybe("in.r")
    with torch.no_grad():
        out = {"out.pred": iface.pred(net, x_t, t, y, r)}
        if case.meta["interface"]["type"] not in ("sct", "scd"):  # no score: the reference raises
            out["out.score"] = iface.score(net, x_t, t, y)
    return out


def sampler(case: Case) -> dict:
    ctx = Context(case)
    net = networks.build(case.meta["network"], ctx.params, ctx.buffers)
    model = samplers.Model(interfaces.build(case.meta["interface"], ctx), net)
    smp = samplers.build(case.meta["sampler"])
    draws = case.draws()
    with torch.no_grad():
        grid, x = smp.sample(model, case.tensor("in.x"), case.maybe("in.y"), case.meta.get("guidance_scale", 1.0), draws)
    draws.finish()
    return {"out.timegrid": grid, "out.x_final": x}


def network(case: Case) -> dict:
    ctx = Context(case)
    net = networks.build(case.meta["network"], ctx.params, ctx.buffers)
    with torch.no_grad():
        out, features = net(case.tensor("in.x"), case.tensor("in.t"), case.maybe("in.y"),
                            dt=case.maybe("in.dt"), gw=case.maybe("in.gw"))
    return {"out.out": out, **{f"out.feature.{i}": f for i, f in enumerate(features)}}


def encoder(case: Case) -> dict:
    preprocess, enc = encoders.build(case.meta["encoder"], Context(case).params)
    with torch.no_grad():
        pixels = preprocess(case.tensor("in.x"))
        if case.meta["encoder"]["stage"] == "preprocess":
            return {"out.pixels": pixels}
        return {"out.pixels": pixels, "out.features": enc(pixels)}


KINDS = {
    "coefficients": coefficients,
    "loss": loss,
    "grad": lambda case: loss(case, grad=True),
    "pred": pred,
    "sampler": sampler,
    "network": network,
    "encoder": encoder,
}


def run_case(case_dir: Path | str, out_root: Path | str) -> Path:
    """Compute the case and write its candidate directory; returns it."""
    case = Case(case_dir)
    if case.kind not in KINDS:
        raise PortError(f"{case.name}: kind {case.kind!r} is not ported (ported: {sorted(KINDS)})")
    outputs = KINDS[case.kind](case)
    target = Path(out_root) / case.name
    target.mkdir(parents=True, exist_ok=True)
    for stem, value in outputs.items():
        np.save(target / f"{stem}.npy", value.detach().to(torch.float32).contiguous().numpy())
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m diffuse_port.run CASE_DIR OUT_DIR", file=sys.stderr)
        return 2
    print(run_case(argv[0], argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
