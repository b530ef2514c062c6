"""`alpr db migrate|status|maintain`: the database schema of the plate store, from the command line.

`migrate` applies pending migrations (safe to run beside running persist instances: an advisory lock
serialises runners) and is a no-op when the schema is current. `status` prints the schema version, the
layout (partitioned / timescale), pending migrations and whether the trigram index exists; exit code 3 when
migrations are pending, so deploy scripts can gate on it. `maintain` runs one partition/retention pass
now (the persist service does it every `persist.maintenance_interval_s`).
"""

# ruff: noqa: T201 - a command-line tool: its output is for the user

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import asyncpg

from alpr_persist import migrate
from alpr_persist.service import maintain
from alpr_persist.store import PlateStore, RetriableError, classify, init_connection
from alpr_shared.cli import add_common_options, overrides_from_args
from alpr_shared.lifecycle import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from alpr_shared.logging import configure_logging, redact_url
from alpr_shared.settings import AlprSettings, ConfigError, load_settings

EXIT_PENDING = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr db", description="Database schema of the plate store.")
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("migrate", "apply pending migrations (a no-op when the schema is current)"),
        ("status", "show the schema version, layout and pending migrations (exit 3 if any are pending)"),
        ("maintain", "create partitions ahead and apply retention now (plain-PostgreSQL layout)"),
    ):
        action = sub.add_parser(name, help=text, description=text)
        add_common_options(action)
        action.add_argument("--database-url", help="override database.url")
    return parser


async def _run(action: str, settings: AlprSettings) -> int:  # noqa: PLR0911 - one exit per outcome
    url = settings.database.url
    try:
        conn = await asyncpg.connect(url, timeout=settings.database.command_timeout_s)
    except Exception as exc:  # noqa: BLE001 - reported to the user with the (redacted) URL
        print(f"alpr db: cannot connect to {redact_url(url)}: {classify(exc)}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if action == "migrate":
            result = await migrate.migrate(conn, settings.persist)
            done = ", ".join(result.applied) if result.applied else "nothing to do (schema is current)"
            print(f"layout: {result.layout}\napplied: {done}")
            print(
                f"trigram index: {'present' if result.trigram_index else 'MISSING (pg_trgm not available)'}"
            )
            if result.partitions_created:
                print(f"partitions created: {len(result.partitions_created)}")
            return EXIT_OK
        if action == "status":
            state = await migrate.status(conn)
            print(f"server: PostgreSQL {state.server_version}")
            print(f"schema version: {state.current} (this build: {state.latest})")
            print(f"layout: {state.layout or 'not set up yet'}")
            print(f"pending: {', '.join(state.pending) if state.pending else 'none'}")
            print(
                f"trigram index: {'present' if state.trigram_index else 'missing'} "
                f"(pg_trgm {'available' if state.pg_trgm_available else 'not available'})"
            )
            print(f"timescaledb: {'usable' if state.timescaledb_available else 'not available'}")
            return EXIT_PENDING if state.pending else EXIT_OK
        state = await migrate.status(conn)
        if state.layout != "partitioned":
            print(
                "alpr db maintain: only the partitioned layout needs it (TimescaleDB runs its own policies)"
            )
            return EXIT_OK if state.layout == "timescale" else EXIT_PENDING
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1, init=init_connection)
        try:
            counts = await maintain(pool, settings.persist, PlateStore(pool, settings.persist, "partitioned"))
        finally:
            await pool.close()
        print(
            f"partitions created: {counts['created']}, dropped: {counts['dropped']}, "
            f"rollup rows deleted: {counts['rollup_rows_deleted']}"
        )
        return EXIT_OK  # noqa: TRY300 - the except clauses below report, they do not return success
    except migrate.MigrationError as exc:
        print(f"alpr db {action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - a database error is reported, not dumped as a traceback
        error = classify(exc)
        kind = "database unavailable" if isinstance(error, RetriableError) else "database error"
        print(f"alpr db {action}: {kind}: {error}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await conn.close()


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    overrides = overrides_from_args(args)
    if args.database_url:
        overrides["database"] = {"url": args.database_url}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"alpr db: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    return asyncio.run(_run(args.action, settings))
