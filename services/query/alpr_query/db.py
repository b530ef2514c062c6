"""The database handle every repository shares.

`Database` holds the asyncpg pool once it exists, so the app's route handlers and repositories can be
built before the pool is opened (an app that owns its pool opens it at startup, inside the event loop).
"""

from __future__ import annotations

import asyncpg

from alpr_shared.settings import AlprSettings


class Database:
    def __init__(self, pool: asyncpg.Pool | None = None) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database pool is not open yet (the app's startup opens it)")
        return self._pool

    def attach(self, pool: asyncpg.Pool) -> None:
        self._pool = pool


async def init_connection(conn: asyncpg.Connection) -> None:
    """Every pooled connection compares and prints times in UTC, whatever the server's default zone."""
    await conn.execute("SET TIME ZONE 'UTC'")


async def open_pool(settings: AlprSettings, *, size: int | None = None) -> asyncpg.Pool:
    """A connected pool for the query API, each statement bounded by `query.statement_timeout_s`."""
    query = settings.query
    max_size = size if size is not None else query.pool_size
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database.url,
        min_size=1,
        max_size=max_size,
        init=init_connection,
        command_timeout=settings.database.command_timeout_s,
        timeout=settings.database.command_timeout_s,
        server_settings={
            "statement_timeout": str(int(query.statement_timeout_s * 1000)),
            "application_name": "alpr-query",
        },
    )
    return pool
