"""Events service throughput: plate reads → normalise/correct → dedup → SQLite outbox → Kafka, end to end.

One process, one event loop (uvloop), as in `alpr events`: `ReadProcessor.handle()` takes reads in batches
of 500 (the service's READ_BATCH) and commits each batch to the outbox (WAL, synchronous=FULL by default),
while `OutboxDrainer` sends the rows to a real Kafka-protocol broker (noida-db, started for the run) with
the production producer options (acks=all, idempotence, gzip) and deletes them once acknowledged. The
clock stops when the last record is acknowledged. The ZeroMQ hop in front is not included (measured by
bench/transport.py).

Reads: 20 cameras, one vehicle per camera every 2 s of (simulated) time, so each camera's dedup window
(5 min) holds ~150 open events; 30 % of reads need a format-guided correction, 10 % are a second track of
a vehicle already seen (merged, no new event), every read carries alternatives and a ~1 kB JPEG crop.

Baseline (same run, same broker and producer options): the same number of ready-made PlateEvent JSON
records produced straight to the topic in batches of 500 — what the outbox, dedup and correction cost
on top of plain producing.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench/events.py` runs as a script

import uvloop
from aiokafka import AIOKafkaProducer
from tests.harness import KafkaBroker

from alpr_events.builder import BuilderConfig, CameraInfo, EventBuilder
from alpr_events.kafka import DrainerMetrics, OutboxDrainer, producer_options
from alpr_events.outbox import AsyncOutbox
from alpr_events.plates import PlateFormats
from alpr_events.service import READ_BATCH, EventsMetrics, ReadProcessor
from alpr_events.synthetic import make_read, plate_for
from alpr_events.watchlist import Watchlist
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, PlateEvent, PlateRead
from alpr_shared.settings import EventsSettings, KafkaSettings
from bench._common import bench_parser, finish, fmt, machine_line, table

TARGET = 5000.0
CAMERAS = 20
PARTITIONS = 4
S = 1_000_000_000
T0 = 1_700_000_000 * S
SLIPS = {"O": "0", "B": "8", "S": "5", "Z": "2", "G": "6", "I": "1"}


def make_reads(n: int, seed: int = 7) -> list[PlateRead]:
    rng = random.Random(seed)
    reads: list[PlateRead] = []
    recent: dict[str, list[str]] = {}
    for i in range(n):
        camera = f"cam-{i % CAMERAS:02d}"
        t = T0 + (i // CAMERAS) * 2 * S
        seen = recent.setdefault(camera, [])
        if seen and rng.random() < 0.10:
            plate = rng.choice(seen[-20:])  # the same vehicle again on a new track
        else:
            plate = plate_for("LLNNLLL", rng)
            seen.append(plate)
        text = plate
        if rng.random() < 0.30:
            letters = [k for k, ch in enumerate(plate) if ch in SLIPS and k in (0, 1, 4, 5, 6)]
            if letters:
                k = rng.choice(letters)
                text = plate[:k] + SLIPS[plate[k]] + plate[k + 1 :]
        reads.append(
            make_read(camera, i, text, first_seen_ns=t, last_seen_ns=t + S, confidence=0.9, final=True)
        )
    return reads


def cameras(formats: PlateFormats) -> dict[str, CameraInfo]:
    regions = formats.resolve(["gb"])
    return {
        f"cam-{i:02d}": CameraInfo(f"cam-{i:02d}", "site-1", f"Camera {i}", regions) for i in range(CAMERAS)
    }


async def end_to_end(
    kafka: KafkaSettings, reads: list[PlateRead], outbox_path: Path
) -> tuple[float, int, int]:
    """(seconds, events, open events at the end)."""
    events_settings = EventsSettings(outbox_path=outbox_path)
    formats = PlateFormats.load()
    builder = EventBuilder(
        BuilderConfig(dedup_window_s=events_settings.dedup_window_s), formats, cameras(formats), Watchlist()
    )
    metrics = ServiceMetrics("events")
    outbox = await AsyncOutbox.open(
        outbox_path, max_bytes=events_settings.outbox_max_bytes, synchronous="full"
    )
    drainer = OutboxDrainer(outbox, kafka, DrainerMetrics(metrics), batch=events_settings.send_batch)
    processor = ReadProcessor(
        builder, outbox, topic=kafka.topic, alerts_topic=kafka.alerts_topic, metrics=EventsMetrics(metrics)
    )
    stop = asyncio.Event()
    try:
        await drainer._ensure_producer()  # connect before the clock starts, as a running service would be
        task = asyncio.create_task(drainer.run(stop))
        started = time.perf_counter()
        written = 0
        for k in range(0, len(reads), READ_BATCH):
            written += await processor.handle(reads[k : k + READ_BATCH])
        while drainer.delivered < written:
            await asyncio.wait_for(outbox.empty.wait(), 120)
            if drainer.delivered < written:
                await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
    finally:
        await drainer.close()
        await outbox.close()
    return elapsed, written, builder.open_events()


async def produce_only(
    kafka: KafkaSettings, topic: str, values: list[tuple[bytes, bytes]], batch: int
) -> float:
    producer = AIOKafkaProducer(**producer_options(kafka))
    await producer.start()
    try:
        started = time.perf_counter()
        for k in range(0, len(values), batch):
            futures = [await producer.send(topic, v, key=key) for key, v in values[k : k + batch]]
            await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def run(n: int) -> dict[str, float]:
    reads = make_reads(n)
    tmp = Path(tempfile.mkdtemp(prefix="alpr-bench-events-"))
    broker = KafkaBroker(base_dir=tmp)
    try:
        broker.start()
        topic = await broker.create_topic("bench.plates", partitions=PARTITIONS)
        base_topic = await broker.create_topic("bench.baseline", partitions=PARTITIONS)
        kafka = KafkaSettings(bootstrap=broker.bootstrap, topic=topic)
        e2e_s, events, open_events = await end_to_end(kafka, reads, tmp / "outbox.sqlite3")
        # The baseline produces the very records the end-to-end run produced (same sizes, same keys).
        codec: Codec[PlateEvent] = Codec(PlateEvent, wire="json")
        builder = EventBuilder(
            BuilderConfig(), PlateFormats.load(), cameras(PlateFormats.load()), Watchlist()
        )
        values = []
        for read in reads:
            event = builder.process(read, T0).event
            if event is not None:
                values.append((event.camera_id.encode(), codec.encode(event)))
        base_s = await produce_only(kafka, base_topic, values, EventsSettings().send_batch)
    finally:
        broker.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "reads": n,
        "events": events,
        "open_events": open_events,
        "e2e_s": e2e_s,
        "e2e_per_s": events / e2e_s,
        "reads_per_s": n / e2e_s,
        "base_events": len(values),
        "base_s": base_s,
        "base_per_s": len(values) / base_s,
    }


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0] if __doc__ else None)
    args = parser.parse_args()
    n = 20_000 if args.quick else 100_000
    print(machine_line())
    print(
        f"reads: {n} from {CAMERAS} cameras, {PARTITIONS} partitions, outbox synchronous=FULL, acks=all + idempotence + gzip"
    )
    r = uvloop.run(run(n))
    print(
        table(
            ["path", "records", "seconds", "events/s"],
            [
                [
                    "reads → dedup → outbox → broker",
                    str(int(r["events"])),
                    fmt(r["e2e_s"]),
                    fmt(r["e2e_per_s"], 0),
                ],
                [
                    "baseline: produce only",
                    str(int(r["base_events"])),
                    fmt(r["base_s"]),
                    fmt(r["base_per_s"], 0),
                ],
            ],
        )
    )
    ratio = r["e2e_per_s"] / r["base_per_s"]
    print(f"reads/s end to end: {fmt(r['reads_per_s'], 0)}; open events at the end: {int(r['open_events'])}")
    print(f"ratio end-to-end / produce-only: {fmt(ratio)}")
    passed = r["e2e_per_s"] >= TARGET
    return finish(
        "events",
        {
            "events_per_s": fmt(r["e2e_per_s"], 0),
            "baseline_produce_per_s": fmt(r["base_per_s"], 0),
            "ratio": fmt(ratio),
        },
        f">={int(TARGET)}events/s",
        passed,
    )


if __name__ == "__main__":
    sys.exit(main())
