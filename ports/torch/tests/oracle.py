"""Running the oracle: `diffuse-spec verify` (the libtorch-free build) on candidate files."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

PORT = Path(__file__).resolve().parents[1]
REPO = PORT.parents[1]
FIXTURES = REPO / "fixtures" / "v1"
EXPECTATIONS = PORT / "expectations.toml"


def verify_binary() -> str:
    path = os.environ.get("DIFFUSE_SPEC_VERIFY")
    if not path:
        raise RuntimeError(
            "DIFFUSE_SPEC_VERIFY is not set: point it at a diffuse-spec binary (`make port` builds the "
            "libtorch-free one with `cargo build --no-default-features --bin diffuse-spec "
            "--target-dir target/notorch` and passes target/notorch/debug/diffuse-spec)"
        )
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"DIFFUSE_SPEC_VERIFY={path} is not an executable file")
    return path


def case_dirs() -> list[Path]:
    return sorted(p.parent for p in FIXTURES.glob("*/case.json"))


def expectations() -> list[dict]:
    return tomllib.loads(EXPECTATIONS.read_text()).get("skip", [])


def skip_reason(case_dir: Path, entries: list[dict]) -> str | None:
    kind = json.loads((case_dir / "case.json").read_text())["kind"]
    for e in entries:
        if e.get("case") == case_dir.name or e.get("kind") == kind:
            return e["reason"]
    return None


class Verdict:
    """verify's exit status and rows (`--json`) for some cases of a candidate directory."""

    def __init__(self, rc: int, rows: list[dict], summary: dict, stderr: str):
        self.rc, self.rows, self.summary, self.stderr = rc, rows, summary, stderr

    def status(self) -> dict[tuple[str, str], str]:
        return {(r["case"], r["quantity"]): r["status"] for r in self.rows}

    def not_passing(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "pass"]

    def report(self, rows=None) -> str:
        """The rows as verify words them: case, quantity, status, worst ulp / rel, detail."""
        rows = self.not_passing() if rows is None else rows
        lines = [
            f"  {r['case']}  {r['quantity']}  {r['status'].upper()}  worst ulp {r['worst_ulp']}  "
            f"worst rel {r['worst_rel']}: {r['detail']}"
            for r in rows
        ]
        return "\n".join(lines + [f"  verify: {self.summary.get('line', '?')} (exit {self.rc})"]
                         + ([f"  stderr: {self.stderr.strip()}"] if self.stderr.strip() else []))


def verify(candidate: Path, cases: list[str]) -> Verdict:
    """`diffuse-spec verify --golden fixtures/v1 --candidate DIR --cases LIST --json`."""
    listing = candidate / "cases.txt"
    listing.write_text("".join(f"{c}\n" for c in cases))
    proc = subprocess.run(
        [verify_binary(), "verify", "--golden", str(FIXTURES), "--candidate", str(candidate),
         "--cases", str(listing), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    rows, summary = [], {}
    for line in proc.stdout.splitlines():
        obj = json.loads(line)
        if "summary" in obj:
            summary = obj
        else:
            rows.append(obj)
    return Verdict(proc.returncode, rows, summary, proc.stderr)
