"""`alpr config check|show`: validate a configuration file, or print the effective settings as YAML."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from alpr_shared.cli import add_common_options, settings_from_args
from alpr_shared.logging import redact_url
from alpr_shared.settings import ConfigError


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="alpr config", description=__doc__)
    parser.add_argument("action", choices=["check", "show"])
    add_common_options(parser)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.action == "check":
        print(f"configuration OK: {len(settings.cameras)} camera(s)")
        return 0
    data = settings.model_dump(mode="json")
    for camera in data["cameras"]:
        camera["source"] = redact_url(camera["source"])
    data["database"]["url"] = redact_url(data["database"]["url"])
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0
