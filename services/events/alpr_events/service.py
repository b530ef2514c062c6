"""Events: the last edge stage and the only one that talks to Kafka.

Owns: the `plate_reads` PULL socket (connects to the OCR coordinator's PUSH), the event builder's state,
the SQLite outbox, the Kafka producer (through `OutboxDrainer`), the watchlist follower (topic consumer
or database poller) and the webhook senders. Each is opened in `service_main` and closed by its
`AsyncExitStack`.

Flow: reads arrive in batches (one `recv` plus whatever is already queued); `ReadProcessor` turns each
into at most one event revision and its alerts (`EventBuilder`, pure), then writes the records and the
builder's state to the outbox in one transaction. Only then is the next batch taken, so a slow disk
pushes back on the coordinator instead of growing memory. The drainer sends outbox rows to Kafka in
order and deletes them once acknowledged. Nothing here waits for the broker: during an outage events
accumulate on disk (bounded) and drain in order when it returns.

With `events.delivery: local` (what `alpr run` uses without a broker) there is no producer and no
watchlist consumer: the records stay in the outbox and a persist on this host takes them from there
(`persist.source: outbox`), deleting each only after the database committed it. Runtime watchlist
changes then come from the database instead (`events.watchlist_source: database`, `watchlist_db.py`).

Never: publish an event that is not in the outbox first, log a credential, or crash on a bad read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import msgspec

from alpr_events.builder import BuilderConfig, CameraInfo, EventBuilder, OpenEventState, Outcome
from alpr_events.kafka import DrainerMetrics, OutboxDrainer, WatchlistFollower, describe
from alpr_events.outbox import AsyncOutbox, OutboxError, Record
from alpr_events.plates import FormatsError, PlateFormats
from alpr_events.watchlist import Watchlist, entry_from_settings
from alpr_events.watchlist_db import WatchlistPoller
from alpr_events.webhook import Webhooks
from alpr_shared.lifecycle import ServiceContext
from alpr_shared.logging import get_logger, redact_url
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, PlateEvent, PlateRead, WatchlistAlert
from alpr_shared.settings import AlprSettings, ConfigError, EventsSettings
from alpr_shared.transport import MessageSocket

log = get_logger(__name__)

# Reads taken from the socket per outbox transaction: large enough to amortise the commit (fsync),
# small enough that one transaction stays in the low milliseconds.
READ_BATCH = 500
# On SIGTERM, how long the drainer may keep sending what is queued before the service exits (the
# outbox keeps the rest for the next start).
FLUSH_ON_STOP_S = 5.0


class _OncePerInterval(logging.Filter):
    """Lets each distinct message of a library logger through once per interval. aiokafka logs every
    reconnect attempt (thousands of lines in a 30 s outage); our own `kafka_unavailable` line and the
    `alpr_events_kafka_errors_total` counter already tell the story."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -self.interval_s) < self.interval_s:
            return False
        self._last[key] = now
        if len(self._last) > 1000:
            self._last.clear()
        return True


def builder_config(events: EventsSettings) -> BuilderConfig:
    return BuilderConfig(
        dedup_window_s=events.dedup_window_s,
        dedup_scope=events.dedup_scope,
        dedup_max_distance=events.dedup_max_distance,
        revision_min_gain=events.revision_min_gain,
        min_confidence=events.min_confidence,
        correction_max_changes=events.correction_max_changes,
        confusable_weight=events.confusable_weight,
        correction_min_ratio=events.correction_min_ratio,
        min_plate_length=events.min_plate_length,
        plate_jpeg_max_bytes=events.plate_jpeg_max_bytes,
        vehicle_jpeg_max_bytes=events.vehicle_jpeg_max_bytes,
    )


def camera_infos(settings: AlprSettings, formats: PlateFormats) -> dict[str, CameraInfo]:
    """Per-camera metadata for events; raises `ConfigError` naming a bad region or camera id."""
    known = {c.id for c in settings.cameras}
    stray = sorted(set(settings.events.cameras) - known)
    if stray:
        raise ConfigError(f"events.cameras names cameras that are not in cameras: {stray}")
    out: dict[str, CameraInfo] = {}
    for camera in settings.cameras:
        extra = settings.events.cameras.get(camera.id)
        try:
            regions = formats.resolve(camera.regions or settings.events.default_regions)
        except FormatsError as exc:
            raise ConfigError(f"cameras.{camera.id}.regions: {exc}") from exc
        out[camera.id] = CameraInfo(
            camera_id=camera.id,
            site_id=camera.site_id,
            name=camera.name,
            regions=regions,
            latitude=extra.latitude if extra else None,
            longitude=extra.longitude if extra else None,
            direction=extra.direction if extra else None,
        )
    return out


class EventsMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.reads = metrics.counter("reads_total", "Plate reads accepted", ["camera"])
        self.dropped = metrics.counter("reads_dropped_total", "Plate reads refused", ["reason"])
        self.events = metrics.counter(
            "events_total", "Event revisions written to the outbox", ["camera", "kind"]
        )
        self.corrections = metrics.counter(
            "corrections_total", "Reads made format-valid by format-guided correction", ["camera"]
        )
        self.merges = metrics.counter(
            "merges_total", "Reads of a new track merged into an open event", ["camera"]
        )
        self.alerts = metrics.counter("alerts_total", "Watchlist alerts raised", ["camera"])
        self.crops = metrics.counter(
            "crops_total", "Crops that had to be re-encoded or were left out", ["what"]
        )
        self.outbox_dropped = metrics.counter(
            "outbox_dropped_total", "Records deleted unsent because the outbox reached its size bound"
        )
        self.open_events = metrics.gauge("open_events_count", "Events inside the dedup window")
        self.watchlist = metrics.gauge("watchlist_entries_count", "Watchlist entries in force")
        self.batch_seconds = metrics.histogram(
            "batch_seconds", "Time to process a batch of reads, outbox included"
        )


class ReadProcessor:
    """Reads → events and alerts → one outbox transaction. Shared by the service and the benchmark."""

    def __init__(
        self,
        builder: EventBuilder,
        outbox: AsyncOutbox,
        *,
        topic: str,
        alerts_topic: str,
        metrics: EventsMetrics,
        webhooks: Webhooks | None = None,
    ) -> None:
        self.builder = builder
        self.outbox = outbox
        self.topic = topic
        self.alerts_topic = alerts_topic
        self.metrics = metrics
        self.webhooks = webhooks
        self._event_codec: Codec[PlateEvent] = Codec(PlateEvent, wire="json")
        self._alert_codec: Codec[WatchlistAlert] = Codec(WatchlistAlert, wire="json")
        self._state_encoder = msgspec.msgpack.Encoder()

    async def handle(self, reads: Iterable[PlateRead]) -> int:
        """Process reads; returns the number of event revisions written."""
        started = time.perf_counter()
        batch = _Batch(now_ns=time.time_ns())
        for read in reads:
            outcome = self.builder.process(read, batch.now_ns)
            if outcome.dropped is not None:
                self.metrics.dropped.labels(outcome.dropped).inc()
                continue
            self._count(read, outcome)
            self._collect(batch, outcome)
        if batch.records or batch.states or batch.forget:
            result = await self.outbox.write(batch.records, list(batch.states.values()), batch.forget)
            if result.dropped:
                self.metrics.outbox_dropped.inc(result.dropped)
                log.error(
                    "outbox_full_dropped_oldest",
                    dropped=result.dropped,
                    dropped_bytes=result.dropped_bytes,
                    max_bytes=self.outbox.sync.max_bytes,
                    queued=result.queued,
                    hint="the broker has been unreachable for long; raise events.outbox_max_bytes or fix the link",
                )
        if self.webhooks is not None:
            for alert in batch.alerts:
                self.webhooks.offer(alert)
        self.metrics.open_events.set(self.builder.open_events())
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return batch.events

    def _count(self, read: PlateRead, outcome: Outcome) -> None:
        self.metrics.reads.labels(read.camera_id).inc()
        for what in outcome.crops:
            self.metrics.crops.labels(what).inc()
        if outcome.corrected:
            self.metrics.corrections.labels(read.camera_id).inc()
        if outcome.merged:
            self.metrics.merges.labels(read.camera_id).inc()

    def _collect(self, batch: _Batch, outcome: Outcome) -> None:
        for event_id in outcome.evicted:
            batch.states.pop(event_id, None)
            batch.forget.append(event_id)
        event = outcome.event
        if event is not None:
            batch.records.append(
                Record(
                    topic=self.topic,
                    key=event.camera_id.encode(),
                    value=self._event_codec.encode(event),
                    record_id=f"{event.event_id}:{event.revision}",
                    created_ns=batch.now_ns,
                )
            )
            kind = "new" if event.revision == 1 else "revision"
            self.metrics.events.labels(event.camera_id, kind).inc()
            batch.events += 1
        for alert in outcome.alerts:
            batch.records.append(
                Record(
                    topic=self.alerts_topic,
                    key=alert.event_id.encode(),
                    value=self._alert_codec.encode(alert),
                    record_id=alert.alert_id,
                    created_ns=batch.now_ns,
                )
            )
            self.metrics.alerts.labels(alert.camera_id).inc()
            batch.alerts.append(alert)
        state = outcome.state
        if state is not None:
            ev = state.event
            batch.states[ev.event_id] = (ev.event_id, ev.last_seen_ns, self._state_encoder.encode(state))


@dataclass
class _Batch:
    now_ns: int
    records: list[Record] = field(default_factory=list)
    # event id → the latest state of that event in this batch (one row per event per transaction).
    states: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)
    forget: list[str] = field(default_factory=list)
    alerts: list[WatchlistAlert] = field(default_factory=list)
    events: int = 0


def decode_states(blobs: Iterable[bytes]) -> list[OpenEventState]:
    decoder = msgspec.msgpack.Decoder(OpenEventState)
    out: list[OpenEventState] = []
    for blob in blobs:
        try:
            out.append(decoder.decode(blob))
        except msgspec.DecodeError as exc:
            log.warning("open_event_state_unreadable", error=str(exc)[:200])
    return out


async def service_main(ctx: ServiceContext) -> None:
    settings = ctx.settings
    events = settings.events
    if not settings.cameras:
        raise ConfigError("no cameras configured: events needs `cameras:` to know sites and regions")
    try:
        formats = PlateFormats.load(events.formats_file)
    except FormatsError as exc:
        raise ConfigError(str(exc)) from exc
    cameras = camera_infos(settings, formats)
    watchlist = Watchlist(entry_from_settings(e) for e in events.watchlist)
    builder = EventBuilder(builder_config(events), formats, cameras, watchlist)
    metrics = EventsMetrics(ctx.metrics)
    metrics.watchlist.set(len(watchlist))
    local = _log_delivery(settings)

    async def reload(new: AlprSettings) -> None:
        try:
            builder.cameras = camera_infos(new, formats)
        except ConfigError as exc:
            log.error("reload_cameras_rejected", error=str(exc))  # noqa: TRY400 - the message says it all
        watchlist.set_configured(entry_from_settings(e) for e in new.events.watchlist)
        metrics.watchlist.set(len(watchlist))

    ctx.on_reload(reload)
    library_filter = _OncePerInterval()
    logging.getLogger("aiokafka").addFilter(library_filter)
    async with AsyncExitStack() as stack:
        stack.callback(logging.getLogger("aiokafka").removeFilter, library_filter)
        outbox = await _open_outbox(events, builder, stack)
        drainer = OutboxDrainer(outbox, settings.kafka, DrainerMetrics(ctx.metrics), batch=events.send_batch)
        stack.push_async_callback(drainer.close)
        webhooks = Webhooks(events.webhooks, ctx.metrics)
        processor = ReadProcessor(
            builder,
            outbox,
            topic=settings.kafka.topic,
            alerts_topic=settings.kafka.alerts_topic,
            metrics=metrics,
            webhooks=webhooks,
        )
        sock = ctx.socket("plate_reads", "pull", "connect", PlateRead)
        stack.callback(sock.close)

        drain_stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if not local:
            tasks.append(asyncio.create_task(drainer.run(drain_stop), name="events-drainer"))
        tasks += [
            asyncio.create_task(s.run(ctx.stopping), name=f"events-webhook-{s.index}")
            for s in webhooks.senders
        ]
        follower = _watchlist_follower(
            settings, watchlist, ctx.metrics, lambda: metrics.watchlist.set(len(watchlist)), local=local
        )
        if follower is not None:
            tasks.append(asyncio.create_task(follower.run(ctx.stopping), name="events-watchlist"))
        stack.push_async_callback(_cancel, tasks)
        ctx.health.set_ready()
        log.info(
            "events_ready", cameras=len(cameras), watchlist=len(watchlist), webhooks=len(webhooks.senders)
        )

        await _receive(ctx, sock, processor, tasks)
        if not local:
            await _flush(outbox, drain_stop, tasks[0])
        log.info("events_stopped", queued=outbox.sync.count, delivered=drainer.delivered)


def _watchlist_follower(
    settings: AlprSettings,
    watchlist: Watchlist,
    metrics: ServiceMetrics,
    on_change: Callable[[], None],
    *,
    local: bool,
) -> WatchlistFollower | WatchlistPoller | None:
    """What keeps the watchlist current at run time (`events.watchlist_source`); None: the config only."""
    source = settings.events.watchlist_source
    if source == "database":
        log.info(
            "watchlist_source",
            source=source,
            url=redact_url(settings.database.url),
            poll_s=settings.events.watchlist_poll_s,
        )
        return WatchlistPoller(
            settings.database.url,
            watchlist,
            metrics,
            on_change,
            poll_s=settings.events.watchlist_poll_s,
            command_timeout_s=settings.database.command_timeout_s,
        )
    if source == "kafka" and not local:
        log.info("watchlist_source", source=source, topic=settings.kafka.watchlist_topic)
        return WatchlistFollower(settings.kafka, watchlist, metrics, on_change=on_change)
    reason = "events.delivery is local: no broker" if source == "kafka" else "events.watchlist_source is none"
    log.info("watchlist_source", source="none", reason=reason)
    return None


def _log_delivery(settings: AlprSettings) -> bool:
    """Say where records go; True for local delivery (no broker: persist reads the outbox itself)."""
    if settings.events.delivery == "local":
        log.info("local_delivery", outbox=str(settings.events.outbox_path), reason="persist reads the outbox")
        return True
    log.info("kafka_producer_settings", topic=settings.kafka.topic, **describe(settings.kafka))
    return False


async def _flush(outbox: AsyncOutbox, drain_stop: asyncio.Event, drain_task: asyncio.Task[None]) -> None:
    """Graceful stop: give the drainer a moment to send what is queued; the outbox keeps the rest."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(outbox.empty.wait(), FLUSH_ON_STOP_S)
    drain_stop.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(drain_task), FLUSH_ON_STOP_S)


async def _open_outbox(events: EventsSettings, builder: EventBuilder, stack: AsyncExitStack) -> AsyncOutbox:
    try:
        outbox = await AsyncOutbox.open(
            events.outbox_path,
            max_bytes=events.outbox_max_bytes,
            synchronous=events.outbox_synchronous,
            shared=events.delivery == "local",
        )
    except OutboxError as exc:
        raise ConfigError(f"{exc}; set events.outbox_path to a writable, persistent location") from exc
    stack.push_async_callback(outbox.close)
    states = decode_states(await outbox.load_states())
    builder.restore(states)
    log.info(
        "outbox_opened",
        path=str(events.outbox_path),
        queued=outbox.sync.count,
        queued_bytes=outbox.sync.bytes,
        open_events=len(states),
    )
    return outbox


async def _receive(
    ctx: ServiceContext,
    sock: MessageSocket[PlateRead],
    processor: ReadProcessor,
    tasks: list[asyncio.Task[None]],
) -> None:
    """Take reads until `stopping`; then what already reached the socket. A failed helper task ends it."""
    while not ctx.stopping.is_set():
        failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception()), None)
        if failed is not None:
            raise RuntimeError(f"{failed.get_name()} failed") from failed.exception()
        try:
            first = await sock.recv(timeout=0.5)
        except TimeoutError:
            continue
        await processor.handle([first, *sock.drain(READ_BATCH - 1)])
    while batch := sock.drain(READ_BATCH):
        await processor.handle(batch)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
