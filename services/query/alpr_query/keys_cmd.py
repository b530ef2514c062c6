"""`alpr keys create|list|revoke`: API keys of the query service, from a shell on a host that can reach
the database (`database.url`, or `--database-url`).

`create` prints the key once, on stdout (only its hash is stored: it cannot be shown again); everything
else goes to stderr, so `KEY=$(alpr keys create --scope read)` captures just the key. `list` never shows a
key, only its id and first characters. `revoke` takes the key id (`alpr keys list`); the query service
stops accepting the key within `query.key_cache_s`.
"""

# ruff: noqa: T201 - a command-line tool: its output is for the user

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from alpr_query.db import Database
from alpr_query.keys.repository import SCOPES, ApiKey, KeyRepository
from alpr_shared.cli import add_common_options, overrides_from_args
from alpr_shared.lifecycle import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from alpr_shared.logging import configure_logging, redact_url
from alpr_shared.settings import AlprSettings, ConfigError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr keys", description="API keys of the query service.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key and print it (shown only this once)")
    create.add_argument("--name", default="", help="what the key is for, e.g. 'grafana' or 'ops laptop'")
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        help="read (default), write (watchlist changes; includes read) or admin (keys; includes all); repeatable",
    )
    create.add_argument("--expires-days", type=float, help="the key stops working after this many days")
    listing = sub.add_parser("list", help="list keys (ids, names, scopes, last use; never the keys)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", help="the key id shown by `alpr keys list`")
    for action in (create, listing, revoke):
        add_common_options(action)
        action.add_argument("--database-url", help="override database.url")
    return parser


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "-"


def _table(keys: list[ApiKey]) -> str:
    rows = [("KEY ID", "NAME", "PREFIX", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "REVOKED")]
    rows += [
        (
            k.key_id,
            k.name or "-",
            k.prefix + "…",
            ",".join(k.scopes),
            _when(k.created_at),
            _when(k.expires_at),
            _when(k.last_used_at),
            _when(k.revoked_at),
        )
        for k in keys
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


async def _run(args: argparse.Namespace, settings: AlprSettings) -> int:  # noqa: PLR0911 - one exit per outcome
    url = settings.database.url
    try:
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=1, timeout=settings.database.command_timeout_s
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"alpr keys: cannot connect to {redact_url(url)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        repo = KeyRepository(Database(pool))
        if args.action == "create":
            expires = (
                datetime.now(UTC) + timedelta(days=args.expires_days)
                if args.expires_days is not None
                else None
            )
            key, secret = await repo.create(args.name, args.scope or ["read"], expires)
            print(
                f"created key {key.key_id} ({','.join(key.scopes)}"
                f"{', expires ' + _when(key.expires_at) if key.expires_at else ''}); "
                "it is shown only now — store it safely:",
                file=sys.stderr,
            )
            print(secret)
            return EXIT_OK
        if args.action == "list":
            print(_table(await repo.all(include_revoked=args.all)))
            return EXIT_OK
        revoked = await repo.revoke(args.key_id)
        if revoked is None:
            print(f"alpr keys revoke: no key with id {args.key_id!r} (see `alpr keys list`)", file=sys.stderr)
            return EXIT_FAILED
        print(f"revoked key {revoked.key_id} at {_when(revoked.revoked_at)}")
        return EXIT_OK  # noqa: TRY300 - the except clauses below report, they do not return success
    except asyncpg.UndefinedTableError:
        print("alpr keys: the api_keys table is missing; run `alpr db migrate` first", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"alpr keys {args.action}: database error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await pool.close()


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    overrides = overrides_from_args(args)
    if args.database_url:
        overrides["database"] = {"url": args.database_url}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"alpr keys: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.action == "create" and args.expires_days is not None and args.expires_days <= 0:
        print("alpr keys create: --expires-days must be positive", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    return asyncio.run(_run(args, settings))
