"""JSON Schemas of the records events puts on Kafka, generated from the msgspec Structs in
`alpr_shared.schemas` (the single source of truth) and committed under `docs/schemas/`.

`python -m alpr_events.jsonschema --write` regenerates them; `--check` (and the unit test
`tests/unit/test_events_jsonschema.py`) fails when a committed file is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from alpr_shared.schemas import SCHEMA_VERSION, PlateEvent, WatchlistAlert, WatchlistEntry

SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "plate_event": PlateEvent,
    "watchlist_alert": WatchlistAlert,
    "watchlist_entry": WatchlistEntry,
}
TITLES = {
    "plate_event": "alpr.plates.detected record value (PlateEvent, msgspec JSON)",
    "watchlist_alert": "alpr.alerts record value and webhook body (WatchlistAlert)",
    "watchlist_entry": "alpr.watchlist record value (WatchlistEntry; a null value deletes the key)",
}


def default_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "docs" / "schemas"


def render(name: str) -> str:
    schema = msgspec.json.schema(SCHEMAS[name])
    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": TITLES[name],
        "x-alpr-schema-version": SCHEMA_VERSION,
        **schema,
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def stale(directory: Path) -> list[str]:
    """Names of the files in `directory` that are missing or differ from the Structs."""
    out = []
    for name in SCHEMAS:
        path = directory / f"{name}.schema.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != render(name):
            out.append(path.name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alpr_events.jsonschema", description=__doc__)
    parser.add_argument(
        "--dir", type=Path, default=default_dir(), help="output folder (default: docs/schemas)"
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate the files")
    action.add_argument("--check", action="store_true", help="exit 1 if a file is missing or stale")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale(args.dir)
        if bad:
            sys.stderr.write(f"stale JSON Schemas in {args.dir}: {', '.join(bad)}; run with --write\n")
            return 1
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for name in SCHEMAS:
        (args.dir / f"{name}.schema.json").write_text(render(name), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
