"""Benchmark of `alpr persist`: plate events from the broker to committed rows, against the raw COPY rate.

What it does, on servers it starts itself (PostgreSQL 15 with fsync off, noida-db; both from
tests/harness):
1. produces N synthetic `PlateEvent`s (JSON, key = camera id, 4 partitions, about 1 in 10 re-sent as a
   second revision) — not timed;
2. baseline, same run: the same rows (as persist builds them for its direct COPY) written with
   asyncpg's raw `copy_records_to_table` straight into the same `plate_events` table, in batches of the
   same size; then the table is emptied;
3. starts `python -m alpr_persist` (its own process, default settings apart from the servers) and times
   from its first stored row to the moment every event is stored, then checks that the committed offsets
   cover the whole topic, and reads the process's peak RSS (VmHWM from /proc) before stopping it.

Targets (issue 10): ≥ 20,000 events/s, ≥ 40 % of the raw COPY rate, persist peak RSS ≤ 256 MB.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench/persist.py` runs as a script

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tests.harness import KafkaBroker, PostgresServer, free_port

from alpr_persist import migrate
from alpr_persist.rows import TABLE_COLUMNS, table_row
from alpr_persist.store import init_connection
from alpr_persist.synthetic import make_event
from alpr_shared.schemas import Codec, PlateEvent
from alpr_shared.settings import PersistSettings
from bench._common import ROOT, bench_parser, finish, fmt, machine_line, table

TARGET_RATE = 20_000.0
TARGET_RATIO = 0.40
TARGET_RSS_MB = 256.0
PARTITIONS = 4
BATCH = 5_000  # persist's default batch_size; the baseline copies in batches of the same size
CODEC: Codec[PlateEvent] = Codec(PlateEvent, wire="json")


def make_events(n: int) -> list[PlateEvent]:
    now = time.time_ns()
    events = [make_event(i, cameras=16, now_ns=now, spread_s=6 * 3600) for i in range(n)]
    # About one event in ten gets a second revision later in the stream, as the events service sends them.
    revised = [msgspec.structs.replace(e, revision=2, confidence=0.99) for e in events[:: max(1, 10)]]
    return events + revised


async def produce(bootstrap: str, topic: str, events: list[PlateEvent]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        compression_type="gzip",
        linger_ms=20,
        max_batch_size=1 << 20,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [
            await producer.send(topic, key=e.camera_id.encode(), value=CODEC.encode(e)) for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def baseline(dsn: str, events: list[PlateEvent]) -> float:
    """Rows per second of raw COPY into plate_events (the newest revision of each event, as stored).

    The rows are built before the timing, in the cheapest form asyncpg encodes: persist's own
    `table_row` with times as `pg_time` tuples on a connection set up by `init_connection` (its
    timestamptz codec). With datetime objects on a default connection the client's encoding cost ~9 ms
    more per 5 000 rows, a slower baseline; the faster one is the fair one."""
    newest: dict[str, PlateEvent] = {}
    for e in events:
        if e.event_id not in newest or newest[e.event_id].revision < e.revision:
            newest[e.event_id] = e
    rows = [table_row(e, keep_images=False) for e in newest.values()]
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "plate_events", records=rows[start : start + BATCH], columns=TABLE_COLUMNS
                )
        elapsed = time.perf_counter() - started
        await conn.execute("TRUNCATE plate_events, plate_event_images, plate_events_hourly, cameras")
    finally:
        await conn.close()
    return len(rows) / elapsed


def inserted_so_far(port: int) -> int:
    """alpr_persist_events_total{outcome="inserted"} from persist's /metrics (0 while it is starting)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith('alpr_persist_events_total{outcome="inserted"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def committed_total(bootstrap: str, topic: str, group: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)])
    finally:
        await consumer.stop()


async def run_persist(
    bootstrap: str, topic: str, dsn: str, *, unique: int, records: int, workdir: Path
) -> tuple[float, float, int]:
    """(events/s from first stored row to all stored, peak RSS MB, rows at the first sample)."""
    group = "bench-persist"
    env = {
        **os.environ,
        "ALPR_KAFKA__BOOTSTRAP": bootstrap,
        "ALPR_KAFKA__TOPIC": topic,
        "ALPR_DATABASE__URL": dsn,
        "ALPR_PERSIST__GROUP_ID": group,
        "ALPR_LOG__FORMAT": "json",
        "ALPR_LOG__LEVEL": os.environ.get("BENCH_PERSIST_LOG_LEVEL", "info"),
    }
    log_path = workdir / "persist.log"
    port = free_port("127.0.0.1")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the timed part
            [sys.executable, "-m", "alpr_persist", "--metrics-port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 300
        t0 = first = None
        rows = 0
        # Progress from persist's own counter (a cheap HTTP scrape): polling count(*) on the growing table
        # would take database CPU away from the process being measured. Every 0.1 s: at 20 scrapes/s the
        # rendering of /metrics took ~7 % of persist's CPU (py-spy); a coarser end time only lowers the rate.
        while rows < unique:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"persist did not store every event; log:\n{log_path.read_text()[-3000:]}")
            rows = await asyncio.to_thread(inserted_so_far, port)
            if rows and t0 is None:
                t0, first = time.perf_counter(), rows
            await asyncio.sleep(0.1)
        assert t0 is not None and first is not None
        elapsed = time.perf_counter() - t0
        stored = await conn.fetchval("SELECT count(*) FROM plate_events")
        if stored != unique:
            raise RuntimeError(f"persist reported {rows} inserted but the table holds {stored} rows")
        while await committed_total(bootstrap, topic, group) < records:
            if time.monotonic() > deadline:
                raise RuntimeError("offsets were not committed")
            await asyncio.sleep(0.1)
        rss = vm_hwm_mb(proc.pid)
        # Stored events per second; the second revisions persist also consumed are not counted (conservative).
        rate = (unique - first) / elapsed
        return rate, rss, first
    finally:
        await conn.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


async def main_async(quick: bool) -> int:
    n = 100_000 if quick else 300_000
    print(machine_line())
    print(f"events: {n} unique + {n // 10} second revisions, {PARTITIONS} partitions, batch {BATCH}")
    events = make_events(n)
    keep = os.environ.get("BENCH_PERSIST_KEEP_LOG")  # a path: keep persist's log there for a look
    with (
        tempfile.TemporaryDirectory(prefix="alpr-bench-persist-") as tmp,
        PostgresServer() as pg,
        KafkaBroker() as kafka,
    ):
        dsn = pg.create_database("bench")
        conn = await asyncpg.connect(dsn)
        try:
            await migrate.migrate(conn, PersistSettings())
        finally:
            await conn.close()
        topic = await kafka.create_topic("alpr.plates.bench", partitions=PARTITIONS)
        produce_s = await produce(kafka.bootstrap, topic, events)
        print(f"produced {len(events)} records in {produce_s:.1f} s (not timed)")
        raw = await baseline(dsn, events)
        try:
            rate, rss, first = await run_persist(
                kafka.bootstrap, topic, dsn, unique=n, records=len(events), workdir=Path(tmp)
            )
        finally:
            if keep:
                Path(keep).write_bytes((Path(tmp) / "persist.log").read_bytes())  # noqa: ASYNC240 - after timing
    ratio = rate / raw
    print(
        table(
            ["what", "events/s", "ratio to raw COPY", "peak RSS MB"],
            [
                ["raw copy_records_to_table (baseline)", fmt(raw, 0), "1.00", "-"],
                ["alpr persist, broker → committed rows", fmt(rate, 0), fmt(ratio), fmt(rss, 0)],
            ],
        )
    )
    print(f"(timed from persist's first stored row: {first} rows were already in at the first sample)")
    passed = rate >= TARGET_RATE and ratio >= TARGET_RATIO and rss <= TARGET_RSS_MB
    return finish(
        "persist",
        {
            "events_per_s": fmt(rate, 0),
            "raw_copy_per_s": fmt(raw, 0),
            "ratio": fmt(ratio),
            "peak_rss_mb": fmt(rss, 0),
        },
        f"events_per_s>={TARGET_RATE:.0f},ratio>={TARGET_RATIO},peak_rss_mb<={TARGET_RSS_MB:.0f}",
        passed,
    )


def main() -> int:
    args = bench_parser(__doc__.splitlines()[0] if __doc__ else None).parse_args()
    return asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    sys.exit(main())
