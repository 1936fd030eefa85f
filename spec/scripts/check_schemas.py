"""Validate JSON documents against the project's schemas (docs/schemas/).

    python spec/scripts/check_schemas.py cases SCHEMA ROOT...     every case.json below each ROOT
    python spec/scripts/check_schemas.py lines SCHEMA FILE...     every line of each FILE (JSON lines)

Prints one line per invalid document (path or file:line, then the validator's message) and a
count; exits 1 when any document is invalid, 2 when there was nothing to validate.
"""
import json
import pathlib
import sys

import jsonschema


def main(argv):
    mode, schema_path, *targets = argv
    schema = json.loads(pathlib.Path(schema_path).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    docs = []
    for t in targets:
        t = pathlib.Path(t)
        if mode == "cases":
            docs += [(str(p), json.loads(p.read_text())) for p in sorted(t.rglob("case.json"))]
        elif mode == "lines":
            docs += [(f"{t}:{i + 1}", json.loads(line)) for i, line in enumerate(t.read_text().splitlines()) if line.strip()]
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    bad = 0
    for where, doc in docs:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        for e in errors[:3]:
            print(f"{where}: {'/'.join(map(str, e.path)) or '(top)'}: {e.message[:300]}")
        bad += bool(errors)
    print(f"{len(docs)} documents, {bad} invalid")
    return 2 if not docs else int(bad > 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
