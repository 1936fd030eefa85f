"""Write the project's own fixtures (golden format v1) from every area's ``fixture_cases()``.

    cd spec && python -m diffuse_spec_ref.export --out ../fixtures/v1 [--area NAME ...] [--only SUBSTR] [--reference PATH]

Each area owns the case directories it wrote last time; they are listed in
``<out>/.manifest.json`` (area -> case names). Before an area is written, the
directories it owned and no longer produces are removed; every case directory it
produces is replaced whole. With ``--only SUBSTR`` only cases whose name contains
SUBSTR are written and nothing is removed. With ``--area NAME`` (repeatable) only those
areas are computed and written, and only their manifest entries change. A case directory
that no area owns is left alone, with a warning.

Every case whose computation draws random numbers also gets the raw draws it consumed
(``draw.<stream>.<counter>.npy`` and the ``draws`` listing of case.json; see ``draws.py``),
so that an implementation without JAX's threefry can reproduce it.

Output is deterministic: the same versions give byte-identical files run to run
(check with ``sha256sum``). A provenance summary (jax / jaxlib / flax / numpy versions,
the command, the count) is printed at the end; fixtures/README.md is written by hand.

``--reference PATH`` (UNTESTED here: the reference project, diffuse_nnx, is not
installable in this environment): puts PATH on ``sys.path`` and, where the names
match, uses the reference's own classes instead of the restatement's:
``interfaces.continuous.{SiTInterface, EDMInterface, MeanFlowInterface}`` and
``samplers.samplers.{EulerSampler, HeunSampler, EulerMaruyamaSampler,
EulerJumpSampler}``. The reference's interfaces read their streams from
``network.rngs`` (the adapter sets it) and expose no intermediates, so the
``out.t``/``out.n``/``out.x_t``/``out.target``/``out.net_out`` files of loss cases are
not written in that mode.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

MANIFEST = ".manifest.json"


def use_reference(path: str) -> list[str]:
    """Swap in the reference's classes where their names match; return what was swapped."""
    sys.path.insert(0, str(pathlib.Path(path).resolve()))
    from . import interfaces as ours_if
    from . import samplers as ours_smp

    swapped = []
    ref_if = __import__("interfaces.continuous", fromlist=["*"])
    for kind, name in (("sit", "SiTInterface"), ("edm", "EDMInterface"), ("mean_flow", "MeanFlowInterface")):
        if hasattr(ref_if, name):
            ours_if.INTERFACES[kind] = getattr(ref_if, name)
            swapped.append(f"interfaces.continuous.{name}")
    ref_smp = __import__("samplers.samplers", fromlist=["*"])
    for kind, name in (("euler", "EulerSampler"), ("heun", "HeunSampler"),
                       ("euler-maruyama", "EulerMaruyamaSampler"), ("euler_jump", "EulerJumpSampler")):
        if hasattr(ref_smp, name):
            ours_smp.SAMPLERS[kind] = getattr(ref_smp, name)
            swapped.append(f"samplers.samplers.{name}")
    return swapped


def _versions() -> dict:
    import flax
    import jax
    import jaxlib
    import numpy

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "numpy": numpy.__version__,
            "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
            "jax_enable_x64": bool(jax.config.jax_enable_x64)}


def _load_manifest(out: pathlib.Path) -> dict:
    p = out / MANIFEST
    return json.loads(p.read_text()) if p.exists() else {}


def _write_manifest(out: pathlib.Path, manifest: dict) -> None:
    text = json.dumps({k: sorted(v) for k, v in sorted(manifest.items())}, indent=2, sort_keys=True) + "\n"
    (out / MANIFEST).write_text(text)


def _dir_size(p: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _compute_area(job):
    """``(area, cases)`` of one area, its draws recorded (in a worker process with ``--jobs``)."""
    area, only, reference = job
    if reference:
        use_reference(reference)
    from .areas import load_areas
    from .draws import add_draws

    mod = load_areas([area], quiet=True)[area]
    cases = mod.fixture_cases()
    for case in cases:
        if only is None or only in case.name:
            add_draws(case, mod.recompute)
    return area, cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m diffuse_spec_ref.export", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=pathlib.Path, help="fixtures root, e.g. ../fixtures/v1")
    ap.add_argument("--only", default=None, help="write only cases whose name contains this")
    ap.add_argument("--area", action="append", default=None, help="export only this area (repeatable)")
    ap.add_argument("--reference", default=None, help="path holding diffuse_nnx's interfaces/ and samplers/")
    ap.add_argument("--jobs", type=int, default=1, help="areas computed in parallel processes (the output is the same)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit("--jobs wants a positive number")

    import jax

    if not jax.config.jax_threefry_partitionable or jax.config.jax_enable_x64:
        raise SystemExit("format v1 wants partitionable threefry and float32 (x64 off)")

    swapped = use_reference(args.reference) if args.reference else []
    from .areas import AREAS, load_areas
    from .case import write_case

    unknown = sorted(set(args.area or []) - set(AREAS))
    if unknown:
        raise SystemExit(f"unknown area(s) {', '.join(unknown)}; known: {', '.join(AREAS)}")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(out)
    written = {}
    names_seen = {}
    areas = list(load_areas(args.area))
    if args.jobs == 1:
        results = map(_compute_area, [(a, args.only, args.reference) for a in areas])
        pool = None
    else:
        import multiprocessing

        # spawn, not fork: JAX's runtime threads do not survive a fork.
        pool = multiprocessing.get_context("spawn").Pool(min(args.jobs, len(areas)))
        results = pool.imap(_compute_area, [(a, args.only, args.reference) for a in areas])
    for area, cases in results:
        names = [c.name for c in cases]
        for n in names:
            if n in names_seen:
                raise SystemExit(f"case name {n!r} produced by both {names_seen[n]} and {area}")
            names_seen[n] = area
        if args.only is None:
            for stale in sorted(set(manifest.get(area, [])) - set(names)):
                if (out / stale).is_dir():
                    shutil.rmtree(out / stale)
                    print(f"removed stale {stale} ({area})")
        count = 0
        for case in cases:
            if args.only is not None and args.only not in case.name:
                continue
            write_case(out, case)
            count += 1
        written[area] = count
        if args.only is None:
            manifest[area] = names
        print(f"{area}: {count} case(s)")
    if pool is not None:
        pool.close()
        pool.join()
    if args.only is None:
        _write_manifest(out, manifest)
    owned = {n for v in manifest.values() for n in v}
    for d in sorted(out.iterdir()):
        if d.is_dir() and d.name not in owned:
            print(f"warning: {d.name} is owned by no area (left alone)")

    total = sum(written.values())
    print("--- provenance")
    for k, v in _versions().items():
        print(f"{k}: {v}")
    print("command: python -m diffuse_spec_ref.export " + " ".join(sys.argv[1:] if argv is None else argv))
    if swapped:
        print("reference classes used: " + ", ".join(swapped))
    print(f"cases written: {total}; {out} holds {_dir_size(out)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
