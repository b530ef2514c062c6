"""`alpr events` as a real process against a real Kafka-protocol broker (noida-db).

A PUSH socket in the test stands in for the OCR coordinator; a plain aiokafka consumer reads what reached
the topics. Adversity: a malformed read, the broker stopped for 30 s while reads keep coming, and the
events process SIGKILLed mid-stream and restarted — each checked by event id and revision.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from alpr_events.synthetic import make_read
from alpr_shared.schemas import Codec, PlateEvent, PlateRead, WatchlistAlert, WatchlistEntry
from tests.harness import KafkaBroker, unique_topic_name

pytestmark = pytest.mark.integration

S = 1_000_000_000
T0 = 1_700_000_000 * S
EVENT_CODEC: Codec[PlateEvent] = Codec(PlateEvent, wire="json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EventsProcess:
    """`python -m alpr_events` with a config file; collects its JSON log lines."""

    def __init__(self, config: Path, metrics_port: int) -> None:
        self.config = config
        self.metrics_port = metrics_port
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[dict[str, Any]] = []
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alpr_events",
                "-c",
                str(self.config),
                "--metrics-port",
                str(self.metrics_port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        self.wait_for("events_ready")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def wait_for(self, event: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.get("event") == event:
                    return line
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} log line; got {[ln.get('event') for ln in self.lines]}")

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


class Coordinator:
    """The OCR coordinator's side of `plate_reads`: a bound PUSH."""

    def __init__(self, address: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 20_000)
        self.sock.bind(address)
        self.codec: Codec[PlateRead] = Codec(PlateRead)

    def send(self, read: PlateRead) -> None:
        self.sock.send(self.codec.encode(read))

    def send_raw(self, data: bytes) -> None:
        self.sock.send(data)

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def track_reads(camera: str, track: int, plate: str, first_ns: int) -> list[PlateRead]:
    """What the coordinator sends for one vehicle: a first read, then a better final one."""
    return [
        make_read(camera, track, plate, first_seen_ns=first_ns, confidence=0.8),
        make_read(
            camera,
            track,
            plate,
            first_seen_ns=first_ns,
            last_seen_ns=first_ns + S,
            confidence=0.9,
            final=True,
            reads=4,
        ),
    ]


def plate_of(i: int) -> str:
    """Distinct, far-apart gb plates (LLNNLLL) so that dedup never merges two test vehicles."""
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    a, b, c = letters[i % 23], letters[(i // 23) % 23], letters[(i // 529) % 23]
    return f"{a}{b}{(i % 90) + 10:02d}{c}{b}{a}"


async def consume(bootstrap: str, topic: str, *, until: int, timeout: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < until and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        # Anything beyond the expected count (a duplicate) shows up in this extra second.
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def write_config(tmp_path: Path, broker: KafkaBroker, topics: dict[str, str], **events: Any) -> Path:
    config = {
        "runtime_dir": str(tmp_path / "run"),
        "log": {"format": "json", "level": "info"},
        "cameras": [
            {"id": "gate-1", "source": "gate-1.mp4", "site_id": "hq", "name": "Gate 1", "regions": ["gb"]},
            {"id": "gate-2", "source": "gate-2.mp4", "site_id": "hq", "regions": ["gb"]},
        ],
        "kafka": {
            "bootstrap": broker.bootstrap,
            "topic": topics["events"],
            "alerts_topic": topics["alerts"],
            "watchlist_topic": topics["watchlist"],
            "request_timeout_ms": 5000,
        },
        "events": {
            "outbox_path": str(tmp_path / "outbox.sqlite3"),
            "cameras": {"gate-1": {"latitude": 48.1, "longitude": 11.6, "direction": "northbound"}},
            **events,
        },
    }
    path = tmp_path / "alpr.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def make_topics(broker: KafkaBroker, partitions: int = 1) -> dict[str, str]:
    topics = {k: unique_topic_name(f"events-{k}") for k in ("events", "alerts", "watchlist")}
    await broker.create_topic(topics["events"], partitions=partitions)
    await broker.create_topic(topics["alerts"])
    await broker.create_topic(topics["watchlist"])
    return topics


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    (tmp_path / "run").mkdir()
    coord = Coordinator(f"ipc://{tmp_path / 'run' / 'plate-reads.sock'}")
    yield coord
    coord.close()


def revisions_by_event(records: list[Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for record in records:
        event = EVENT_CODEC.decode(record.value)
        out.setdefault(event.event_id, []).append(event.revision)
    return out


async def test_events_reach_the_topic_with_key_schema_and_enrichment(
    kafka_broker: KafkaBroker, workdir: Path, coordinator: Coordinator
) -> None:
    topics = await make_topics(kafka_broker, partitions=2)
    config = write_config(
        workdir, kafka_broker, topics, watchlist=[{"id": "w1", "plate": "AB12CDE", "label": "stolen"}]
    )
    proc = EventsProcess(config, free_port())
    proc.start()
    try:
        coordinator.send_raw(b"\x00 not a plate read")  # malformed bytes
        coordinator.send(make_read("unknown-cam", 1, "AB12CDE", first_seen_ns=T0))  # semantically bad
        for read in track_reads("gate-1", 1, "AB12 CDE", T0) + track_reads("gate-2", 5, "XY34ZZZ", T0 + S):
            coordinator.send(read)
        records = await consume(kafka_broker.bootstrap, topics["events"], until=4, timeout=30)
        alerts = await consume(kafka_broker.bootstrap, topics["alerts"], until=1, timeout=10)
        assert proc.metric('alpr_events_reads_dropped_total{reason="unknown_camera"}') == 1
        assert proc.metric('alpr_events_messages_dropped_total{reason="malformed",socket="plate_reads"}') == 1
    finally:
        assert proc.stop() == 0
    assert len(records) == 4
    for record in records:
        body = json.loads(record.value)
        assert body["type"] == "plate_event" and body["schema_version"] == 1
        event = EVENT_CODEC.decode(record.value)
        assert record.key == event.camera_id.encode()
        assert dict(record.headers)["alpr-record-id"] == f"{event.event_id}:{event.revision}".encode()
    first = EVENT_CODEC.decode(records[0].value) if records[0].key == b"gate-1" else None
    by_camera = {EVENT_CODEC.decode(r.value).camera_id: EVENT_CODEC.decode(r.value) for r in records}
    gate1 = by_camera["gate-1"]
    assert first is None or first.revision == 1
    assert (gate1.plate, gate1.plate_raw, gate1.region, gate1.format_valid) == (
        "AB12CDE",
        "AB12 CDE",
        "gb",
        True,
    )
    assert (gate1.site_id, gate1.camera_name, gate1.latitude, gate1.camera_direction) == (
        "hq",
        "Gate 1",
        48.1,
        "northbound",
    )
    assert gate1.plate_jpeg is not None and gate1.plate_jpeg.startswith(b"\xff\xd8")
    assert revisions_by_event(records) == {e.event_id: [1, 2] for e in by_camera.values()}
    assert len(alerts) == 1
    alert = Codec(WatchlistAlert, wire="json").decode(alerts[0].value)
    assert (alert.entry_id, alert.plate, alert.label) == ("w1", "AB12CDE", "stolen")
    assert alerts[0].key == alert.event_id.encode()


async def test_watchlist_changes_on_the_topic_apply_at_run_time(
    kafka_broker: KafkaBroker, workdir: Path, coordinator: Coordinator
) -> None:
    topics = await make_topics(kafka_broker)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        codec: Codec[WatchlistEntry] = Codec(WatchlistEntry, wire="json")
        entry = WatchlistEntry(entry_id="q1", plate="XY34ZZZ", label="bolo", match="fuzzy", max_distance=1)
        await producer.send_and_wait(topics["watchlist"], codec.encode(entry), key=b"q1")
        gone = WatchlistEntry(entry_id="q2", plate="AB12CDE", label="removed")
        await producer.send_and_wait(topics["watchlist"], codec.encode(gone), key=b"q2")
        await producer.send_and_wait(topics["watchlist"], None, key=b"q2")  # tombstone
        proc = EventsProcess(write_config(workdir, kafka_broker, topics), free_port())
        proc.start()
        try:
            proc.wait_for("watchlist_loaded")
            coordinator.send(make_read("gate-1", 1, "XY34ZZ2", first_seen_ns=T0))  # one edit away
            coordinator.send(make_read("gate-1", 2, "AB12CDE", first_seen_ns=T0))
            alerts = await consume(kafka_broker.bootstrap, topics["alerts"], until=1, timeout=20)
        finally:
            assert proc.stop() == 0
    finally:
        await producer.stop()
    assert [Codec(WatchlistAlert, wire="json").decode(a.value).entry_id for a in alerts] == ["q1"]


async def test_broker_stopped_for_30_s_loses_and_duplicates_nothing(
    make_kafka_broker: Any, workdir: Path, coordinator: Coordinator
) -> None:
    broker: KafkaBroker = make_kafka_broker()
    topics = await make_topics(broker, partitions=2)
    proc = EventsProcess(write_config(workdir, broker, topics), free_port())
    proc.start()
    sent_tracks = 0
    try:

        def send_for(seconds: float) -> None:
            nonlocal sent_tracks
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                camera = ("gate-1", "gate-2")[sent_tracks % 2]
                for read in track_reads(camera, sent_tracks, plate_of(sent_tracks), T0 + sent_tracks * S):
                    coordinator.send(read)
                sent_tracks += 1
                time.sleep(0.05)

        await asyncio.to_thread(send_for, 3)
        broker.stop()
        outage_started = time.monotonic()
        await asyncio.to_thread(send_for, 30)  # events keep coming while the broker is down
        assert time.monotonic() - outage_started >= 30
        assert proc.metric("alpr_events_outbox_messages_count") > 0
        broker.start()
        await asyncio.to_thread(send_for, 2)
        records = await consume(broker.bootstrap, topics["events"], until=2 * sent_tracks, timeout=90)
        # The outage was seen (sends timed out), and rows of unknown fate were checked against the topic.
        assert proc.metric("alpr_events_kafka_errors_total") > 0
        proc.wait_for("kafka_recovered")
    finally:
        assert proc.stop() == 0
    by_event = revisions_by_event(records)
    pairs = Counter((r.key, *_id_rev(r)) for r in records)
    duplicates = [p for p, n in pairs.items() if n > 1]
    assert not duplicates, f"{len(duplicates)} duplicated (event, revision) pairs"
    assert len(by_event) == sent_tracks, f"{sent_tracks - len(by_event)} events lost"
    assert all(sorted(revs) == [1, 2] for revs in by_event.values())
    # Per camera (= per key = per partition) the order of production is kept.
    for camera in (b"gate-1", b"gate-2"):
        firsts = [
            EVENT_CODEC.decode(r.value).first_seen_ns
            for r in records
            if r.key == camera and _id_rev(r)[1] == 1
        ]
        assert firsts == sorted(firsts)


def _id_rev(record: Any) -> tuple[str, int]:
    event = EVENT_CODEC.decode(record.value)
    return event.event_id, event.revision


async def test_sigkill_mid_stream_and_restart_loses_and_duplicates_nothing(
    kafka_broker: KafkaBroker, workdir: Path, coordinator: Coordinator
) -> None:
    topics = await make_topics(kafka_broker)
    config = write_config(workdir, kafka_broker, topics)
    port = free_port()
    tracks = 400
    reads = [
        r for i in range(tracks) for r in track_reads(("gate-1", "gate-2")[i % 2], i, plate_of(i), T0 + i * S)
    ]
    proc = EventsProcess(config, port)
    proc.start()
    for read in reads[: len(reads) // 2]:
        coordinator.send(read)
    # Kill while the second half is still streaming in.
    killer = threading.Timer(0.05, lambda: os.kill(proc.proc.pid, signal.SIGKILL))  # type: ignore[union-attr]
    killer.start()
    for read in reads[len(reads) // 2 : len(reads) * 3 // 4]:
        coordinator.send(read)
    killer.join()
    assert proc.stop() == -signal.SIGKILL
    restarted = EventsProcess(config, port)
    restarted.start()
    try:
        # ZeroMQ has no acknowledgements: what sat in the dead process's socket is gone, so the coordinator
        # re-sends its reads (here: all of them). Deterministic ids and the stored builder state make the
        # replay produce nothing twice.
        for read in reads:
            coordinator.send(read)
        records = await consume(kafka_broker.bootstrap, topics["events"], until=2 * tracks, timeout=60)
    finally:
        assert restarted.stop() == 0
    pairs = Counter(_id_rev(r) for r in records)
    assert not [p for p, n in pairs.items() if n > 1], "duplicated (event, revision) pairs"
    by_event = revisions_by_event(records)
    assert len(by_event) == tracks
    shapes = Counter(tuple(sorted(revs)) for revs in by_event.values())
    assert shapes == {(1, 2): tracks}, shapes
