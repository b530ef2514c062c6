"""A writer killed with SIGKILL leaves its ring behind; a restarted writer (or `alpr shm reclaim`)
reclaims it, and nothing is leaked in /dev/shm once everything has stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from alpr_shared import framestore as fs
from alpr_shared.tools.synthvideo import make_pan_video

pytestmark = pytest.mark.integration


def _rings(namespace: str) -> list[str]:
    return sorted(p.name for p in fs.SHM_DIR.glob(f"alpr.{namespace}.*"))


def _header(name: str) -> fs.RingHeader | None:
    # A ring being created has no header for a moment (created, then sized, then written): not yet.
    try:
        return fs.read_ring_header(name)
    except (FileNotFoundError, fs.FrameStoreError):
        return None


def _writer_of(name: str) -> int | None:
    header = _header(name)
    return None if header is None else header.writer_pid


def _last_seq(name: str) -> int:
    header = _header(name)
    return 0 if header is None else header.last_seq


def _wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def test_sigkilled_writer_is_reclaimed_by_the_next_writer() -> None:
    namespace = f"crash{uuid.uuid4().hex[:8]}"
    name = fs.segment_name(namespace, "cam1")
    script = textwrap.dedent(
        f"""
        import time, numpy as np
        from alpr_shared.framestore import FrameWriter
        w = FrameWriter({name!r}, slot_count=4, max_height=64, max_width=64)
        w.write(np.zeros((64, 64, 3), np.uint8))
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        header = fs.read_ring_header(name)
        assert header.writer_pid == proc.pid
        with pytest.raises(fs.FrameStoreError, match="held by a running writer"):
            fs.FrameWriter(name, slot_count=4, max_height=64, max_width=64)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert _rings(namespace) == [name], "SIGKILL gives the writer no chance to unlink: the ring is left"
    with fs.FrameWriter(name, slot_count=4, max_height=64, max_width=64) as restarted:
        assert restarted.reclaimed_stale
        assert fs.read_ring_header(name).writer_pid == os.getpid()
    assert _rings(namespace) == []


def test_reclaim_sweeps_rings_of_dead_writers_only() -> None:
    namespace = f"sweep{uuid.uuid4().hex[:8]}"
    dead = fs.segment_name(namespace, "dead")
    script = (
        "import os, numpy as np; from alpr_shared.framestore import FrameWriter; "
        f"w = FrameWriter({dead!r}, slot_count=2, max_height=8, max_width=8); os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    with fs.FrameWriter(
        fs.segment_name(namespace, "alive"), slot_count=2, max_height=8, max_width=8
    ) as alive:
        assert _rings(namespace) == sorted([dead, alive.name])
        out = subprocess.run(
            [sys.executable, "-m", "alpr_shared.cli", "shm", "list", "--namespace", namespace],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "STALE" in out and dead in out
        assert fs.reclaim_stale_segments(namespace) == [dead]
        assert _rings(namespace) == [alive.name]
    assert _rings(namespace) == []


def test_ingest_service_killed_and_restarted_leaks_no_shared_memory(tmp_path: Path) -> None:
    namespace = f"ingest{uuid.uuid4().hex[:8]}"
    video = make_pan_video(tmp_path / "v.mp4", seconds=1.0, fps=10, width=320, height=240)
    config = tmp_path / "alpr.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime_dir": str(tmp_path / "run"),
                "log": {"format": "json"},
                "frame_store": {
                    "namespace": namespace,
                    "max_width": 320,
                    "max_height": 240,
                    "slots_per_camera": 4,
                },
                "cameras": [
                    {"id": "a", "source": str(video), "loop": True},
                    {"id": "b", "source": str(video), "loop": True},
                ],
            }
        )
    )
    cmd = [sys.executable, "-m", "alpr_shared.cli", "ingest", "--config", str(config), "--metrics-port", "0"]
    expected = [fs.segment_name(namespace, "a"), fs.segment_name(namespace, "b")]

    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _rings(namespace) == expected, what="ingest to create both rings")
        _wait_for(lambda: _last_seq(expected[0]) > 3, what="frames to be written")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert _rings(namespace) == expected  # left behind by the crash

    second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(
            lambda: all(_writer_of(n) == second.pid for n in expected),
            what="the restarted ingest to reclaim both rings",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=20)
    assert second.returncode == 0, stderr
    assert "stale_rings_reclaimed" in stderr
    assert _rings(namespace) == []


def test_dead_writer_is_reclaimed_even_if_its_recorded_pid_is_a_live_process_here() -> None:
    """A pid recorded in another PID namespace may name a live process in ours (pid 1 is always
    alive): the lock, not the pid, says the writer is gone."""
    namespace = f"pidns{uuid.uuid4().hex[:8]}"
    name = fs.segment_name(namespace, "cam1")
    me = psutil.Process()
    script = textwrap.dedent(
        f"""
        import os, struct
        from alpr_shared import framestore as fs
        w = fs.FrameWriter({name!r}, slot_count=2, max_height=8, max_width=8)
        with (fs.SHM_DIR / {name!r}).open("r+b") as fh:  # record a pid that is alive in the test's namespace
            fields = list(fs._HEADER.unpack(fh.read(fs._HEADER.size)))
            fields[6], fields[7] = {me.pid}, {me.create_time()!r}
            fh.seek(0)
            fh.write(fs._HEADER.pack(*fields))
        os.kill(os.getpid(), 9)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    header = fs.read_ring_header(name)
    assert (header.writer_pid, header.writer_start_time) == (me.pid, me.create_time())
    assert not fs.ring_is_live(name)
    with fs.FrameWriter(name, slot_count=2, max_height=8, max_width=8) as restarted:
        assert restarted.reclaimed_stale
    assert _rings(namespace) == []


def test_writer_in_another_pid_namespace_is_seen_live_and_reclaimed_once_killed() -> None:
    """A real second PID namespace (`unshare --pid`, as a container): the writer is pid 1 there, and
    pid 1 here is another process. Its ring must count as live until it dies, then be reclaimed."""
    namespace = f"pidns{uuid.uuid4().hex[:8]}"
    name = fs.segment_name(namespace, "cam1")
    script = textwrap.dedent(
        f"""
        import os, time, numpy as np
        from alpr_shared.framestore import FrameWriter
        w = FrameWriter({name!r}, slot_count=2, max_height=8, max_width=8)
        w.write(np.zeros((8, 8, 3), np.uint8))
        print("ready", os.getpid(), flush=True)
        time.sleep(60)
        """
    )
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["ready", "1"], "the writer runs as pid 1 of its namespace"
        header = fs.read_ring_header(name)
        assert header.writer_pid == 1  # pid 1 here is our own init, started long before the writer
        assert fs.ring_is_live(name)
        assert fs.reclaim_stale_segments(namespace) == []
        with pytest.raises(fs.FrameStoreError, match="held by a running writer"):
            fs.FrameWriter(name, slot_count=2, max_height=8, max_width=8)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    _wait_for(lambda: not fs.ring_is_live(name), timeout=10, what="the killed writer's lock to drop")
    assert fs.reclaim_stale_segments(namespace) == [name]
    assert _rings(namespace) == []
