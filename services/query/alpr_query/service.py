"""`alpr query`: the REST API (Litestar) under uvicorn, in the service's own event loop.

Start: open the database pool (retrying with backoff while the database is unreachable or its schema
is missing — `alpr db migrate` creates it — with /health/ready saying why), bind the listen socket
(`query.host`:`query.port`; a port in use is a configuration error, exit 2), then serve. The API
answers its own `/health/*` and `/metrics` on that port too; the runtime's metrics port (9108) serves
the same registry.

SIGTERM/SIGINT (`ctx.stopping`): uvicorn stops accepting connections, lets requests in flight finish
(up to `services.query.shutdown_timeout_s` less a second), runs the app's shutdown (the watchlist retry
loop ends, the Kafka producer closes), and the pool is closed last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import Iterator

import asyncpg
import uvicorn

from alpr_query.app import create_app
from alpr_query.db import open_pool
from alpr_shared.lifecycle import ServiceContext
from alpr_shared.logging import get_logger, redact_url
from alpr_shared.settings import AlprSettings, ConfigError

log = get_logger("alpr.query")

CONNECT_BACKOFF_FIRST_S = 0.5
CONNECT_BACKOFF_MAX_S = 10.0
# Container allocations between two young-generation collections (CPython's default: 700). A request
# allocates a few thousand (rows, structs, Litestar's per-request objects) and keeps none: at 700 the
# collector ran ~20 times a second and promoted in-flight objects into the older generations, whose
# collections are the long ones. Measured on 1M events at 50 connections (with `settle_gc`): p99 62 → 42 ms.
GC_YOUNG_THRESHOLD = 10_000


def settle_gc() -> None:
    """Once the app has started: collect, then move everything alive into the permanent generation
    (`gc.freeze`), and collect the young generation less often (GC_YOUNG_THRESHOLD).

    A full collection walks every tracked object — ~90,000 once Litestar, pydantic and the OpenAPI schema
    are loaded — and stalled the event loop 50-160 ms each time, every request in flight with it (the p99.9
    of the API). Frozen objects are never walked again; they are the app itself and live as long as the
    process. Process-wide: call it from the process's owner (`_serve`), not at import."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service runtime owns the signals (`ctx.stopping`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen_socket(host: str, port: int) -> socket.socket:
    """The bound listening socket (port 0: any free port); a clear ConfigError when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"query: cannot listen on {host}:{port}: {exc.strerror} (is the port in use? set query.port)"
        ) from exc
    sock.setblocking(False)
    return sock


async def _schema_ready(pool: asyncpg.Pool) -> str | None:
    """None when the plate store's tables exist; else what is missing."""
    missing = await pool.fetchval(
        """SELECT string_agg(t, ', ') FROM unnest(ARRAY['plate_events', 'api_keys', 'watchlist_entries',
                  'cameras', 'plate_events_hourly']) AS t
           WHERE to_regclass(t) IS NULL"""
    )
    if missing:
        return f"tables missing: {missing} (run `alpr db migrate`)"
    if not await pool.fetchval("SELECT to_regprocedure('alpr_similarity(text,text)') IS NOT NULL"):
        return "schema older than this build (run `alpr db migrate`)"
    return None


async def connect(ctx: ServiceContext, settings: AlprSettings) -> asyncpg.Pool | None:
    """A pool on a database whose schema is in place; waits (with backoff) until then or until stopping."""
    delay = CONNECT_BACKOFF_FIRST_S
    logged = ""
    while not ctx.stopping.is_set():
        problem: str
        pool: asyncpg.Pool | None = None
        try:
            pool = await open_pool(settings)
            missing = await _schema_ready(pool)
            if missing is None:
                return pool
            problem = missing
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            problem = f"database unreachable: {type(exc).__name__}: {exc}"
        if pool is not None:
            await pool.close()
        ctx.health.set_not_ready("database", problem)
        if problem != logged:
            log.warning("database_not_ready", url=redact_url(settings.database.url), problem=problem)
            logged = problem
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.stopping.wait(), delay)
        delay = min(delay * 2, CONNECT_BACKOFF_MAX_S)
    return None


async def service_main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    query = settings.query
    sock = listen_socket(query.host, query.port)
    try:
        pool = await connect(ctx, settings)
        if pool is None:
            return
        try:
            await _serve(ctx, settings, pool, sock)
        finally:
            await pool.close()
    finally:
        sock.close()


async def _serve(
    ctx: ServiceContext, settings: AlprSettings, pool: asyncpg.Pool, sock: socket.socket
) -> None:
    app = create_app(settings, pool=pool, metrics=ctx.metrics)
    own = settings.services.query
    config = uvicorn.Config(
        app,
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, int(own.shutdown_timeout_s) - 1),
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="query-http")
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers no "started" event
        await asyncio.sleep(0.02)  # uvicorn runs the app's startup (fuzzy mode, retry loop) first
    if not server.started:
        await serving  # raises what stopped it, if anything
        raise RuntimeError("the HTTP server did not start (the app's startup failed; see the log above)")
    settle_gc()
    host, port = sock.getsockname()[:2]
    ctx.health.set_ready("database")
    ctx.health.set_ready()
    log.info("query_listening", url=f"http://{host}:{port}", docs=f"http://{host}:{port}/docs")
    stop_wait = asyncio.create_task(ctx.stopping.wait())
    try:
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
    if not serving.done():
        log.info("query_draining")
        server.should_exit = True
    await serving
