"""Raw random draws in cases: record what a computation draws from its ``nnx.Rngs``.

An implementation without JAX's threefry cannot redraw the numbers the oracle used, so
every case whose computation draws random numbers holds each draw it consumed, *raw* —
the float32 uniform in ``[0, 1)`` before any scaling, the standard normal before any
``* sigma + mu``, the uint32 bits — as ``draw.<stream>.<counter>.npy``, listed in
``case.json`` under ``draws`` (file, stream, counter, op, shape, feeds; ``minval`` /
``maxval`` for a uniform the computation scaled).

``record(fn)`` runs ``fn()`` with ``nnx.RngStream.__call__`` and ``jax.random.{uniform,
normal, bits}`` wrapped: a key a stream hands out is remembered with the stream's tag and
its count, and the draw made with that very key object is recorded. ``nnx.scan`` runs as a
Python loop inside ``record`` (a traced stream count could not be recorded), so the
recording pass of a sampler is eager; its outputs are discarded, only its draws are kept
(each draw is a function of its key alone, so the compiled pass drew the same numbers, and
``diffuse-spec check`` compares them with its own draws bit for bit).

``feeds(kind, interface, n)`` labels the draws by position, the same rule as the crate's
``golden::feeds``: a loss's interface draws first (SiT, EDM, sCT, sCD: ``t``, ``n``;
MeanFlow: ``t``, ``r``, ``n``, ``cond_drop``), then the network's label dropout
(``label_dropout``); a sampler's ``i``-th draw is the noise of step ``i`` (``step.<i>``).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import rnglib

RECORDED_KINDS = ("loss", "grad", "sampler")


def feeds(kind: str, interface: str | None, n: int) -> list[str]:
    if kind == "sampler":
        return [f"step.{i}" for i in range(n)]
    if kind in ("loss", "grad"):
        own = ["t", "r", "n", "cond_drop"] if interface == "mean_flow" else ["t", "n"]
        return [own[i] if i < len(own) else "label_dropout" for i in range(n)]
    return [f"draw.{i}" for i in range(n)]


class _Recorder:
    def __init__(self):
        self.keys = {}      # id(key) -> (tag, count, key): keys handed out, not yet drawn with
        self.draws = []     # dicts in drawing order
        self.traced = 0     # stream calls under tracing (cannot be recorded)

    def add(self, key, op, shape, raw, minval=None, maxval=None):
        info = self.keys.pop(id(key), None)
        if info is None:
            return
        tag, count, _ = info
        d = {"stream": tag, "counter": count, "op": op, "shape": [int(s) for s in shape],
             "values": np.asarray(raw)}
        if minval is not None:
            d["minval"], d["maxval"] = float(minval), float(maxval)
        self.draws.append(d)


def _eager_scan(f, *, in_axes, out_axes, **kwargs):
    if kwargs or in_axes != (nnx.Carry, 0) or out_axes != (nnx.Carry, 0):
        raise NotImplementedError(f"draw recording runs nnx.scan(in_axes=(Carry, 0), out_axes=(Carry, 0)) only, "
                                  f"got in_axes={in_axes}, out_axes={out_axes}, {kwargs}")

    def run(carry, xs):
        ys = []
        for i in range(xs.shape[0]):
            carry, y = f(carry, xs[i])
            ys.append(y)
        return carry, (jnp.stack(ys) if ys else None)

    return run


@contextlib.contextmanager
def _recording():
    rec = _Recorder()
    orig_call = rnglib.RngStream.__call__
    orig = {name: getattr(jax.random, name) for name in ("uniform", "normal", "bits")}
    orig_scan = nnx.scan

    def call(self):
        count = self.count.value
        key = orig_call(self)
        if isinstance(count, jax.core.Tracer) or isinstance(key, jax.core.Tracer):
            rec.traced += 1
        else:
            rec.keys[id(key)] = (self.key.tag, int(count), key)
        return key

    def uniform(key, shape=(), dtype=jnp.float32, minval=0.0, maxval=1.0):
        out = orig["uniform"](key, shape, dtype, minval, maxval)
        default = float(minval) == 0.0 and float(maxval) == 1.0
        raw = out if default else orig["uniform"](key, shape, dtype)
        rec.add(key, "uniform", shape, raw, None if default else minval, None if default else maxval)
        return out

    def normal(key, shape=(), dtype=jnp.float32):
        out = orig["normal"](key, shape, dtype)
        rec.add(key, "normal", shape, out)
        return out

    def bits(key, shape=(), dtype=jnp.uint32):
        out = orig["bits"](key, shape, dtype)
        rec.add(key, "bits", shape, out)
        return out

    rnglib.RngStream.__call__ = call
    jax.random.uniform, jax.random.normal, jax.random.bits = uniform, normal, bits
    nnx.scan = _eager_scan
    try:
        yield rec
    finally:
        rnglib.RngStream.__call__ = orig_call
        for name, fn in orig.items():
            setattr(jax.random, name, fn)
        nnx.scan = orig_scan


def record(fn) -> list[dict]:
    """The draws ``fn()`` makes from nnx streams, in order (a repeat of the same stream and
    counter, e.g. the gradient pass redoing the loss, must repeat the same values and is
    kept once)."""
    with _recording() as rec:
        fn()
    if rec.traced:
        raise RuntimeError(f"{rec.traced} stream call(s) happened under tracing and could not be recorded")
    if rec.keys:
        left = sorted((t, c) for t, c, _ in rec.keys.values())
        raise RuntimeError(f"keys handed out but not drawn with by uniform/normal/bits: {left}")
    out, seen = [], {}
    for d in rec.draws:
        k = (d["stream"], d["counter"])
        if k in seen:
            first = seen[k]
            if first["op"] != d["op"] or first["shape"] != d["shape"] or not np.array_equal(first["values"], d["values"]):
                raise RuntimeError(f"draw {k} was made twice with different results")
            continue
        seen[k] = d
        out.append(d)
    return out


def attach(meta: dict, arrays: dict, draws: list[dict]) -> None:
    """Writes ``draws`` into a case: ``meta['draws']`` (the listing) and ``draw.*`` arrays."""
    labels = feeds(meta["kind"], meta.get("interface", {}).get("type"), len(draws))
    listing = []
    for d, label in zip(draws, labels):
        stem = f"draw.{d['stream']}.{d['counter']}"
        entry = {"file": stem, "stream": d["stream"], "counter": d["counter"], "op": d["op"],
                 "shape": d["shape"], "feeds": label}
        if "minval" in d:
            entry["minval"], entry["maxval"] = d["minval"], d["maxval"]
        listing.append(entry)
        values = np.asarray(d["values"])
        arrays[stem] = values.astype(np.uint32 if d["op"] == "bits" else np.float32)
    if listing:
        meta["draws"] = listing
    else:
        meta.pop("draws", None)


def add_draws(case, recompute) -> None:
    """Records the draws of ``case`` by running ``recompute(meta, inputs)`` (the area's own
    replay of the case from its inputs) and attaches them. Cases of other kinds draw nothing."""
    if case.meta.get("kind") not in RECORDED_KINDS:
        return
    inputs = {k: v for k, v in case.arrays.items() if k.split(".", 1)[0] in ("in", "param", "buffer")}
    meta = {k: v for k, v in case.meta.items() if k != "draws"}

    def run():
        if recompute(meta, inputs) is None:
            raise RuntimeError(f"{case.name}: the area's recompute does not answer its own case")

    attach(case.meta, case.arrays, record(run))
