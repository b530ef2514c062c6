"""Helpers for the `alpr run` end-to-end tests: start the command as a user would, follow its output, find
its children, read what it stored."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml
from rapidfuzz.distance import Levenshtein

from alpr_detect.models import ModelStore, default_models_dir, ensure_provisioned
from alpr_shared.framestore import SHM_DIR
from alpr_shared.run.plan import free_port
from alpr_shared.tools.demovideo import DemoVideo, make_demo_video

# One car per camera: the demo video cuts from car to car with a 0.5 s blank, and ByteTrack (1 s of lost
# frames by default) can carry a track across such a cut when the plates sit at similar places, merging
# two cars. Real traffic does not teleport; three cameras with one car each test what matters here.
DEMO_SEEDS = (0, 1, 3)


def demo_videos(folder: Path) -> list[DemoVideo]:
    """One short demo video per camera: one car each, 6 s at 3 fps, so that detect sees every car several
    times even when the shared 2-core machine runs it at 1-2 frames per second (it sheds what it misses)."""
    ensure_provisioned(ModelStore(default_models_dir()), "plate-yolov8n")
    return [
        make_demo_video(folder / f"gate-{i}.mp4", count=1, seed=seed, seconds_per_photo=6.0, fps=3)
        for i, seed in enumerate(DEMO_SEEDS, start=1)
    ]


def assert_one_to_one(expected: list[str], got: list[str], output: str) -> None:
    """As many events as expected, and each expected plate matched by its own event within one character."""
    assert len(got) == len(expected), (expected, got, output)
    unmatched = list(got)
    for plate in expected:
        best = min(unmatched, key=lambda p: Levenshtein.distance(p, plate))
        assert Levenshtein.distance(best, plate) <= 1, (plate, expected, got, output)
        unmatched.remove(best)


def base_config(folder: Path) -> Path:
    """The tests' base --config: the demo's plates are large (170-250 px wide in 720p), so detect's 640 px
    input finds them at less than half the work of the default 960 (which exists for small plates)."""
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump({"detect": {"input_size": 640}}))
    return path


class AlprRun:
    """`alpr run …` as its own process; stdout is collected line by line by a thread."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None) -> None:
        # Outside pytest's temporary tree: pytest keeps /tmp/pytest-of-<user> at mode 0700 (and resets it
        # at every session start, other engineers' sessions too), which locks out the OS user that the
        # embedded PostgreSQL runs as when the tests run as root.
        self.data_dir = Path(tempfile.mkdtemp(prefix="alpr-run-test-"))
        self.data_dir.chmod(0o755)
        data_dir = self.data_dir
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alpr_shared.cli",
                "run",
                *args,
                "--data-dir",
                str(data_dir),
                "--status",
                "plain",
                # A free API port of its own: the default 8080 may be taken by another test at any moment.
                "--api-port",
                str(free_port()),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            match = regex.search(self.output)
            if match:
                return match
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader take the last lines
                match = regex.search(self.output)
                if match:
                    return match
                raise AssertionError(
                    f"alpr run exited ({self.proc.returncode}) before {pattern!r}:\n{self.output}"
                )
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.output}")

    def children(self) -> dict[str, psutil.Process]:
        """Stage name → process (`alpr_shared.cli <stage>`, `postgres` for the database)."""
        out: dict[str, psutil.Process] = {}
        workers = 0
        for child in psutil.Process(self.proc.pid).children():
            try:
                cmd = child.cmdline()
            except psutil.Error:
                continue
            if "alpr_shared.cli" in cmd:
                name = cmd[cmd.index("alpr_shared.cli") + 1]
                if name == "ocr-worker":
                    workers += 1
                    name = f"ocr-worker-{workers}"
                out[name] = child
            elif cmd and cmd[0].endswith("/postgres"):
                out["postgres"] = child
        return out

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def interrupt(self, timeout: float = 90.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def database_url(self) -> str:
        config = yaml.safe_load((self.data_dir / "run.yaml").read_text())
        return str(config["database"]["url"])

    def namespace(self) -> str:
        config = yaml.safe_load((self.data_dir / "run.yaml").read_text())
        return str(config["frame_store"]["namespace"])


def rings_of(namespace: str) -> list[str]:
    return sorted(p.name for p in SHM_DIR.glob(f"alpr.{namespace}.*"))


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive
