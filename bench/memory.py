"""Memory: RSS of an idle service process and of the frame ring per camera, against a bare interpreter.

Measured in separate processes, each after its RSS has settled:

1. baseline: a bare `python -c "import time; time.sleep(…)"` from the same venv;
2. an idle service: a fresh interpreter running the project's `run_service()` (uvloop, ZeroMQ context,
   metrics/health HTTP server, structlog, settings) with a main that only awaits `ctx.stopping`;
3. one camera's ring: a `FrameWriter` with the default frame-store settings (16 slots of 1920×1080×3)
   that has written every slot, and a `FrameReader` process that has read every slot: the mapping's
   Rss/Pss from /proc/PID/smaps and the pages /dev/shm holds for it;
4. the real `alpr ingest` on 4 cameras looping a generated 1080p video: the whole process, and how much
   of it is the rings.

Budgets (ours; the issue gives none): idle service RSS ≤ 150 MB, and a ring costs no more resident memory
than `ring_size()` says, however many processes map it (PSS summed over writer and reader).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench/memory.py` runs as a script

import numpy as np
import psutil
import yaml

from alpr_shared.framestore import (
    FrameReader,
    FrameWriter,
    read_ring_header,
    reclaim_stale_segments,
    ring_size,
    segment_name,
)
from alpr_shared.schemas import FrameRef
from alpr_shared.settings import FrameStoreSettings
from alpr_shared.tools.synthvideo import make_pan_video
from bench._common import SHM_DIR, bench_parser, finish, machine_line, shm_segments, table

MB = 1e6
IDLE_RSS_BUDGET_MB = 150.0
INGEST_CAMERAS = 4
WIDTH, HEIGHT, CHANNELS = 1920, 1080, 3


# --- measuring --------------------------------------------------------------------------------------------


@dataclass
class Memory:
    rss: int
    uss: int
    pss: int
    settled_s: float


def settle(pid: int, timeout_s: float) -> Memory:
    """Wait until the RSS of `pid` stays within 1 % for a while (1 s, or 3 s when allowed 20 s or more),
    at most `timeout_s`, then measure it."""
    window_s = 1.0 if timeout_s < 20 else 3.0
    proc = psutil.Process(pid)
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    while True:
        now = time.monotonic()
        samples.append((now, proc.memory_info().rss))
        recent = [rss for t, rss in samples if t >= now - window_s]
        if now - started >= window_s and max(recent) - min(recent) <= 0.01 * max(recent):
            break
        if now - started >= timeout_s:
            break
        time.sleep(0.1)
    full = proc.memory_full_info()
    return Memory(rss=full.rss, uss=full.uss, pss=full.pss, settled_s=time.monotonic() - started)


@dataclass
class Mapping:
    rss: int = 0
    pss: int = 0


def shm_mappings(pid: int, segment_prefix: str) -> dict[str, Mapping]:
    """Rss/Pss of each mapping of /dev/shm/<segment_prefix>* in process `pid` (from /proc/PID/smaps)."""
    out: dict[str, Mapping] = {}
    current: Mapping | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            path = head[5] if len(head) >= 6 else ""
            name = Path(path).name
            if path.startswith(str(SHM_DIR)) and name.startswith(segment_prefix):
                current = out.setdefault(name, Mapping())
            else:
                current = None
        elif current is not None and head[0] in ("Rss:", "Pss:"):
            value = int(head[1]) * 1024
            if head[0] == "Rss:":
                current.rss += value
            else:
                current.pss += value
    return out


def shm_allocated(name: str) -> int:
    """Bytes of tmpfs pages a /dev/shm segment actually holds."""
    return (SHM_DIR / name).stat().st_blocks * 512


def _wait_line(proc: subprocess.Popen[str], expected: str, timeout_s: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process {proc.pid} exited before printing {expected!r}")
        if line.strip() == expected:
            return
    raise TimeoutError(f"process {proc.pid} did not print {expected!r} within {timeout_s}s")


def _stop(proc: subprocess.Popen[Any], what: str) -> int:
    """SIGTERM, wait (bounded), and return the exit code; kill only if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        raise RuntimeError(f"{what} did not stop within 20 s of SIGTERM") from None


# --- 1. and 2.: bare interpreter and idle service ---------------------------------------------------------


def measure_bare(timeout_s: float) -> Memory:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        time.sleep(0.5)  # interpreter start-up
        return settle(proc.pid, timeout_s)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# The idle service runs in a fresh interpreter that imports only what the runtime imports (not this
# bench's numpy/OpenCV): the project's `run_service()` with a main that waits for the stop signal.
IDLE_SERVICE = """
import sys
from pathlib import Path

from alpr_shared.lifecycle import run_service
from alpr_shared.settings import load_settings


async def service_main(ctx):
    ctx.health.set_ready()
    print("READY", flush=True)
    await ctx.stopping.wait()


config = Path(sys.argv[1])
sys.exit(run_service("ingest", load_settings(config), service_main, config_path=config, metrics_port=0))
"""


def measure_idle_service(workdir: Path, timeout_s: float) -> tuple[Memory, int]:
    config = workdir / "idle.yaml"
    config.write_text(
        yaml.safe_dump(
            {"runtime_dir": str(workdir / "run-idle"), "log": {"format": "json", "level": "warning"}}
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", IDLE_SERVICE, str(config)], stdout=subprocess.PIPE, text=True
    )
    try:
        _wait_line(proc, "READY", 60)
        mem = settle(proc.pid, timeout_s)
    finally:
        code = _stop(proc, "idle service")
    return mem, code


# --- 3.: one camera's ring, one writer and one reader -----------------------------------------------------


def _ring_writer(name: str, store: FrameStoreSettings, results: Any, stop: Any) -> None:
    with FrameWriter(
        name, slot_count=store.slots_per_camera, max_height=store.max_height, max_width=store.max_width
    ) as writer:
        frame = np.full((store.max_height, store.max_width, CHANNELS), 7, dtype=np.uint8)
        refs = [writer.write(frame) for _ in range(store.slots_per_camera)]
        results.put(("writer", os.getpid(), refs))
        stop.wait(120)


def _ring_reader(refs: list[FrameRef], results: Any, stop: Any) -> None:
    with FrameReader() as reader:
        total = 0
        for ref in refs:
            with reader.frame(ref) as pixels:
                total += int(pixels.sum(dtype=np.uint64))  # reads (and so maps) every page
        results.put(("reader", os.getpid(), total))
        stop.wait(120)


@dataclass
class RingReport:
    name: str
    size: int  # ring_size(): what the segment reserves
    allocated: int  # tmpfs pages it holds after every slot was written
    writer_alone: Mapping  # writer's mapping before any reader attached
    writer: Mapping  # with a reader attached
    reader: Mapping


def measure_ring(namespace: str) -> RingReport:
    store = FrameStoreSettings(namespace=namespace)
    name = segment_name(namespace, "cam0")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    stop = ctx.Event()
    writer = ctx.Process(target=_ring_writer, args=(name, store, results, stop), name="bench-ring-writer")
    reader: Any = None
    writer.start()
    try:
        _, writer_pid, refs = results.get(timeout=60)
        writer_alone = shm_mappings(writer_pid, name)[name]
        allocated = shm_allocated(name)
        reader = ctx.Process(target=_ring_reader, args=(refs, results, stop), name="bench-ring-reader")
        reader.start()
        _, reader_pid, _ = results.get(timeout=60)
        report = RingReport(
            name=name,
            size=ring_size(store.slots_per_camera, store.max_height * store.max_width * CHANNELS),
            allocated=allocated,
            writer_alone=writer_alone,
            writer=shm_mappings(writer_pid, name)[name],
            reader=shm_mappings(reader_pid, name)[name],
        )
    finally:
        stop.set()
        for proc in (reader, writer):
            if proc is not None:
                proc.join(timeout=15)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=5)
    return report


# --- 4.: the real ingest ---------------------------------------------------------------------------------


@dataclass
class IngestReport:
    memory: Memory
    rings: dict[str, Mapping]
    exit_code: int
    cameras: int


def measure_ingest(workdir: Path, namespace: str, timeout_s: float) -> IngestReport:
    video = make_pan_video(workdir / "pan1080.mp4", seconds=2.0, fps=30.0, width=WIDTH, height=HEIGHT)
    cameras = [f"cam{i}" for i in range(INGEST_CAMERAS)]
    config = workdir / "ingest.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "runtime_dir": str(workdir / "run-ingest"),
                "log": {"format": "json", "level": "warning"},
                "frame_store": {"namespace": namespace},
                "cameras": [{"id": c, "source": str(video), "loop": True, "realtime": True} for c in cameras],
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpr_shared.cli", "ingest", "--config", str(config), "--metrics-port", "0"],
        stdout=subprocess.DEVNULL,
    )
    slots = FrameStoreSettings().slots_per_camera
    names = [segment_name(namespace, c) for c in cameras]
    try:
        deadline = time.monotonic() + 60
        while True:  # every slot of every ring written at least once (all its pages touched)
            if proc.poll() is not None:
                raise RuntimeError(f"alpr ingest exited with {proc.returncode} before filling its rings")
            try:
                if all(read_ring_header(n).last_seq > slots for n in names):
                    break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("alpr ingest did not fill its rings within 60 s")
            time.sleep(0.1)
        memory = settle(proc.pid, timeout_s)
        rings = shm_mappings(proc.pid, f"alpr.{namespace}.")
    finally:
        code = _stop(proc, "alpr ingest")
    return IngestReport(memory=memory, rings=rings, exit_code=code, cameras=len(cameras))


# --- report ----------------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / MB:.1f}"


def main() -> int:
    args = bench_parser(__doc__.splitlines()[0] if __doc__ else None).parse_args()

    settle_s = 4.0 if args.quick else 20.0  # longest wait for a process's RSS to settle
    started = time.monotonic()
    print(machine_line())
    namespace = f"benchmem{os.getpid()}"
    store = FrameStoreSettings()
    try:
        with tempfile.TemporaryDirectory(prefix="alpr-bench-mem-") as tmp:
            workdir = Path(tmp)
            bare = measure_bare(settle_s)
            idle, idle_code = measure_idle_service(workdir, settle_s)
            ring = measure_ring(namespace)
            ingest = measure_ingest(workdir, namespace, settle_s)
    finally:
        # Every ring's owner has exited by now: anything left is a leak. Report it, then reclaim it.
        leaked = shm_segments(f"alpr.{namespace}.")
        if leaked:
            reclaim_stale_segments(namespace)

    rows = [
        ["bare python (baseline)", mb(bare.rss), mb(bare.uss), mb(bare.pss), f"{bare.settled_s:.1f}"],
        ["idle service (run_service)", mb(idle.rss), mb(idle.uss), mb(idle.pss), f"{idle.settled_s:.1f}"],
        [
            f"alpr ingest, {ingest.cameras} × 1080p cameras",
            mb(ingest.memory.rss),
            mb(ingest.memory.uss),
            mb(ingest.memory.pss),
            f"{ingest.memory.settled_s:.1f}",
        ],
    ]
    print()
    print(table(["process", "RSS MB", "USS MB", "PSS MB", "settled after s"], rows))
    ratio = idle.rss / bare.rss
    print(
        f"\nidle service: {mb(idle.rss)} MB RSS = {ratio:.1f}× a bare interpreter ({mb(bare.rss)} MB); "
        f"{mb(idle.uss)} MB of it private (USS). Our budget: ≤ {IDLE_RSS_BUDGET_MB:.0f} MB RSS."
    )

    print(
        f"\nring per camera ({store.slots_per_camera} slots × {store.max_width}×{store.max_height}×{CHANNELS}, "
        f"segment {ring.name}):"
    )
    ring_rows = [
        ["ring_size()", mb(ring.size), "", ""],
        [f"{SHM_DIR} pages after every slot was written", mb(ring.allocated), "", ""],
        ["writer mapping, no reader yet", "", mb(ring.writer_alone.rss), mb(ring.writer_alone.pss)],
        ["writer mapping, one reader attached", "", mb(ring.writer.rss), mb(ring.writer.pss)],
        ["reader mapping (read every slot)", "", mb(ring.reader.rss), mb(ring.reader.pss)],
    ]
    print(table(["", "MB", "Rss MB", "Pss MB"], ring_rows))
    ring_pss_total = ring.writer.pss + ring.reader.pss
    print(
        f"the ring is resident once: writer + reader PSS = {mb(ring_pss_total)} MB for a "
        f"{mb(ring.size)} MB ring; each process's RSS shows all {mb(ring.writer.rss)} MB of it, so RSS "
        "double-counts a ring across processes (PSS does not)."
    )

    ingest_ring_rss = sum(m.rss for m in ingest.rings.values())
    own = ingest.memory.rss - ingest_ring_rss
    print(
        f"\nalpr ingest with {ingest.cameras} cameras: {mb(ingest.memory.rss)} MB RSS, of which "
        f"{mb(ingest_ring_rss)} MB are its {len(ingest.rings)} rings "
        f"({mb(ingest_ring_rss / max(1, len(ingest.rings)))} MB each) and {mb(own)} MB the process itself "
        f"({mb(own - idle.rss)} MB over the idle service: OpenCV, decoders, decoded frames, threads); "
        f"exit code {ingest.exit_code} on SIGTERM. Its USS includes the rings while no reader maps them."
    )
    print(f"leaked /dev/shm segments: {len(leaked)}; bench took {time.monotonic() - started:.0f} s")

    ring_ok = (
        ring.allocated <= ring.size and ring_pss_total <= ring.size and ring.writer_alone.rss <= ring.size
    )
    passed = (
        idle.rss / MB <= IDLE_RSS_BUDGET_MB
        and ring_ok
        and idle_code == 0
        and ingest.exit_code == 0
        and len(ingest.rings) == ingest.cameras
        and not leaked
    )
    metrics = {
        "idle_service_rss_mb": mb(idle.rss),
        "bare_python_rss_mb": mb(bare.rss),
        "ratio": f"{ratio:.1f}x",
        "ring_mb_per_camera": mb(ring.allocated),
        "ring_size_mb": mb(ring.size),
        f"ingest_{ingest.cameras}cam_rss_mb": mb(ingest.memory.rss),
        "leaked_shm": str(len(leaked)),
    }
    return finish(
        "memory", metrics, f"idle_rss<={IDLE_RSS_BUDGET_MB:.0f}MB(own_budget),ring<=ring_size", passed
    )


if __name__ == "__main__":
    sys.exit(main())
