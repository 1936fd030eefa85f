"""One training step of the JAX restatement (spec/diffuse_spec_ref) under jax.jit, for
benches/compare: the spec's FunctionalDiT (or FunctionalLightningDiT with ``--net
lightning``: the same sizes with SwiGLU, RoPE, RMSNorm and adaLN shift) and interfaces (SiT,
EDM, MeanFlow, sCT), ``jax.jit(jax.value_and_grad(mean loss))`` over the network's parameters,
on the bench-s configuration (16x16x4, patch 2, hidden 192, depth 6, 3 heads, batch 16, float32).

Worker protocol (as examples/bench_step.rs --serve): prints ``{"ready": ...}`` after setup,
then answers ``warmup N`` / ``run N`` with ``{"times_ms": [...]}``, ``trim`` (glibc
malloc_trim, so that VmRSS measures live memory) with ``{"trimmed": true}``, and stops at
``quit``.
Each step gets fresh streams from a traced seed (so XLA cannot constant-fold the draws).

    python benches/jax_step.py --interface sit|edm|meanflow|sct [--net dit|lightning] [--serve | --steps N]
    python benches/jax_step.py --parts [--net dit|lightning] [--steps N]

``--parts`` times the network alone, as ``examples/profile_jvp`` does for the crate: the
forward in eval mode without gradients, and the forward and backward of ``mean(out^2)``
(both jitted; medians and best of ``--steps``). Pin it to one CPU (``taskset -c 1``) to
compare with the crate on one thread: unpinned, jaxlib uses both cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "spec"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from diffuse_spec_ref.interfaces.consistency import sCTInterface  # noqa: E402
from diffuse_spec_ref.interfaces.edm import EDMInterface  # noqa: E402
from diffuse_spec_ref.interfaces.meanflow import MeanFlowInterface  # noqa: E402
from diffuse_spec_ref.interfaces.sit import SiTInterface  # noqa: E402
from diffuse_spec_ref.networks.dit import FunctionalDiT, init_dit  # noqa: E402
from diffuse_spec_ref.networks.lightning_dit import FunctionalLightningDiT, init_lightning  # noqa: E402

BENCH_S = dict(input_size=16, patch_size=2, in_channels=4, hidden_size=192, depth=6, num_heads=3,
               mlp_ratio=4.0, continuous_time_embed=False, freq_embed_size=256, num_classes=1000,
               class_dropout_prob=0.1, enable_dropout=True, take_gw=False)
BATCH = 16
# the reference's shipped ImageNet switches
LIGHTNING = dict(qk_norm=False, attn_norm_layer="layer_norm", use_rope=True, swiglu=True, adaln_shift=True, rms_norm=True)


def network(net_kind: str, take_dt: bool):
    """The bench-s network's config, parameters, buffers and class, with the step's batch."""
    cfg = dict(BENCH_S, take_dt=take_dt)
    if net_kind == "lightning":
        cfg.update(LIGHTNING)
        params, buffers = init_lightning(0, cfg)
        net_cls = FunctionalLightningDiT
    else:
        params, buffers = init_dit(0, cfg)
        net_cls = FunctionalDiT
    params = {k: jnp.asarray(v) for k, v in params.items()}
    buffers = {k: jnp.asarray(v) for k, v in buffers.items()}
    kx, _ = jax.random.split(jax.random.key(7))
    s = cfg["input_size"]
    x = jax.random.normal(kx, (BATCH, s, s, cfg["in_channels"]), dtype=jnp.float32)
    y = (jnp.arange(BATCH, dtype=jnp.int32) * 37) % 1000
    return cfg, params, buffers, net_cls, x, y


def build(kind: str, net_kind: str = "dit"):
    cfg, params, buffers, net_cls, x, y = network(net_kind, take_dt=(kind == "meanflow"))

    def loss_fn(params, x, y, seed):
        k = jax.random.split(jax.random.key(seed), 3)
        rngs = nnx.Rngs(time=k[0], noise=k[1], label_dropout=k[2])
        net = net_cls(cfg, params, buffers, rngs=rngs, training=True)
        if kind == "sit":
            iface = SiTInterface(net, "uniform", rngs=rngs)
        elif kind == "edm":
            iface = EDMInterface(net, "lognormal", t_mu=-1.2, t_sigma=1.2, rngs=rngs)
        elif kind == "meanflow":
            iface = MeanFlowInterface(net, "uniform", rngs=rngs)
        elif kind == "sct":
            # the paper's defaults (log-normal P_mean -1.0, P_std 1.4, sigma_d 0.5), step 0
            iface = sCTInterface(net, rngs=rngs)
        else:
            raise SystemExit(f"unknown interface {kind}")
        return jnp.mean(iface(x, y=y)["loss"])

    step = jax.jit(jax.value_and_grad(loss_fn))
    return step, params, x, y


def time_parts(net_kind: str, steps: int):
    """Median and best ms of the bare network's eval forward and of forward + backward."""
    import statistics

    cfg, params, buffers, net_cls, x, y = network(net_kind, take_dt=False)
    t = jnp.linspace(0.1, 0.9, BATCH)

    def forward(params):
        return net_cls(cfg, params, buffers, rngs=nnx.Rngs(0), training=False)(x, t, y=y)[0]

    out = {}
    for name, f in [("forward_eval_no_grad", jax.jit(forward)),
                    ("forward_backward", jax.jit(jax.value_and_grad(lambda p: jnp.mean(forward(p) ** 2))))]:
        jax.block_until_ready(f(params))
        ts = []
        for _ in range(steps):
            t0 = time.perf_counter()
            jax.block_until_ready(f(params))
            ts.append((time.perf_counter() - t0) * 1e3)
        out[name] = {"median_ms": statistics.median(ts), "best_ms": min(ts)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interface", default="sit")
    ap.add_argument("--net", default="dit", choices=["dit", "lightning"])
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--parts", action="store_true", help="time the bare network's forward and backward")
    a = ap.parse_args()
    if a.parts:
        print(json.dumps({"net": a.net, "jax": jax.__version__, "cpus": sorted(os.sched_getaffinity(0)),
                          "parts": time_parts(a.net, a.steps)}))
        return
    step, params, x, y = build(a.interface, a.net)
    seed = [0]

    def run(n):
        out = []
        for _ in range(n):
            seed[0] += 1
            t0 = time.perf_counter()
            loss, grads = step(params, x, y, jnp.uint32(seed[0]))
            jax.block_until_ready((loss, grads))
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    info = {"impl": "jax", "interface": a.interface, "net": a.net, "jax": jax.__version__,
            "device": str(jax.devices()[0]), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if not a.serve:
        run(1)
        print(json.dumps({"info": info, "times_ms": run(a.steps)}))
        return
    print(json.dumps({"ready": True, "info": info}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        if parts[0] in ("run", "warmup"):
            print(json.dumps({"times_ms": run(int(parts[1]))}), flush=True)
        elif parts[0] == "trim":
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            print(json.dumps({"trimmed": True}), flush=True)
        else:
            print(json.dumps({"error": f"unknown command {line!r}"}), flush=True)


if __name__ == "__main__":
    main()
