"""The harness gives working servers, survives outages on purpose, and fails loudly when it cannot start."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# asyncpg ships no py.typed; "unused-ignore" keeps this clean once asyncpg-stubs or an override is added.
import asyncpg  # type: ignore[import-untyped, unused-ignore]
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.harness import (
    KafkaBroker,
    PostgresServer,
    ServerStartError,
    free_port,
    unique_database_name,
    unique_topic_name,
)
from tests.harness.kafka import probe_metadata

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
N_MESSAGES = 300
CONSUME_TIMEOUT_S = 30.0


# ------------------------------------------------------------------------------------------------ helpers
async def produce(bootstrap: str, topic: str, n: int) -> list[bytes]:
    """Send ``n`` distinct messages with the production producer settings; return what was sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", compression_type="gzip"
    )
    await producer.start()
    try:
        values = [f"plate-read-{i}".encode() for i in range(n)]
        futures = [await producer.send(topic, value=v, key=str(i % 7).encode()) for i, v in enumerate(values)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return values


async def consume(bootstrap: str, topic: str, group: str, n: int) -> list[bytes]:
    """Read exactly ``n`` messages as consumer group ``group`` and commit; fail if they do not all come."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[bytes] = []
    try:
        async with asyncio.timeout(CONSUME_TIMEOUT_S):
            while len(received) < n:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    received.extend(r.value for r in records)
        await consumer.commit()
    finally:
        await consumer.stop()
    return received


async def committed_total(bootstrap: str, topic: str, partitions: int, group: str) -> int:
    """Sum of the offsets ``group`` has committed on ``topic`` (``partitions`` partitions)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum([await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)])
    finally:
        await consumer.stop()


def executable_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --------------------------------------------------------------------------------------------- PostgreSQL
async def test_postgres_db_is_fresh_and_round_trips_rows(postgres_db: str) -> None:
    conn = await asyncpg.connect(postgres_db)
    try:
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables == 0
        await conn.execute("CREATE TABLE reads (id bigint PRIMARY KEY, plate text NOT NULL)")
        await conn.executemany("INSERT INTO reads VALUES ($1, $2)", [(1, "AB123CD"), (2, "XY987ZW")])
        rows = await conn.fetch("SELECT id, plate FROM reads ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "AB123CD"), (2, "XY987ZW")]
    finally:
        await conn.close()


async def test_postgres_db_gives_each_test_its_own_database(postgres_db: str) -> None:
    # The previous test created `reads`; a per-test database must not see it.
    conn = await asyncpg.connect(postgres_db)
    try:
        assert await conn.fetchval("SELECT to_regclass('public.reads')") is None
        assert (await conn.fetchval("SELECT current_database()")).startswith("test_")
    finally:
        await conn.close()


async def test_postgres_has_pg_trgm(postgres_db: str) -> None:
    conn = await asyncpg.connect(postgres_db)
    try:
        await conn.execute("CREATE EXTENSION pg_trgm")
        await conn.execute("CREATE TABLE plates (plate text)")
        await conn.execute("CREATE INDEX plates_trgm ON plates USING gin (plate gin_trgm_ops)")
        await conn.execute("INSERT INTO plates VALUES ('AB123CD'), ('ZZ999ZZ')")
        hits = await conn.fetch("SELECT plate FROM plates WHERE plate % 'AB123CO'")
        assert [r["plate"] for r in hits] == ["AB123CD"]
    finally:
        await conn.close()


def test_postgres_create_database_from_template(postgres_server: PostgresServer) -> None:
    template = unique_database_name("tmpl")
    clone = unique_database_name()
    postgres_server.create_database(template)
    try:
        postgres_server.psql("CREATE TABLE migrated (x int)", database=template)
        dsn = postgres_server.create_database(clone, template=template)
        assert dsn.endswith(f"/{clone}")
        assert (
            postgres_server.psql("SELECT to_regclass('migrated') IS NOT NULL", database=clone).strip() == "t"
        )
    finally:
        postgres_server.drop_database(clone)
        postgres_server.drop_database(template)


async def test_postgres_stop_breaks_clients_and_start_restores_data(make_postgres_server) -> None:
    server: PostgresServer = make_postgres_server()
    port = server.port
    dsn = server.create_database("outage")
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await conn.execute("INSERT INTO t VALUES (1), (2)")

    await asyncio.to_thread(server.stop)
    assert not server.running
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)

    await asyncio.to_thread(server.start)
    assert server.port == port
    conn = await asyncpg.connect(dsn)
    try:
        assert [r["id"] for r in await conn.fetch("SELECT id FROM t ORDER BY id")] == [1, 2]
    finally:
        await conn.close()


async def test_postgres_kill_then_start_recovers(make_postgres_server) -> None:
    server: PostgresServer = make_postgres_server()
    await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)
    conn = await asyncpg.connect(server.dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    assert "not properly shut down" in server.log_path.read_text()


def test_postgres_missing_binaries_fail_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "no-such-postgresql" / "bin"
    server = PostgresServer(bindir=bogus)
    try:
        with pytest.raises(ServerStartError, match="PostgreSQL binaries not found") as info:
            server.start()
        assert str(bogus / "initdb") in str(info.value)
        assert "ALPR_PG_BINDIR" in str(info.value)
    finally:
        server.close()


def test_postgres_port_taken_fails_clearly() -> None:
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        server = PostgresServer(port=port)
        try:
            with pytest.raises(ServerStartError, match=f"did not start on 127.0.0.1:{port}") as info:
                server.start()
            assert "Address already in use" in str(info.value)  # quoted from the server log
        finally:
            server.close()


# -------------------------------------------------------------------------------------- Kafka-protocol broker
async def test_kafka_idempotent_producer_and_consumer_group(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    sent = await produce(kafka_broker.bootstrap, kafka_topic, N_MESSAGES)
    received = await consume(kafka_broker.bootstrap, kafka_topic, unique_topic_name("group"), N_MESSAGES)
    assert sorted(received) == sorted(sent)
    assert len(set(received)) == N_MESSAGES  # nothing duplicated


async def test_kafka_stop_start_keeps_messages_and_offsets(make_kafka_broker) -> None:
    broker: KafkaBroker = make_kafka_broker()
    topic = await broker.create_topic(unique_topic_name(), partitions=3)
    sent = await produce(broker.bootstrap, topic, N_MESSAGES)
    group = unique_topic_name("group")
    await consume(broker.bootstrap, topic, group, N_MESSAGES)
    bootstrap = broker.bootstrap

    await asyncio.to_thread(broker.stop)
    with pytest.raises(OSError):
        probe_metadata(broker.host, broker.port)

    await asyncio.to_thread(broker.start)
    assert broker.bootstrap == bootstrap
    assert await committed_total(bootstrap, topic, 3, group) == N_MESSAGES
    again = await consume(bootstrap, topic, unique_topic_name("group"), N_MESSAGES)
    assert sorted(again) == sorted(sent)


async def test_kafka_kill_then_start_serves_again(make_kafka_broker) -> None:
    broker: KafkaBroker = make_kafka_broker()
    await asyncio.to_thread(broker.kill)
    assert not broker.running
    await asyncio.to_thread(broker.start)
    topic = await broker.create_topic(unique_topic_name())
    sent = await produce(broker.bootstrap, topic, 10)
    assert await consume(broker.bootstrap, topic, unique_topic_name("group"), 10) == sent


def test_kafka_missing_binary_fails_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "no-such-dir" / "noida-db"
    broker = KafkaBroker(binary=bogus)
    try:
        with pytest.raises(ServerStartError, match="binary not found") as info:
            broker.start()
        assert str(bogus) in str(info.value)
    finally:
        broker.close()


def test_kafka_port_taken_fails_clearly() -> None:
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        broker = KafkaBroker(port=port)
        try:
            with pytest.raises(ServerStartError, match="exited with code 1") as info:
                broker.start()
            assert f"port {port} is already in use" in str(info.value)  # quoted from the broker log
        finally:
            broker.close()


def test_kafka_early_exit_quotes_the_log(tmp_path: Path) -> None:
    script = executable_script(tmp_path / "broken-broker", 'echo "boom: licence file missing"\nexit 3\n')
    broker = KafkaBroker(binary=script)
    try:
        with pytest.raises(ServerStartError, match="exited with code 3") as info:
            broker.start()
        assert "boom: licence file missing" in str(info.value)
    finally:
        broker.close()


def test_kafka_startup_timeout_leaves_no_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = executable_script(tmp_path / "mute-broker", f"echo $$ > {pid_file}\nexec sleep 60\n")
    broker = KafkaBroker(binary=script, startup_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(ServerStartError, match=r"not ready after 0\.5 s"):
            broker.start()
        assert time.monotonic() - started < 5
        pid = int(pid_file.read_text())
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        broker.close()


# -------------------------------------------------------------------------------------------------- fixtures
def test_fixtures_fail_instead_of_skipping_when_servers_cannot_start(tmp_path: Path) -> None:
    """Run pytest on two tests whose servers cannot start: both must error, naming the cause."""
    (tmp_path / "test_probe.py").write_text(
        "def test_needs_postgres(postgres_server):\n    pass\n\n"
        "def test_needs_kafka(kafka_broker):\n    pass\n"
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "ALPR_PG_BINDIR": str(tmp_path / "no-pg-bin"),
        "ALPR_NOIDA_DB": str(tmp_path / "no-noida-db"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-rA", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "2 errors" in out, out
    assert "skipped" not in out, out
    assert f"PostgreSQL binaries not found: {tmp_path / 'no-pg-bin' / 'initdb'}" in out, out
    assert f"binary not found or not executable: {tmp_path / 'no-noida-db'}" in out, out
