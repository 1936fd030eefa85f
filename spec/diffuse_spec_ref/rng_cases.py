"""Kind ``rng``: jax.random on raw keys and flax ``nnx.Rngs`` streams (golden-format.md).

Without ``rngs``, each call ``{op, seed, ...}`` acts on ``jax.random.key(seed)``; with
``rngs``, each call ``{stream, op, ...}`` draws from that stream of one ``nnx.Rngs``
built from ``rngs`` (``fold_in(key, counter)``, then the counter advances; ``key``
returns that folded key's data and uses up one count). Ops: ``uniform`` (optional
``minval``/``maxval``), ``normal``, ``bits`` (uint32), ``key`` (uint32 ``[2]``),
``fold_in`` (``data``, a uint32), ``split`` (``num`` -> ``[num, 2]``).

Everything is the library's own code (jax 0.5.1, partitionable threefry), so the
restatement is the reference here: it must agree bit for bit.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from .case import Case

INT32_MAX = 2**31 - 1


def _draw(key, call):
    op = call["op"]
    shape = tuple(call.get("shape", ()))
    if op == "uniform":
        return jax.random.uniform(key, shape, minval=call.get("minval", 0.0), maxval=call.get("maxval", 1.0))
    if op == "normal":
        return jax.random.normal(key, shape)
    if op == "bits":
        return jax.random.bits(key, shape)
    if op == "key":
        return jax.random.key_data(key)
    if op == "fold_in":
        return jax.random.key_data(jax.random.fold_in(key, np.uint32(call["data"])))
    if op == "split":
        return jax.random.key_data(jax.random.split(key, call["num"]))
    raise ValueError(f"unknown rng op {op!r}")


def run_calls(meta: dict) -> dict:
    """``{'out.<i>': array}`` for the calls of an ``rng`` case."""
    outs = {}
    if "rngs" in meta:
        rngs = nnx.Rngs(**meta["rngs"])
        for i, call in enumerate(meta["calls"]):
            key = getattr(rngs, call["stream"])()
            outs[f"out.{i}"] = np.asarray(_draw(key, call))
    else:
        for i, call in enumerate(meta["calls"]):
            outs[f"out.{i}"] = np.asarray(_draw(jax.random.key(call["seed"]), call))
    return outs


def recompute(meta: dict, arrays: dict) -> dict | None:
    if meta.get("kind") != "rng":
        return None
    return run_calls(meta)


def _case(name: str, meta: dict) -> Case:
    meta = {"kind": "rng", **meta}
    return Case(name, meta, run_calls(meta))


def fixture_cases() -> list[Case]:
    raw_calls = [
        {"op": "key", "seed": 0},
        {"op": "key", "seed": -7},
        {"op": "key", "seed": INT32_MAX},
        {"op": "key", "seed": -(2**31)},
        {"op": "fold_in", "seed": 0, "data": 1},
        {"op": "fold_in", "seed": -1, "data": 12345},
        {"op": "fold_in", "seed": INT32_MAX, "data": 2**32 - 1},
        {"op": "fold_in", "seed": 21, "data": 2**31},
        {"op": "split", "seed": 0, "num": 1},
        {"op": "split", "seed": -2, "num": 3},
        {"op": "split", "seed": INT32_MAX, "num": 7},
        {"op": "bits", "seed": 0, "shape": [7, 3, 1]},
        {"op": "bits", "seed": -9, "shape": []},
        {"op": "bits", "seed": 5, "shape": [4097]},
        {"op": "uniform", "seed": 0, "shape": [3]},
        {"op": "uniform", "seed": 8, "shape": [2, 1, 5]},
        {"op": "uniform", "seed": -3, "shape": [257], "minval": -5.0, "maxval": -1.5},
        {"op": "uniform", "seed": INT32_MAX, "shape": [4097], "minval": 0.001, "maxval": 80.0},
        {"op": "uniform", "seed": 31, "shape": [9], "minval": 0.25},
        {"op": "normal", "seed": 0, "shape": [3]},
        {"op": "normal", "seed": -1, "shape": [1]},
        {"op": "normal", "seed": 77, "shape": [3, 1, 5]},
        {"op": "normal", "seed": 2024, "shape": [100000]},
    ]
    stream_calls = [
        {"stream": "time", "op": "uniform", "shape": [5]},
        {"stream": "noise", "op": "normal", "shape": [2, 3, 1, 4]},
        {"stream": "time", "op": "normal", "shape": [5]},
        {"stream": "label_dropout", "op": "uniform", "shape": [6]},
        {"stream": "noise", "op": "key"},
        {"stream": "default", "op": "bits", "shape": [3, 3]},
        {"stream": "noise", "op": "normal", "shape": [4097]},
        {"stream": "params", "op": "uniform", "shape": [11], "minval": -2.0, "maxval": 3.0},
        {"stream": "time", "op": "key"},
        {"stream": "time", "op": "uniform", "shape": []},
        {"stream": "dropout", "op": "normal", "shape": [7]},
        {"stream": "default", "op": "key"},
        {"stream": "label_dropout", "op": "uniform", "shape": [6]},
    ]
    # a stream asked for by a name that Rngs lacks falls back to 'default' (flax's rule)
    fallback_calls = [
        {"stream": "default", "op": "uniform", "shape": [4]},
        {"stream": "time", "op": "uniform", "shape": [4]},
        {"stream": "noise", "op": "normal", "shape": [4]},
        {"stream": "default", "op": "key"},
    ]
    return [
        _case("rng_raw_keys_ops", {"description": "raw jax.random ops on key(seed): seeds 0, negative, "
                                   "int32 extremes; fold_in, split, bits, uniform ranges, 10^5 normals",
                                   "calls": raw_calls}),
        _case("rng_streams_mixed", {"description": "named nnx.Rngs streams, interleaved: "
                                    "fold_in(key(seed), count) per call; key draws use a count",
                                    "rngs": {"default": INT32_MAX, "time": 0, "noise": -1,
                                             "label_dropout": 123, "params": -(2**31), "dropout": 9},
                                    "calls": stream_calls}),
        _case("rng_streams_default_fallback", {"description": "streams missing from Rngs draw from, "
                                               "and advance, the 'default' stream",
                                               "rngs": {"default": 17},
                                               "calls": fallback_calls}),
    ]
