"""Reading one golden case (docs/format.md): case.json, its arrays by role, its draws.

A case is a directory: `case.json` says what to compute, `in.*` / `param.*` / `buffer.*`
are the arrays it is computed from, `draw.*` the raw random numbers it consumed, and
`out.*` / `grad.*` what the oracle expects. The port never reads those: what it writes
follows from the kind alone, and `diffuse-spec verify` says whether it matches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class PortError(Exception):
    """The case asks for something this port does not do, or the port misread the case."""


def settings(block: dict, defaults: dict, what: str) -> dict:
    """A settings block with every absent setting at its default (format.md, "Settings blocks").

    `type` selects the implementation; `description` and `param_seed` are metadata. Any other
    key the defaults do not name is an unknown setting, which is an error.
    """
    out = dict(defaults)
    for key, value in block.items():
        if key in ("type", "description", "param_seed"):
            continue
        if key not in defaults:
            raise PortError(f"{what}: unknown setting {key!r} (known: {sorted(defaults)})")
        out[key] = value
    missing = [k for k, v in out.items() if v is REQUIRED]
    if missing:
        raise PortError(f"{what}: missing required settings {missing}")
    return out


REQUIRED = object()
"""A default that marks a required setting."""


class Draws:
    """The case's raw draws, handed out in listing order.

    The listing is positional (format.md, "Random draws"): the port asks for the draw it needs
    next by what it feeds (`t`, `n`, `cond_drop`, ...); asking for another one than the next
    listed, or leaving draws unused, means the port computes something else than the case.
    """

    def __init__(self, case: "Case"):
        self._case = case
        self._listing = case.meta.get("draws", [])
        self._next = 0

    def take(self, feeds: str, op: str | None = None, shape=None) -> torch.Tensor:
        if self._next >= len(self._listing):
            raise PortError(f"{self._case.name}: the port wants a draw for {feeds!r}, the case lists no more")
        entry = self._listing[self._next]
        if entry["feeds"] != feeds:
            raise PortError(
                f"{self._case.name}: draw {self._next} feeds {entry['feeds']!r}, the port wants {feeds!r}"
            )
        if op is not None and entry["op"] != op:
            raise PortError(f"{self._case.name}: draw for {feeds!r} is a {entry['op']}, the port expects {op}")
        value = self._case.tensor(entry["file"])
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise PortError(
                f"{self._case.name}: draw for {feeds!r} has shape {tuple(value.shape)}, expected {tuple(shape)}"
            )
        self._next += 1
        return value

    def op_of_next(self) -> str | None:
        """The op (`uniform` / `normal`) of the next listed draw, or None when none is left."""
        if self._next >= len(self._listing):
            return None
        return self._listing[self._next]["op"]

    def finish(self) -> None:
        if self._next != len(self._listing):
            left = [d["feeds"] for d in self._listing[self._next:]]
            raise PortError(f"{self._case.name}: the port left draws unused: {left}")


class Case:
    """One case directory."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.meta = json.loads((self.path / "case.json").read_text())
        self.name = self.meta["name"]
        self.kind = self.meta["kind"]
        if self.meta.get("format") != 1:
            raise PortError(f"{self.name}: format {self.meta.get('format')!r}, this port reads format 1")
        self.files = sorted(p.name[:-4] for p in self.path.glob("*.npy"))

    def has(self, stem: str) -> bool:
        return (self.path / f"{stem}.npy").exists()

    def array(self, stem: str) -> np.ndarray:
        return np.load(self.path / f"{stem}.npy")

    def tensor(self, stem: str) -> torch.Tensor:
        a = self.array(stem)
        if a.dtype == np.float32:
            return torch.from_numpy(a.copy())
        if a.dtype == np.int32:
            return torch.from_numpy(a.astype(np.int64))  # labels: indices for embedding tables
        raise PortError(f"{self.name}: {stem} has dtype {a.dtype}")

    def maybe(self, stem: str) -> torch.Tensor | None:
        return self.tensor(stem) if self.has(stem) else None

    def arrays(self, role: str, prefix: str = "") -> dict[str, torch.Tensor]:
        """Every `<role>.<prefix><path>` array, keyed by `<path>` (e.g. role "param")."""
        head = f"{role}.{prefix}"
        return {stem[len(head):]: self.tensor(stem) for stem in self.files if stem.startswith(head)}

    def draws(self) -> Draws:
        return Draws(self)


class Context:
    """What a network or an interface may take from its case besides its settings block: the
    parameters (leaf tensors; they require grad in `grad` cases), the buffers, case.json."""

    def __init__(self, case: Case, requires_grad: bool = False):
        self.case = case
        self.meta = case.meta
        self.params = case.arrays("param")
        for p in self.params.values():
            p.requires_grad_(requires_grad)
        self.buffers = case.arrays("buffer")
