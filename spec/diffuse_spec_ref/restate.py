"""Recompute golden cases with the restatement and compare against the reference's outputs.

    cd spec && python -m diffuse_spec_ref.restate --golden GOLDEN_DIR --out DIR [--only SUBSTR]

For each golden case: read it, ask each area's ``recompute`` (the first that answers
wins), and write a candidate case ``DIR/<name>/`` holding a copy of ``case.json`` and
the same ``out.*`` / ``grad.*`` file names as the golden case, computed here. Prints,
per case and file, the max abs diff, the max relative diff (``|a - g| / max|g|`` over
the array, and the elementwise ``|a - g| / |g|`` where ``|g| > 1e-3 max|g|``) and the
max ulp distance; then a summary per kind and per quantity. Cases no area answers
are listed as not reproduced.

Non-finite values compare equal when both sides have the same non-finite value (NaN
with NaN, inf with the same sign); otherwise they count as an infinite difference.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

import numpy as np

from .areas import load_areas
from .case import read_case


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise ulp distance of two float32 arrays (monotone integer map of the bits)."""
    def ordered(x):
        i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(ordered(a) - ordered(b))


def compare(a: np.ndarray, g: np.ndarray) -> dict:
    if a.shape != g.shape:
        return {"error": f"shape {a.shape} vs golden {g.shape}"}
    if a.dtype != g.dtype:
        return {"error": f"dtype {a.dtype} vs golden {g.dtype}"}
    if g.dtype != np.float32:
        d = np.abs(a.astype(np.int64) - g.astype(np.int64))
        m = float(d.max()) if d.size else 0.0
        return {"abs": m, "rel": 0.0 if m == 0 else float("inf"), "rel_elem": 0.0, "ulp": int(m)}
    fa, fg = np.isfinite(a), np.isfinite(g)
    same_nonfinite = (~fa & ~fg) & ((np.isnan(a) & np.isnan(g)) | (a == g))
    mismatch_nonfinite = (~fa | ~fg) & ~same_nonfinite
    both = fa & fg
    if not both.any():
        return {"abs": float("inf") if mismatch_nonfinite.any() else 0.0,
                "rel": float("inf") if mismatch_nonfinite.any() else 0.0,
                "rel_elem": 0.0, "ulp": 0, "nonfinite": int((~fg).sum())}
    a64, g64 = a[both].astype(np.float64), g[both].astype(np.float64)
    diff = np.abs(a64 - g64)
    scale = np.abs(g64).max()
    big = np.abs(g64) > 1e-3 * scale
    res = {
        "abs": float(diff.max()),
        "rel": float(diff.max() / scale) if scale > 0 else float(diff.max() > 0) * float("inf"),
        "rel_elem": float((diff[big] / np.abs(g64[big])).max()) if big.any() else 0.0,
        "ulp": int(ulp_distance(a[both], g[both]).max()),
    }
    if mismatch_nonfinite.any():
        res["abs"] = res["rel"] = float("inf")
    if (~fg).any():
        res["nonfinite"] = int((~fg).sum())
    return res


def _quantity(stem: str) -> str:
    # out.feature.3 -> out.feature; out.7 (rng) -> out.<i>; grad.blocks.0.x -> grad.*
    parts = stem.split(".")
    if parts[0] == "grad":
        return "grad.*"
    if len(parts) > 1 and parts[1].isdigit():
        return "out.<i>"
    return ".".join(parts[:2])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m diffuse_spec_ref.restate", description=__doc__.split("\n")[0])
    ap.add_argument("--golden", required=True, type=pathlib.Path)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--only", default=None)
    args = ap.parse_args(argv)

    areas = load_areas()
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    not_reproduced = []
    for case_dir in sorted(p for p in args.golden.iterdir() if (p / "case.json").is_file()):
        if args.only is not None and args.only not in case_dir.name:
            continue
        meta, arrays = read_case(case_dir)
        inputs = {k: v for k, v in arrays.items() if k.split(".", 1)[0] in ("in", "param", "buffer")}
        expected = {k: v for k, v in arrays.items() if k.split(".", 1)[0] in ("out", "grad")}
        result, area = None, None
        for name, mod in areas.items():
            try:
                result = mod.recompute(meta, dict(inputs))
            except Exception as e:  # noqa: BLE001 - report and go on with the next case
                result, area = None, name
                not_reproduced.append((meta["name"], f"{name} raised {type(e).__name__}: {e}"))
                break
            if result is not None:
                area = name
                break
        if result is None:
            if area is None:
                not_reproduced.append((meta["name"], "no area recomputes this case"))
            print(f"{meta['name']}: NOT REPRODUCED")
            continue
        cand = args.out / meta["name"]
        if cand.exists():
            shutil.rmtree(cand)
        cand.mkdir(parents=True)
        shutil.copyfile(case_dir / "case.json", cand / "case.json")
        print(f"{meta['name']}  [{meta['kind']}, {area}]")
        for stem in sorted(expected):
            if stem not in result:
                print(f"  {stem:40s} MISSING from the restatement")
                not_reproduced.append((meta["name"], f"{stem} not computed"))
                continue
            a = np.asarray(result[stem])
            if a.dtype == np.float64:
                raise TypeError(f"{meta['name']}/{stem}: restatement produced float64")
            np.save(cand / f"{stem}.npy", a, allow_pickle=False)
            c = compare(a, expected[stem])
            if "error" in c:
                print(f"  {stem:40s} {c['error']}")
                not_reproduced.append((meta["name"], f"{stem}: {c['error']}"))
                continue
            extra = f"  nonfinite {c['nonfinite']}" if "nonfinite" in c else ""
            print(f"  {stem:40s} abs {c['abs']:.3g}  rel {c['rel']:.3g}  rel_elem {c['rel_elem']:.3g}  "
                  f"ulp {c['ulp']}{extra}")
            key = (meta["kind"], _quantity(stem))
            w = summary.setdefault(key, {"abs": 0.0, "rel": 0.0, "rel_elem": 0.0, "ulp": 0, "cases": set()})
            for k in ("abs", "rel", "rel_elem", "ulp"):
                w[k] = max(w[k], c[k])
            w["cases"].add(meta["name"])
        extra_out = sorted(set(result) - set(expected))
        if extra_out:
            print(f"  (computed but not in golden: {', '.join(extra_out)})")

    print("\n--- summary: worst per kind and quantity")
    print(f"{'kind':12s} {'quantity':16s} {'max abs':>10s} {'max rel':>10s} {'rel elem':>10s} {'max ulp':>8s}  cases")
    for (kind, q), w in sorted(summary.items()):
        print(f"{kind:12s} {q:16s} {w['abs']:10.3g} {w['rel']:10.3g} {w['rel_elem']:10.3g} {w['ulp']:8d}  "
              f"{len(w['cases'])}")
    if not_reproduced:
        print("\n--- not reproduced")
        for name, why in not_reproduced:
            print(f"{name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
