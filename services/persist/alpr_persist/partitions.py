"""Day partitions of the plain-PostgreSQL path: created ahead, dropped by retention.

Owns the partition DDL of `plate_events` and `plate_event_images` (one partition per UTC day, named
`<table>_pYYYYMMDD`) and the rollup's retention. Creation and dropping run under a transaction-level
advisory lock, so several persist instances (and `alpr db migrate`) never race on the same DDL. Only
partitions that follow the naming scheme are ever dropped; anything else attached by hand is left alone.

Never used on the TimescaleDB path, where chunks and the retention policy do this job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A plain connection or one borrowed from a pool: the code here works on either.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

PARTITIONED_TABLES = ("plate_events", "plate_event_images")
# pg_advisory_xact_lock key of partition DDL ("alpr-prt").
PARTITION_LOCK_KEY = 0x616C_7072_2D70_7274
_NAME_RE = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _bound(day: date) -> str:
    return f"{day.isoformat()} 00:00:00+00"


def today_utc() -> date:
    return datetime.now(UTC).date()


async def existing_days(conn: Conn, table: str) -> set[date]:
    """The days that have a partition of `table` (named by our scheme)."""
    rows = await conn.fetch(
        """
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = $1::regclass
        """,
        table,
    )
    days: set[date] = set()
    for row in rows:
        match = _NAME_RE.match(row["relname"])
        if match and match["table"] == table:
            days.add(datetime.strptime(match["day"], "%Y%m%d").replace(tzinfo=UTC).date())
    return days


async def ensure_partitions(conn: Conn, table: str, days: Iterable[date]) -> list[str]:
    """Create the missing day partitions of `table`; returns the names created. Runs its own transaction."""
    wanted = sorted(set(days))
    if not wanted:
        return []
    created: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
        have = await existing_days(conn, table)
        for day in wanted:
            if day in have:
                continue
            name = partition_name(table, day)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} "
                f"FOR VALUES FROM ('{_bound(day)}') TO ('{_bound(day + timedelta(days=1))}')"
            )
            created.append(name)
    return created


async def drop_partitions_before(conn: Conn, table: str, cutoff: date) -> list[str]:
    """Drop every day partition of `table` that ends on or before `cutoff` (its day < cutoff)."""
    dropped: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
        for day in sorted(await existing_days(conn, table)):
            if day >= cutoff:
                continue
            name = partition_name(table, day)
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
    return dropped


def retention_cutoff(today: date, days: int) -> date:
    """The first day kept by a retention of `days` days (today counts as one of them)."""
    return today - timedelta(days=days - 1)
