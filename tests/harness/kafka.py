"""A throwaway Kafka-protocol broker (noida-db) for integration tests and benchmarks.

``KafkaBroker`` owns one ``noida-db start --only kafka`` process group, its data directory and its log,
all inside one temporary directory. Production runs Apache Kafka; noida-db is a single binary shipped in a
PyPI wheel that speaks the Kafka wire protocol well enough for aiokafka (idempotent producer, gzip,
consumer groups, admin create/delete topics) and keeps its data across ``stop()``/``start()``.

What the broker must never do: outlive ``close()`` (an ``atexit`` hook backs that up), or be mistaken for
a durable Kafka. noida-db writes its data directory as a snapshot about a second after a change and at a
clean shutdown, so ``kill()`` (SIGKILL) can lose writes acknowledged in the last second — use ``stop()``
when a test needs the data back after a restart.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psutil
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.harness.common import ServerError, ServerStartError, default_base_dir, with_log
from tests.harness.ports import free_port, wait_port_closed

BINARY_ENV = "ALPR_NOIDA_DB"
STARTUP_TIMEOUT_S = 30.0
# A clean shutdown writes the snapshot; it takes milliseconds, so this only bounds a hung broker.
STOP_TIMEOUT_S = 15.0
# Per-probe socket timeout while waiting for the broker to answer a Metadata request: starts short (noida
# answers in about a millisecond, and a short probe notices an early exit sooner), doubles up to the cap.
PROBE_TIMEOUT_FIRST_S = 0.05
PROBE_TIMEOUT_S = 1.0
PROBE_INTERVAL_S = 0.02
# Fresh ports tried when an automatically chosen port turns out to be taken at bind time.
PORT_ATTEMPTS = 5
ADMIN_TIMEOUT_MS = 30_000
_PORT_IN_USE = "already in use"
# Kafka error codes tolerated by the topic helpers.
_NO_ERROR = 0
_UNKNOWN_TOPIC = 3
_INSTALL_HINT = "install the dev extras (`pip install -e '.[dev]'` brings noida-db) or set ALPR_NOIDA_DB"


def default_binary() -> Path:
    """The broker executable: ``$ALPR_NOIDA_DB`` if set, else the ``noida-db`` script of this Python."""
    env = os.environ.get(BINARY_ENV)
    if env:
        return Path(env)
    return Path(sys.executable).parent / "noida-db"


def unique_topic_name(prefix: str = "test") -> str:
    """A topic name no other test in any session will pick."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from(">h", buf, pos)
    pos += 2
    return buf[pos : pos + length].decode(), pos + length


def probe_metadata(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> list[tuple[str, int]]:
    """Send a Kafka Metadata v0 request and return the advertised brokers as ``(host, port)``.

    Raises ``OSError`` (connection refused, timeout) or ``ValueError`` (not a Kafka answer). Plain
    sockets rather than aiokafka, so readiness checks work from sync code and inside a running loop.
    """
    correlation_id = 0x414C5052  # "ALPR"
    client_id = b"alpr-harness"
    # Request header v1 (api_key=3 Metadata, api_version=0) + body v0 (empty topic array = all topics).
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = _recv_exact(sock, 4)
        (size,) = struct.unpack(">i", header)
        if not 8 <= size <= 16 * 1024 * 1024:
            raise ValueError(f"implausible Kafka response size {size}")
        payload = _recv_exact(sock, size)
    got_id, n_brokers = struct.unpack_from(">ii", payload, 0)
    if got_id != correlation_id:
        raise ValueError(f"Kafka response correlation id {got_id} != {correlation_id}")
    pos = 8
    brokers = []
    for _ in range(n_brokers):
        pos += 4  # node_id
        broker_host, pos = _read_string(payload, pos)
        (broker_port,) = struct.unpack_from(">i", payload, pos)
        pos += 4
        brokers.append((broker_host, broker_port))
    return brokers


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("Kafka broker closed the connection mid-response")
        chunks += chunk
    return bytes(chunks)


class KafkaBroker:
    """One noida-db Kafka-protocol broker on ``host:port``; ``start()`` / ``stop()`` / ``kill()`` / ``close()``.

    Restarts reuse the port and the data directory, so topics, messages and committed group offsets
    survive ``stop()``/``start()``.
    """

    def __init__(
        self,
        *,
        binary: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        base_dir: Path | str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
    ) -> None:
        """Describe a broker; nothing starts until ``start()``.

        ``port=None`` picks a free port (and a new one if that is taken by the time the broker binds);
        ``base_dir`` is where the temporary directory goes (default: ``default_base_dir()``).
        """
        self._binary = Path(binary) if binary is not None else default_binary()
        self._host = host
        self._port_fixed = port is not None
        self._port = port if port is not None else free_port(host)
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._startup_timeout = startup_timeout
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ever_started = False

    # ----------------------------------------------------------------------------------------- properties
    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"{self._host}:{self._port}"

    @property
    def binary(self) -> Path:
        return self._binary

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int | None:
        """PID (and process-group id) of the started process, while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ServerError("Kafka broker has not been started yet: no working directory")
        return self._workdir

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "noida-db.log"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"KafkaBroker({self.bootstrap}, {state}, workdir={self._workdir})"

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the broker and wait until it answers a Metadata request.

        Raises ``ServerStartError`` naming the cause (missing binary, port taken, early exit, timeout) and
        quoting the broker's log.
        """
        if self._proc is not None:
            raise ServerError(f"{self!r} is already running")
        if not self._binary.is_file() or not os.access(self._binary, os.X_OK):
            raise ServerStartError(
                f"Kafka-protocol broker binary not found or not executable: {self._binary}; {_INSTALL_HINT}"
            )
        if self._workdir is None:
            self._workdir = Path(
                tempfile.mkdtemp(prefix="alpr-kafka-", dir=self._base_dir or default_base_dir())
            )
            atexit.register(self.close)
        deadline = time.monotonic() + self._startup_timeout
        attempts = 0
        while True:
            attempts += 1
            failure = self._launch_and_wait(deadline)
            if failure is None:
                self._ever_started = True
                return
            message, port_taken = failure
            if port_taken and time.monotonic() < deadline:
                if not self._ever_started and not self._port_fixed and attempts < PORT_ATTEMPTS:
                    self._port = free_port(self._host)
                    continue
                if self._ever_started:
                    time.sleep(0.2)  # a restart keeps its port: wait for whoever holds it
                    continue
            raise ServerStartError(with_log(message, self.log_path))

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM): the broker writes its data, which the next ``start()`` reads."""
        self._signal_and_reap(signal.SIGTERM, STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL the broker's process group: a crash. Writes of the last second may be lost."""
        self._signal_and_reap(signal.SIGKILL, STOP_TIMEOUT_S)

    def close(self) -> None:
        """Stop the broker if it runs and delete its directory. Safe to call more than once."""
        atexit.unregister(self.close)
        try:
            if self._proc is not None:
                try:
                    self.stop()
                except ServerError:
                    self.kill()
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------- topics
    async def create_topic(self, name: str, *, partitions: int = 1) -> str:
        """Create ``name`` with ``partitions`` partitions (replication factor 1) and return the name."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS)
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=1)]
            )
        finally:
            await admin.close()
        # aiokafka returns per-topic error codes instead of raising.
        for topic, code, message in response.topic_errors:
            if code != _NO_ERROR:
                raise ServerError(f"creating topic {topic!r} on {self.bootstrap} failed: {code} {message}")
        return name

    async def delete_topic(self, name: str) -> None:
        """Delete ``name``; a topic that is already gone is fine."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=ADMIN_TIMEOUT_MS)
        await admin.start()
        try:
            response = await admin.delete_topics([name])
        finally:
            await admin.close()
        for topic, code in response.topic_error_codes:
            if code not in (_NO_ERROR, _UNKNOWN_TOPIC):
                raise ServerError(f"deleting topic {topic!r} on {self.bootstrap} failed: error {code}")

    # ------------------------------------------------------------------------------------------ internals
    def _argv(self) -> list[str]:
        return [
            str(self._binary),
            "start",
            "--only",
            "kafka",
            "--host",
            self._host,
            "--kafka-port",
            str(self._port),
            "--data-dir",
            str(self.data_dir),
        ]

    def _launch_and_wait(self, deadline: float) -> tuple[str, bool] | None:
        """Launch once; return None when ready, else (reason, whether the port was taken)."""
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"=== harness: starting {self._argv()} ===\n".encode())
            log.flush()
            self._proc = self._spawn(log)
        last_error = "no answer yet"
        probe_timeout = PROBE_TIMEOUT_FIRST_S
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                proc, self._proc = self._proc, None
                self._end_group(proc, signal.SIGKILL, STOP_TIMEOUT_S)  # leftovers of the group, if any
                port_taken = _PORT_IN_USE in self._log_since(log_offset)
                return (f"broker exited with code {code} before it was ready on {self.bootstrap}", port_taken)
            try:
                brokers = probe_metadata(self._host, self._port, timeout=probe_timeout)
            except (OSError, ValueError, struct.error) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                probe_timeout = min(probe_timeout * 2, PROBE_TIMEOUT_S)
                time.sleep(PROBE_INTERVAL_S)
                continue
            if (self._host, self._port) not in brokers:
                self._signal_and_reap(signal.SIGKILL, STOP_TIMEOUT_S)
                return (f"broker on {self.bootstrap} advertises {brokers}, not itself", False)
            return None
        self._signal_and_reap(signal.SIGKILL, STOP_TIMEOUT_S)
        return (
            f"broker on {self.bootstrap} not ready after {self._startup_timeout} s (last probe: {last_error})",
            False,
        )

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Own process group: the console script is a Python wrapper around the real binary, and
                # stop()/kill() must reach both.
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(f"cannot execute Kafka-protocol broker {self._binary}: {exc}") from exc

    def _signal_and_reap(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            raise ServerError(f"{self!r} is not running")
        self._proc = None
        self._end_group(proc, sig, timeout)
        if not wait_port_closed(self._host, self._port, timeout):
            raise ServerError(f"port {self._port} still accepts connections after the broker exited")

    def _end_group(self, proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
        """Send ``sig`` to ``proc``'s process group and reap it; escalate to SIGKILL after ``timeout`` s."""
        # ProcessLookupError: the whole group is gone already; reaping confirms it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if self._reap_group(proc, timeout):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        survived = "" if self._reap_group(proc, timeout) else " and survived SIGKILL"
        raise ServerError(
            f"broker process group {proc.pid} did not exit within {timeout} s of {sig.name}{survived}"
        )

    @staticmethod
    def _reap_group(proc: subprocess.Popen[bytes], timeout: float) -> bool:
        """Wait until every process of ``proc``'s group has exited; False on timeout."""
        deadline = time.monotonic() + timeout
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        while _live_group_members(proc.pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def _live_group_members(pgid: int) -> list[int]:
    """PIDs in process group ``pgid`` that are not zombies (a zombie is dead, just not reaped by init)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return members
