"""Persist: plate events from Kafka into PostgreSQL (or TimescaleDB), exactly once in effect.

Owns: the asyncpg pool (`database:`), the consumer-group member and the dead-letter producer (through
`PersistConsumer`), and the maintenance task (partitions ahead, retention). Several instances with the
same `persist.group_id` share the topic's partitions; each event is stored once because the upsert is
keyed by event id and keeps only newer revisions.

Start-up: connect to the database (retrying while it is down), apply pending migrations when
`persist.migrate_on_start` (under an advisory lock), then consume. Ready once both sides are up; not ready
while the database is failing. SIGTERM: the batch in flight is finished and committed, then it returns.

Source: Kafka by default; `persist.source: outbox` takes the records from the events outbox on this host
instead (`outbox_source.py`; what `alpr run` does without a broker), through the same writer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg

from alpr_persist import migrate, partitions
from alpr_persist.consumer import Backoff, BatchWriter, PersistConsumer, Stopped, _sleep_unless
from alpr_persist.migrate import Layout, MigrationError
from alpr_persist.outbox_source import OutboxSource
from alpr_persist.store import PlateStore, RetriableError, classify, init_connection
from alpr_shared.lifecycle import ServiceContext
from alpr_shared.logging import get_logger, redact_url
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.settings import AlprSettings, ConfigError, PersistSettings

log = get_logger(__name__)

# pg_try_advisory_lock key of the maintenance pass ("alpr-mnt"): one instance does it at a time.
MAINTENANCE_LOCK_KEY = 0x616C_7072_2D6D_6E74


async def open_pool(settings: AlprSettings, stopping: asyncio.Event, metrics: ServiceMetrics) -> asyncpg.Pool:
    """The pool, once the database answers; retried with backoff (a database still starting is normal)."""
    db = settings.database
    backoff = Backoff(settings.persist.retry_initial_s, settings.persist.retry_max_s)
    while True:
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                db.url,
                min_size=db.pool_min,
                max_size=db.pool_max,
                command_timeout=db.command_timeout_s,
                init=init_connection,
            )
        except Exception as exc:  # sorted below: only connection problems are retried
            error = classify(exc)
            if not isinstance(error, RetriableError):
                raise
            metrics.health.set_not_ready("database", f"cannot connect: {error}")
            log.warning("database_connect_failed", url=redact_url(db.url), error=str(error), retrying=True)
            await _sleep_unless(stopping, backoff.next())
        else:
            return pool


async def prepare_schema(pool: asyncpg.Pool, settings: PersistSettings) -> Layout:
    """Migrate (if configured) and return the layout; a database behind this build is a config error."""
    async with pool.acquire() as conn:
        if settings.migrate_on_start:
            result = await migrate.migrate(conn, settings)
            if result.applied:
                log.info("migrations_applied", applied=result.applied, layout=result.layout)
            if not result.trigram_index:
                log.warning("trigram_index_missing", reason="pg_trgm is not available on this server")
            return result.layout
        state = await migrate.status(conn)
        if state.pending or state.layout is None:
            raise ConfigError(
                f"the database schema is behind this build (pending: {', '.join(state.pending)}); "
                "run `alpr db migrate` or set persist.migrate_on_start: true"
            )
        return state.layout


async def maintain(pool: asyncpg.Pool, settings: PersistSettings, store: PlateStore) -> dict[str, int]:
    """One maintenance pass (plain path): partitions ahead, old partitions and rollup rows dropped."""
    today = partitions.today_utc()
    done = {"created": 0, "dropped": 0, "rollup_rows_deleted": 0}
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_KEY):
            return done  # another instance is doing it
        try:
            ahead = [today + timedelta(days=d) for d in range(settings.partition_lead_days + 1)]
            for table, days in (
                ("plate_events", settings.retention_days),
                ("plate_event_images", settings.image_retention_days),
            ):
                done["created"] += len(await partitions.ensure_partitions(conn, table, ahead))
                cutoff = partitions.retention_cutoff(today, days)
                dropped = await partitions.drop_partitions_before(conn, table, cutoff)
                done["dropped"] += len(dropped)
                if dropped:
                    log.info(
                        "partitions_dropped", table=table, partitions=dropped, keep_from=cutoff.isoformat()
                    )
            rollup_cutoff = partitions.retention_cutoff(today, settings.rollup_retention_days)
            status = await conn.execute(
                "DELETE FROM plate_events_hourly WHERE bucket < $1::date::timestamptz", rollup_cutoff
            )
            done["rollup_rows_deleted"] = int(status.split()[-1])
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_KEY)
    if done["dropped"]:
        store.forget_partitions()
    return done


async def _maintenance_loop(
    pool: asyncpg.Pool,
    settings: PersistSettings,
    store: PlateStore,
    stopping: asyncio.Event,
    metrics: ServiceMetrics,
) -> None:
    created = metrics.counter("partitions_created_total", "Day partitions created ahead by maintenance")
    dropped = metrics.counter("partitions_dropped_total", "Day partitions dropped by retention")
    failures = metrics.counter(
        "maintenance_failures_total", "Maintenance passes that failed (retried next time)"
    )
    while not stopping.is_set():
        try:
            done = await maintain(pool, settings, store)
            created.inc(done["created"])
            dropped.inc(done["dropped"])
        except Exception as exc:  # noqa: BLE001 - counted, logged, retried on the next pass
            failures.inc()
            log.warning("maintenance_failed", error=str(classify(exc)))
        try:
            await _sleep_unless(stopping, settings.maintenance_interval_s)
        except Stopped:
            return


@contextlib.asynccontextmanager
async def _background(coro_task: asyncio.Task[None]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        coro_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await coro_task


async def service_main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    ps = settings.persist
    ctx.health.set_not_ready("database", "connecting")
    if ps.source == "kafka":
        ctx.health.set_not_ready("kafka", "connecting")
    ctx.health.set_ready()
    try:
        pool = await open_pool(settings, ctx.stopping, ctx.metrics)
    except Stopped:
        return
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pool.close)
        try:
            layout = await prepare_schema(pool, ps)
        except MigrationError as exc:
            raise ConfigError(str(exc)) from exc
        ctx.health.set_ready("database")
        log.info("database_ready", url=redact_url(settings.database.url), layout=layout)
        store = PlateStore(pool, ps, layout)
        if layout == "partitioned":
            task = asyncio.create_task(
                _maintenance_loop(pool, ps, store, ctx.stopping, ctx.metrics), name="persist-maintenance"
            )
            await stack.enter_async_context(_background(task))
        writer = BatchWriter(store, ps, ctx.metrics, ctx.stopping)
        if ps.source == "outbox":
            source = OutboxSource(
                ps.outbox_path or settings.events.outbox_path,
                topic=settings.kafka.topic,
                settings=ps,
                writer=writer,
                metrics=ctx.metrics,
                stopping=ctx.stopping,
            )
            await source.run()
            return
        consumer = PersistConsumer(settings.kafka, ps, writer, ctx.metrics, ctx.stopping)
        try:
            await consumer.run()
        except Stopped:
            log.info("stopped_before_kafka_was_reachable")
