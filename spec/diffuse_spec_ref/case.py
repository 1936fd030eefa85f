"""Golden case format v1: one directory per case, ``case.json`` plus ``.npy`` files.

See ``docs/format.md``. A case is::

    <root>/<name>/case.json        {"format": 1, "name": ..., "kind": ..., ...}
    <root>/<name>/<stem>.npy       in.* / param.* / buffer.* / draw.* / out.* / grad.*

Arrays are little-endian, C order, and one of float32, int32, uint32. Writing is
byte-reproducible: the JSON is ``json.dumps(obj, indent=2, sort_keys=True)`` plus a
trailing newline, and the ``.npy`` files are written by ``np.save`` (whose header
depends only on dtype and shape).
"""

from __future__ import annotations

import json
import pathlib
import shutil
from dataclasses import dataclass, field

import numpy as np

FORMAT = 1

# kinds of array a case may hold, and the dtypes allowed in files
ROLES = ("in", "param", "buffer", "draw", "out", "grad")
_ALLOWED = {
    np.dtype(np.float32): np.dtype("<f4"),
    np.dtype(np.int32): np.dtype("<i4"),
    np.dtype(np.uint32): np.dtype("<u4"),
}


@dataclass
class Case:
    """One case: ``meta`` is case.json without ``format`` and ``name`` (must hold ``kind``)."""

    name: str
    meta: dict
    arrays: dict = field(default_factory=dict)


def _as_storable(stem: str, value) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype == np.bool_:
        raise TypeError(f"{stem}: bool arrays are not part of format v1")
    if a.dtype == np.float64:
        raise TypeError(f"{stem}: float64 refused; convert to float32 explicitly")
    if a.dtype in (np.int64, np.int16, np.int8, np.uint8, np.uint16):
        # integer labels / indices: only int32 is allowed; refuse silent overflow
        info = np.iinfo(np.int32)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise ValueError(f"{stem}: integer values do not fit int32")
        a = a.astype(np.int32)
    if a.dtype == np.uint64:
        if a.size and a.max() > np.iinfo(np.uint32).max:
            raise ValueError(f"{stem}: values do not fit uint32")
        a = a.astype(np.uint32)
    if a.dtype not in _ALLOWED:
        raise TypeError(f"{stem}: dtype {a.dtype} not allowed (float32, int32, uint32 only)")
    # np.ascontiguousarray would turn a 0-d array into shape (1,); copy keeps the shape.
    return a.astype(_ALLOWED[a.dtype]).copy(order="C")


def _check_stem(stem: str) -> None:
    role = stem.split(".", 1)[0]
    if role not in ROLES or "." not in stem or "/" in stem or stem.endswith("."):
        raise ValueError(f"bad array stem {stem!r}: want <role>.<name>, role in {ROLES}")


def case_json_text(case: Case) -> str:
    meta = dict(case.meta)
    if "kind" not in meta:
        raise ValueError(f"{case.name}: meta must include 'kind'")
    for k in ("format", "name"):
        meta.pop(k, None)
    obj = {"format": FORMAT, "name": case.name, **meta}
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def write_case(root: pathlib.Path, case: Case) -> None:
    """Write ``root/<name>/case.json`` and one ``<stem>.npy`` per array.

    The case directory is replaced whole, so a stale file of an earlier run never
    survives next to fresh ones.
    """
    root = pathlib.Path(root)
    if not case.name or "/" in case.name or case.name.startswith("."):
        raise ValueError(f"bad case name {case.name!r}")
    text = case_json_text(case)
    arrays = {}
    for stem in sorted(case.arrays):
        _check_stem(stem)
        arrays[stem] = _as_storable(stem, case.arrays[stem])
    d = root / case.name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / "case.json").write_text(text, encoding="utf-8")
    for stem, a in arrays.items():
        with open(d / f"{stem}.npy", "wb") as f:
            np.save(f, a, allow_pickle=False)


def read_case(case_dir) -> tuple[dict, dict[str, np.ndarray]]:
    """Return (case.json as a dict, {stem: array}) for one case directory."""
    case_dir = pathlib.Path(case_dir)
    meta = json.loads((case_dir / "case.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{case_dir}: unsupported format {meta.get('format')!r}")
    arrays = {}
    for p in sorted(case_dir.glob("*.npy")):
        arrays[p.name[: -len(".npy")]] = np.load(p, allow_pickle=False)
    return meta, arrays


def split_arrays(arrays: dict, role: str) -> dict:
    """{name: array} for the arrays of one role, e.g. split_arrays(a, 'param') -> {'W1': ...}."""
    pre = role + "."
    return {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}


def shift_name(s: float) -> str:
    """File-name form of a t_shift value: 0.5 -> '0p5', 3.0 -> '3p0'."""
    return repr(float(s)).replace(".", "p").replace("-", "m")
