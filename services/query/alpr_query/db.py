"""The database handle every repository shares.

`Database` holds the asyncpg pool once it exists, so the app's route handlers and repositories can be
built before the pool is opened (an app that owns its pool opens it at startup, inside the event loop),
and serves its connections first come, first served (`FairPool`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from alpr_shared.settings import AlprSettings


class FairPool:
    """An asyncpg pool whose callers get a connection in the order they asked for one.

    asyncpg hands out connections through an `asyncio.LifoQueue`; a waiter woken for a released connection
    that a newer caller took first goes back to the *end* of the line (`Queue.get` re-queues it). Under
    load — more requests in flight than connections — some requests then wait many times longer than the
    others: on 1M events at 50 connections that was the p99 of the API. A FIFO semaphore of the pool's
    size in front (`asyncio.Semaphore` lets no newcomer pass a waiter) keeps the order, and the pool's own
    queue never has to wait: a connection is back in it before the semaphore lets the next caller in.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.raw = pool
        self._turn = asyncio.Semaphore(pool.get_max_size())

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[PoolConnectionProxy]:
        async with self._turn, self.raw.acquire() as conn:
            yield conn

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self._turn:
            rows: list[asyncpg.Record] = await self.raw.fetch(query, *args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self._turn:
            row: asyncpg.Record | None = await self.raw.fetchrow(query, *args)
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self._turn:
            return await self.raw.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self._turn:
            status: str = await self.raw.execute(query, *args)
        return status

    def is_closing(self) -> bool:
        return self.raw.is_closing()

    async def close(self) -> None:
        await self.raw.close()


class Database:
    def __init__(self, pool: asyncpg.Pool | None = None) -> None:
        self._pool = None if pool is None else FairPool(pool)

    @property
    def pool(self) -> FairPool:
        if self._pool is None:
            raise RuntimeError("the database pool is not open yet (the app's startup opens it)")
        return self._pool

    def attach(self, pool: asyncpg.Pool) -> None:
        self._pool = FairPool(pool)


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's `reset` on release. asyncpg's default sends `RESET ALL; CLOSE ALL; UNLISTEN *; …` — one
    more round trip per query. The query service never changes session state: settings are set per
    transaction (`set_config(…, true)`), it opens no cursor outside a transaction, never LISTENs and takes no
    advisory lock; and asyncpg still rolls back a transaction left open before calling this."""


# Session settings of every query-API connection (startup parameters, so no reset can undo them).
# plan_cache_mode: asyncpg prepares every statement; PostgreSQL's default re-plans a prepared statement each
# time while a custom plan looks cheaper, and planning over ~90 day partitions costs more than running these
# index look-ups (measured on 1M events: camera listing 3.0-3.7 ms → 1.4 ms, plate look-up 0.53 → 0.35 ms).
# Generic plans still prune partitions at executor start, so time-range filters lose nothing.
SESSION_SETTINGS = {
    "TimeZone": "UTC",
    "plan_cache_mode": "force_generic_plan",
    "application_name": "alpr-query",
}


async def open_pool(settings: AlprSettings, *, size: int | None = None) -> asyncpg.Pool:
    """A connected pool for the query API: `SESSION_SETTINGS`, and each statement bounded by
    `query.statement_timeout_s`."""
    query = settings.query
    max_size = size if size is not None else query.pool_size
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database.url,
        min_size=1,
        max_size=max_size,
        reset=keep_session,
        command_timeout=settings.database.command_timeout_s,
        timeout=settings.database.command_timeout_s,
        server_settings={**SESSION_SETTINGS, "statement_timeout": str(int(query.statement_timeout_s * 1000))},
    )
    return pool
