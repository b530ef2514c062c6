"""`alpr persist` as real processes between a real broker (noida-db) and a real PostgreSQL 15.

End to end topic → tables with dead letters; SIGKILL mid-stream and restart (0 lost, 0 duplicated);
PostgreSQL stopped for 30 s while events flow; two instances of one group splitting the partitions.
"Duplicated" is checked on the hourly rollup too: it counts an event once when its row is inserted, so a
batch stored twice would show there even though the primary key keeps the rows unique.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from alpr_persist.consumer import DLQ_KIND_HEADER, DLQ_REASON_HEADER, DLQ_SOURCE_HEADER
from alpr_persist.synthetic import make_event
from alpr_shared.schemas import Codec, PlateEvent
from tests.harness import KafkaBroker, PostgresServer, free_port, unique_database_name, unique_topic_name

pytestmark = pytest.mark.integration

CODEC: Codec[PlateEvent] = Codec(PlateEvent, wire="json")
WAIT_S = 60.0


class PersistProcess:
    """`python -m alpr_persist` with settings in the environment; its JSON log goes to a file."""

    def __init__(self, tmp: Path, name: str, env: dict[str, str]) -> None:
        self.log_path = tmp / f"{name}.log"
        self.metrics_port = free_port("127.0.0.1")
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PersistProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "alpr_persist",
                    "--log-format",
                    "json",
                    "--metrics-port",
                    str(self.metrics_port),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def ready(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/health/ready", timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None


@pytest.fixture
def persist_factory(tmp_path: Path) -> Iterator[Callable[..., PersistProcess]]:
    made: list[PersistProcess] = []

    def make(
        name: str, *, bootstrap: str, topic: str, dsn: str, group: str, dlq: str, **extra: str
    ) -> PersistProcess:
        env = {
            "ALPR_KAFKA__BOOTSTRAP": bootstrap,
            "ALPR_KAFKA__TOPIC": topic,
            "ALPR_DATABASE__URL": dsn,
            "ALPR_PERSIST__GROUP_ID": group,
            "ALPR_PERSIST__DLQ_TOPIC": dlq,
            "ALPR_PERSIST__BATCH_TIME_MS": "100",
            "ALPR_PERSIST__RETRY_MAX_S": "1",
            **{f"ALPR_PERSIST__{k.upper()}": v for k, v in extra.items()},
        }
        proc = PersistProcess(tmp_path, name, env)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.close()


async def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", compression_type="gzip"
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def event_records(events: Sequence[PlateEvent]) -> list[tuple[bytes | None, bytes]]:
    return [(e.camera_id.encode(), CODEC.encode(e)) for e in events]


async def wait_for(
    check: Callable[[], Any], what: str, timeout: float = WAIT_S, procs: Sequence[PersistProcess] = ()
) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last is True:
            return last
        for p in procs:
            if not p.alive():
                raise AssertionError(
                    f"persist exited ({p.proc.returncode if p.proc else '?'}): {p.log_path.read_text()[-3000:]}"
                )
        await asyncio.sleep(0.2)
    logs = "\n".join(p.log_path.read_text()[-3000:] for p in procs)
    raise AssertionError(f"timed out waiting for {what} (last: {last})\n{logs}")


async def db_counts(dsn: str) -> tuple[int, int]:
    """(rows in plate_events, events counted by the rollup); (-1, -1) while the database is down."""
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return -1, -1
    try:
        rows = (
            await conn.fetchval("SELECT count(*) FROM plate_events")
            if await conn.fetchval("SELECT to_regclass('plate_events') IS NOT NULL")
            else 0
        )
        rolled = (
            await conn.fetchval("SELECT coalesce(sum(events), 0) FROM plate_events_hourly") if rows else 0
        )
        return int(rows), int(rolled)
    finally:
        await conn.close()


async def read_topic(bootstrap: str, topic: str, n: int, timeout: float = 30.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(out) < n:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out.extend(records)
    finally:
        await consumer.stop()
    return out


async def committed(bootstrap: str, topic: str, group: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for p in range(partitions):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


def names() -> tuple[str, str, str]:
    return unique_topic_name(), unique_topic_name(), f"persist-{unique_topic_name()}"


async def test_end_to_end_with_revisions_and_dead_letters(
    kafka_broker: KafkaBroker, postgres_db: str, persist_factory: Callable[..., PersistProcess]
) -> None:
    topic, dlq, group = names()
    await kafka_broker.create_topic(topic, partitions=2)
    await kafka_broker.create_topic(dlq)
    events = [make_event(i, jpeg_bytes=32 if i % 4 == 0 else 0) for i in range(1500)]
    revised = [msgspec.structs.replace(e, revision=2, confidence=0.99) for e in events[:300]]
    good = event_records(events)
    bad: list[tuple[bytes | None, bytes]] = [
        (b"cam-0", b"{not json"),
        (b"cam-0", b'{"type": "frame_detections", "schema_version": 1}'),
        (b"cam-1", CODEC.encode(events[0]).replace(b'"schema_version":1', b'"schema_version":99')),
        (b"cam-1", CODEC.encode(msgspec.structs.replace(events[1], event_id="bad-conf", confidence=5.0))),
        (b"cam-2", CODEC.encode(msgspec.structs.replace(events[2], event_id="bad-nul", plate="AB\x00C"))),
    ]
    # Bad records in the middle of the stream: the partition must move on past them.
    await produce(kafka_broker.bootstrap, topic, good[:700] + bad + good[700:] + event_records(revised))
    proc = persist_factory(
        "e2e", bootstrap=kafka_broker.bootstrap, topic=topic, dsn=postgres_db, group=group, dlq=dlq
    ).start()

    async def all_stored() -> bool:
        rows, rolled = await db_counts(postgres_db)
        return rows == 1500 and rolled == 1500

    await wait_for(all_stored, "1500 events stored", procs=[proc])
    total = len(good) + len(bad) + len(revised)
    await wait_for(
        lambda: _eq(committed(kafka_broker.bootstrap, topic, group, 2), total),
        "offsets committed",
        procs=[proc],
    )
    conn = await asyncpg.connect(postgres_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM plate_events WHERE revision = 2") == 300
        assert await conn.fetchval("SELECT count(*) FROM plate_event_images") == 375
        assert await conn.fetchval("SELECT count(*) FROM plate_events WHERE event_id LIKE 'bad-%'") == 0
    finally:
        await conn.close()
    dead = await read_topic(kafka_broker.bootstrap, dlq, len(bad))
    assert sorted(r.value for r in dead) == sorted(v for _, v in bad)
    by_value = {r.value: dict(r.headers) for r in dead}
    kinds = [by_value[v][DLQ_KIND_HEADER].decode() for _, v in bad]
    assert kinds == ["decode", "decode", "version", "invalid", "invalid"]
    assert b"confidence" in by_value[bad[3][1]][DLQ_REASON_HEADER]
    assert b"NUL" in by_value[bad[4][1]][DLQ_REASON_HEADER]
    assert all(h[DLQ_SOURCE_HEADER].startswith(topic.encode()) for h in by_value.values())
    assert proc.ready() == 200
    assert proc.terminate() == 0


async def _eq(coro: Any, expected: int) -> bool:
    return bool(await coro == expected)


async def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    make_kafka_broker: Callable[..., KafkaBroker],
    postgres_db: str,
    persist_factory: Callable[..., PersistProcess],
) -> None:
    broker = make_kafka_broker()
    topic, dlq, group = names()
    await broker.create_topic(topic, partitions=2)
    n = 20_000
    await produce(broker.bootstrap, topic, event_records([make_event(i) for i in range(n)]))
    args = {"bootstrap": broker.bootstrap, "topic": topic, "dsn": postgres_db, "group": group, "dlq": dlq}
    first = persist_factory("first", **args, batch_size="500").start()

    async def some_stored() -> bool:
        return (await db_counts(postgres_db))[0] >= 2_000

    await wait_for(some_stored, "the first batches", procs=[first])
    first.kill()
    rows_at_kill, _ = await db_counts(postgres_db)
    assert rows_at_kill < n, "persist finished before it was killed: the test needs a longer stream"
    # noida-db never expires the session of a member that died without leaving (Apache Kafka does after
    # session_timeout_ms), so the group would wait for it forever. A clean broker restart forgets members
    # and keeps the committed offsets, which is what this test is about.
    await asyncio.to_thread(broker.stop)
    await asyncio.to_thread(broker.start)
    second = persist_factory("second", **args, batch_size="500").start()

    async def all_stored() -> bool:
        return await db_counts(postgres_db) == (n, n)

    await wait_for(all_stored, f"{n} events stored once", procs=[second])
    await wait_for(
        lambda: _eq(committed(broker.bootstrap, topic, group, 2), n),
        "offsets committed",
        procs=[second],
    )
    conn = await asyncpg.connect(postgres_db)
    try:
        assert await conn.fetchval("SELECT count(DISTINCT event_id) FROM plate_events") == n
    finally:
        await conn.close()
    assert second.terminate() == 0


async def test_postgres_down_for_30_s_while_events_flow(
    kafka_broker: KafkaBroker,
    make_postgres_server: Callable[..., PostgresServer],
    persist_factory: Callable[..., PersistProcess],
) -> None:
    server = make_postgres_server()
    dsn = server.create_database(unique_database_name())
    topic, dlq, group = names()
    await kafka_broker.create_topic(topic, partitions=2)
    proc = persist_factory(
        "outage", bootstrap=kafka_broker.bootstrap, topic=topic, dsn=dsn, group=group, dlq=dlq
    ).start()
    await wait_for(lambda: _eq(_ready(proc), 200), "persist ready", procs=[proc])
    sent = 0
    stop_sending = asyncio.Event()

    async def flow() -> None:
        nonlocal sent
        while not stop_sending.is_set():
            batch = [make_event(sent + i) for i in range(50)]
            await produce(kafka_broker.bootstrap, topic, event_records(batch))
            sent += len(batch)
            await asyncio.sleep(0.25)

    flowing = asyncio.create_task(flow())
    try:
        await asyncio.sleep(2)
        await asyncio.to_thread(server.stop)
        stopped_at = time.monotonic()
        await wait_for(lambda: _eq(_ready(proc), 503), "persist reports not ready", procs=[proc])
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))
        assert proc.alive()
        await asyncio.to_thread(server.start)
        await asyncio.sleep(2)
    finally:
        stop_sending.set()
        await flowing
    assert sent > 3_000

    async def all_stored() -> bool:
        return await db_counts(dsn) == (sent, sent)

    await wait_for(all_stored, f"all {sent} events after the outage", procs=[proc])
    assert proc.ready() == 200
    logs = proc.logs()
    assert any(line.get("event") == "database_write_failed" for line in logs)
    assert any(line.get("event") == "database_recovered" for line in logs)
    assert proc.terminate() == 0


async def _ready(proc: PersistProcess) -> int | None:
    return await asyncio.to_thread(proc.ready)


async def test_two_instances_split_the_partitions_and_store_every_event_once(
    kafka_broker: KafkaBroker, postgres_db: str, persist_factory: Callable[..., PersistProcess]
) -> None:
    topic, dlq, group = names()
    await kafka_broker.create_topic(topic, partitions=4)
    args = {
        "bootstrap": kafka_broker.bootstrap,
        "topic": topic,
        "dsn": postgres_db,
        "group": group,
        "dlq": dlq,
    }
    a = persist_factory("a", **args).start()
    b = persist_factory("b", **args).start()

    def assigned(proc: PersistProcess) -> list[int]:
        last = [line["partitions"] for line in proc.logs() if line.get("event") == "partitions_assigned"]
        return last[-1] if last else []

    async def split() -> bool:
        return bool(assigned(a)) and bool(assigned(b)) and sorted(assigned(a) + assigned(b)) == [0, 1, 2, 3]

    await wait_for(split, "both instances holding partitions", procs=[a, b])
    n = 8_000
    await produce(kafka_broker.bootstrap, topic, event_records([make_event(i, cameras=16) for i in range(n)]))

    async def all_stored() -> bool:
        return await db_counts(postgres_db) == (n, n)

    await wait_for(all_stored, f"{n} events stored once", procs=[a, b])
    # Both did part of the work.
    for proc in (a, b):
        metrics = await asyncio.to_thread(_metrics, proc)
        inserted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('alpr_persist_events_total{outcome="inserted"}')
        )
        assert 0 < inserted < n
    assert a.terminate() == 0
    assert b.terminate() == 0


def _metrics(proc: PersistProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
        return str(r.read().decode())
