"""Helpers shared by the benchmarks: `--quick`, the machine line, percentiles, CPU % of child processes,
and the final `BENCH …` line that CI and BENCHMARKS.md read.

Every bench prints its figures, a ratio to a baseline measured in the same run, and ends with exactly one
line `BENCH <name> <metric>=<value> … target=<target> PASS|FAIL`; `finish()` prints it and returns the
exit code (non-zero on FAIL).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SHM_DIR = Path("/dev/shm")  # noqa: S108 - where Linux keeps POSIX shared memory


def bench_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="short runs (the whole bench finishes in under a minute)"
    )
    return parser


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    mem_gb = psutil.virtual_memory().total / 2**30
    return (
        f"machine: {os.cpu_count()} cores ({cpu_model()}), {mem_gb:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100, linear interpolation); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class CpuMeter:
    """CPU time of a set of processes between `start()` and `stop()`, as % of one core (200 % = 2 cores).

    Threads count with their process (ZeroMQ's I/O thread included). A process that exits before
    `stop()` contributes what it used up to its last sample.
    """

    groups: dict[str, list[int]]
    _start: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _t0: float = 0.0
    _t1: float = 0.0

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        return float(t.user + t.system)

    def _sample(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for pids in self.groups.values():
            for pid in pids:
                value = self._cpu(pid)
                if value is not None:
                    out[pid] = value
        return out

    def start(self) -> None:
        self._start = self._sample()
        self._last = dict(self._start)
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self._last.update(self._sample())
        self._t1 = time.monotonic()

    def percent(self, group: str) -> float:
        wall = self._t1 - self._t0
        if wall <= 0:
            return math.nan
        used = sum(self._last.get(p, 0.0) - self._start.get(p, 0.0) for p in self.groups[group])
        return 100.0 * used / wall


def shm_segments(prefix: str) -> list[str]:
    """Names in /dev/shm that start with `prefix` (for leak checks)."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


def fmt(value: float, digits: int = 2) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain fixed-width table: first column left-aligned, the others right-aligned."""
    body = [list(r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])


def finish(name: str, metrics: dict[str, str], target: str, passed: bool) -> int:
    """Print the final BENCH line (the last line of the output) and return the exit code."""
    fields = " ".join(f"{k}={v}" for k, v in metrics.items())
    print(f"BENCH {name} {fields} target={target} {'PASS' if passed else 'FAIL'}", flush=True)
    return 0 if passed else 1
