"""Run `alpr ingest` as its own process and watch what it publishes: for tests and benchmarks.

`IngestProcess` writes a configuration file, starts `python -m alpr_shared.cli ingest` with JSON logs to a
file, subscribes to its frames socket on a thread (plain ZeroMQ, as detect would) and records every
`FrameReady` it receives, reading the frame back from shared memory (a stale slot is counted, never
read torn). Tests then ask: how many frames per camera, at what times, with which shapes; which log
events appeared; what `/metrics` says. Nothing here mocks a camera: the sources are real files, folders
and RTSP servers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
import zmq

from alpr_shared.framestore import FrameReader, FrameStoreError
from alpr_shared.schemas import Codec, FrameReady


@dataclass(frozen=True)
class Received:
    camera: str
    seq: int
    shape: tuple[int, int, int]
    captured_at_ns: int
    pts: float | None
    at: float  # monotonic time of arrival here
    mean: float  # mean pixel value (a cheap check that real pixels were read)


class IngestProcess:
    def __init__(self, workdir: Path, config: dict[str, Any], *, metrics_port: int) -> None:
        self.workdir = workdir
        self.config_path = workdir / "alpr.yaml"
        self.log_path = workdir / "ingest.log"
        self.metrics_port = metrics_port
        self.config = config
        self.frames: dict[str, list[Received]] = defaultdict(list)
        self.stale = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.returncode: int | None = None

    def write_config(self, config: dict[str, Any] | None = None) -> None:
        if config is not None:
            self.config = config
        full = {
            "log": {"format": "json"},
            "services": {"ingest": {"metrics_port": self.metrics_port}},
            **self.config,
        }
        self.config_path.write_text(yaml.safe_dump(full))

    @property
    def endpoint(self) -> str:
        runtime = self.config.get("runtime_dir", "/tmp/alpr")  # noqa: S108 - the settings' own default
        return f"ipc://{runtime}/frames.sock"

    def start(self) -> None:
        self.write_config()
        self._thread = threading.Thread(target=self._subscribe, name="ingest-watch", daemon=True)
        self._thread.start()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "alpr_shared.cli", "ingest", "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
            )

    def sighup(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 30.0) -> int:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.returncode = None if proc is None else proc.returncode
        return -1 if self.returncode is None else self.returncode

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- what it did -----------------------------------------------------------------------------------

    def received(self, camera: str) -> list[Received]:
        with self._lock:
            return list(self.frames.get(camera, []))

    def count(self, camera: str) -> int:
        with self._lock:
            return len(self.frames.get(camera, []))

    def logs(self) -> list[dict[str, Any]]:
        out = []
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"event": "_raw", "line": line})
        return out

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def events(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e for e in self.logs() if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
        ]

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
        return body.decode()

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one series of `/metrics` (None when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics_text().splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            series, _, rest = key.partition("{")
            if series != name:
                continue
            got = ",".join(sorted(part for part in rest.rstrip("}").split(",") if part))
            if got == want:
                return float(value)
        return None

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(
                    f"ingest exited ({self._proc.returncode}) while waiting for {what}\n"
                    + self.log_text()[-4000:]
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n" + self.log_text()[-4000:])

    # --- the subscriber thread ---------------------------------------------------------------------------

    def _subscribe(self) -> None:
        codec = Codec(FrameReady)
        context = zmq.Context()
        sock = context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.setsockopt(zmq.RECONNECT_IVL, 10)  # join a just-started ingest quickly (PUB drops until then)
        sock.connect(self.endpoint)
        reader = FrameReader()
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                message = codec.decode(sock.recv())
                try:
                    pixels = reader.copy(message.frame)
                except FrameStoreError:
                    with self._lock:
                        self.stale += 1
                    continue
                ref = message.frame
                item = Received(
                    camera=message.camera_id,
                    seq=ref.seq,
                    shape=(ref.height, ref.width, ref.channels),
                    captured_at_ns=message.captured_at_ns,
                    pts=message.source_pts_s,
                    at=time.monotonic(),
                    mean=float(pixels.mean()),
                )
                with self._lock:
                    self.frames[message.camera_id].append(item)
        finally:
            reader.close()
            sock.close(0)
            context.term()


def ensure_runtime_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
