"""pytest fixtures that hand tests real servers, built on ``tests.harness``.

Session-wide servers start lazily (only when a test asks for them) and are always closed at session end.
A server that cannot start fails the test with the harness's reason and the server's log tail; it never
skips, because a skipped integration test looks like a passing one.

Fixtures:
- ``postgres_server`` (session) -> ``PostgresServer``; ``postgres_db`` (function) -> DSN ``str`` of a
  fresh database, dropped after the test.
- ``kafka_broker`` (session) -> ``KafkaBroker``; ``kafka_topic`` (function) -> name ``str`` of a fresh
  one-partition topic, deleted after the test.
- ``make_postgres_server`` / ``make_kafka_broker`` (function) -> factories of dedicated, started servers
  closed after the test: for outage tests that stop or kill a server, so the shared ones stay untouched.
- ``rtsp_server`` (session) -> ``RtspServer`` (GStreamer, mounts ``cam`` and ``cam2``: a live generated
  H.264 stream); ``make_rtsp_server`` (function) -> factory of dedicated ones (to stop mid-stream).

A SIGTERM to pytest (a cancelled CI job) is turned into a KeyboardInterrupt, so the session ends through
fixture teardown like Ctrl-C does and no server outlives it. Only SIGKILL can still orphan a server.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from types import FrameType
from typing import Any

import pytest

from tests.harness import (
    KafkaBroker,
    PostgresServer,
    ServerStartError,
    unique_database_name,
    unique_topic_name,
)
from tests.harness.rtsp import RtspServer

_SIGTERM_BEFORE = pytest.StashKey[Any]()


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")


def pytest_configure(config: pytest.Config) -> None:
    # Leave alone a handler someone else installed; signals can only be set from the main thread.
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        config.stash[_SIGTERM_BEFORE] = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SIGTERM_BEFORE in config.stash:
        signal.signal(signal.SIGTERM, config.stash[_SIGTERM_BEFORE])


def _ensure_running(server: PostgresServer | KafkaBroker | RtspServer, what: str) -> None:
    """Start ``server`` if it is not running (first use, or a test left it stopped); fail clearly if not."""
    if server.running:
        return
    try:
        server.start()
    except ServerStartError as exc:
        reason = str(exc)
    else:
        return
    # Outside the except block, so the report shows the reason once rather than a chained traceback.
    pytest.fail(f"could not start {what} for this test: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL 15 cluster shared by the whole session."""
    server = PostgresServer()
    try:
        _ensure_running(server, "PostgreSQL")
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> Iterator[str]:
    """DSN of a fresh, uniquely named database on the session cluster; dropped after the test."""
    _ensure_running(postgres_server, "PostgreSQL")
    name = unique_database_name()
    dsn = postgres_server.create_database(name)
    yield dsn
    _ensure_running(postgres_server, "PostgreSQL")
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One throwaway Kafka-protocol broker (noida-db) shared by the whole session."""
    broker = KafkaBroker()
    try:
        _ensure_running(broker, "the Kafka-protocol broker (noida-db)")
        yield broker
    finally:
        broker.close()


@pytest.fixture
async def kafka_topic(kafka_broker: KafkaBroker) -> AsyncIterator[str]:
    """Name of a fresh one-partition topic on the session broker; deleted after the test.

    Tests that need more partitions call ``await kafka_broker.create_topic(name, partitions=n)``.
    """
    _ensure_running(kafka_broker, "the Kafka-protocol broker (noida-db)")
    topic = await kafka_broker.create_topic(unique_topic_name())
    yield topic
    _ensure_running(kafka_broker, "the Kafka-protocol broker (noida-db)")
    await kafka_broker.delete_topic(topic)


@pytest.fixture
def make_postgres_server() -> Iterator[Callable[..., PostgresServer]]:
    """Factory of dedicated, started PostgreSQL clusters (kwargs go to ``PostgresServer``)."""
    with ExitStack() as stack:

        def make(**kwargs: Any) -> PostgresServer:
            server = PostgresServer(**kwargs)
            stack.callback(server.close)
            _ensure_running(server, "a dedicated PostgreSQL cluster")
            return server

        yield make


@pytest.fixture
def make_kafka_broker() -> Iterator[Callable[..., KafkaBroker]]:
    """Factory of dedicated, started Kafka-protocol brokers (kwargs go to ``KafkaBroker``)."""
    with ExitStack() as stack:

        def make(**kwargs: Any) -> KafkaBroker:
            broker = KafkaBroker(**kwargs)
            stack.callback(broker.close)
            _ensure_running(broker, "a dedicated Kafka-protocol broker (noida-db)")
            return broker

        yield make


@pytest.fixture(scope="session")
def rtsp_server() -> Iterator[RtspServer]:
    """One GStreamer RTSP server shared by the session: ``url("cam")`` and ``url("cam2")``."""
    server = RtspServer(mounts=("cam", "cam2"))
    try:
        _ensure_running(server, "the RTSP server (GStreamer)")
        yield server
    finally:
        server.close()


@pytest.fixture
def make_rtsp_server() -> Iterator[Callable[..., RtspServer]]:
    """Factory of dedicated, started RTSP servers (kwargs go to ``RtspServer``), for outage tests."""
    with ExitStack() as stack:

        def make(**kwargs: Any) -> RtspServer:
            server = RtspServer(**kwargs)
            stack.callback(server.close)
            _ensure_running(server, "a dedicated RTSP server (GStreamer)")
            return server

        yield make
