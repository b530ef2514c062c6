"""`alpr`: one command for every service and tool.

`alpr <service> [--config FILE]` starts one pipeline stage in this process (what a container runs);
`alpr config check`, `alpr shm list|reclaim`, `alpr db migrate|status` and `alpr demo` are tools. Each service's own
`python -m alpr_<service>` is the same entry point. Commands that later issues build (`run`, `eval`,
`models`) are listed so `alpr --help` shows the whole surface, and say plainly that they are not
built yet instead of pretending.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alpr_shared.lifecycle import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, ServiceMain, run_service
from alpr_shared.settings import AlprSettings, ConfigError, load_settings

# Service command → the module whose `service_main(ctx)` runs it.
SERVICES: dict[str, str] = {
    "ingest": "alpr_ingest.service",
    "detect": "alpr_detect.service",
    "track": "alpr_track.service",
    "ocr": "alpr_ocr.service",
    "ocr-worker": "alpr_ocr.worker",
    "events": "alpr_events.service",
    "persist": "alpr_persist.service",
    "query": "alpr_query.service",
}

# Commands whose issue has not landed yet: name → (what it will do, the issue that builds it).
PLANNED: dict[str, tuple[str, int]] = {}


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help="YAML configuration file (default: $ALPR_CONFIG)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override log.level"
    )
    parser.add_argument("--log-format", choices=["auto", "json", "console"], help="override log.format")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that command-line flags override (applied above the file and the environment)."""
    overrides: dict[str, Any] = {}
    log: dict[str, str] = {}
    if args.log_level:
        log["level"] = args.log_level
    if args.log_format:
        log["format"] = args.log_format
    if log:
        overrides["log"] = log
    return overrides


def settings_from_args(args: argparse.Namespace) -> AlprSettings:
    return load_settings(args.config, overrides=overrides_from_args(args))


def _load_service_main(command: str) -> ServiceMain | None:
    module_name = SERVICES[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    main: ServiceMain = module.service_main
    return main


def run_service_command(command: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of `alpr <service>` and of each service's `__main__`."""
    parser = argparse.ArgumentParser(prog=f"alpr {command}", description=f"Run the {command} service.")
    add_common_options(parser)
    parser.add_argument(
        "--metrics-port", type=int, help="override services.<name>.metrics_port (0 = any free)"
    )
    args = parser.parse_args(argv)
    main = _load_service_main(command)
    if main is None:
        issue = {"detect": 6, "track": 7, "ocr": 8, "ocr-worker": 8, "events": 9, "persist": 10, "query": 11}
        print(
            f"alpr {command}: this service is not built yet (issue #{issue.get(command, '?')}); "
            "see docs/architecture.md for its role",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"alpr {command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return run_service(
        command,
        settings,
        main,
        config_path=args.config,
        overrides=overrides_from_args(args),
        metrics_port=args.metrics_port,
    )


def _planned(name: str) -> Callable[[Sequence[str]], int]:
    what, issue = PLANNED[name]

    def run(_argv: Sequence[str]) -> int:
        print(f"alpr {name}: not built yet — it will {what} (issue #{issue})", file=sys.stderr)
        return EXIT_FAILED

    return run


def _tool(module: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        entry: Callable[[Sequence[str]], int] = importlib.import_module(module).main
        return entry(argv)

    return run


def _commands() -> dict[str, tuple[str, Callable[[Sequence[str]], int]]]:
    commands: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {}
    for name in SERVICES:
        commands[name] = (f"run the {name} service", functools.partial(run_service_command, name))
    commands["config"] = ("check or show the effective configuration", _tool("alpr_shared.tools.config_cmd"))
    commands["shm"] = ("list or reclaim shared-memory frame rings", _tool("alpr_shared.tools.shm_cmd"))
    commands["tap"] = ("attach to the frame stream and report what arrives", _tool("alpr_shared.tools.tap"))
    commands["demo"] = (
        "ingest a generated video and read it back through shared memory",
        _tool("alpr_shared.tools.demo"),
    )
    commands["demo-video"] = (
        "generate the demo video from the shared labelled car photos",
        _tool("alpr_shared.tools.demovideo"),
    )
    commands["view"] = (
        "live annotated view of the edge streams in the browser (MJPEG)",
        _tool("alpr_shared.view.cli"),
    )
    commands["models"] = (
        "provision models offline: list | fetch | export | verify | build-engine",
        _tool("alpr_detect.models_cmd"),
    )
    commands["run"] = (
        "run the whole system: every stage supervised, embedded database, live status",
        _tool("alpr_shared.run.command"),
    )
    commands["db"] = (
        "database schema of the plate store: migrate | status | maintain",
        _tool("alpr_persist.db_cmd"),
    )
    commands["keys"] = ("API keys of the query service: create | list | revoke", _tool("alpr_query.keys_cmd"))
    commands["eval"] = (
        "plate-reading accuracy of the per-frame path on labelled photos",
        _tool("alpr_shared.evaluate.cli"),
    )
    for name, (what, issue) in PLANNED.items():
        commands[name] = (f"{what} (not built yet, issue #{issue})", _planned(name))
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not args or args[0] in {"-h", "--help"}:
        width = max(len(n) for n in commands)
        lines = ["usage: alpr COMMAND [options]   (alpr COMMAND --help for its options)", "", "commands:"]
        lines += [f"  {name:<{width}}  {what}" for name, (what, _) in commands.items()]
        print("\n".join(lines))
        return EXIT_OK if args else EXIT_CONFIG
    if args[0] == "--version":
        from importlib.metadata import version  # noqa: PLC0415 - only needed here

        print(f"alpr {version('alpr-platform')}")
        return EXIT_OK
    command = commands.get(args[0])
    if command is None:
        print(f"alpr: unknown command {args[0]!r}; run 'alpr --help' for the list", file=sys.stderr)
        return EXIT_CONFIG
    return command[1](args[1:])


if __name__ == "__main__":
    sys.exit(main())
