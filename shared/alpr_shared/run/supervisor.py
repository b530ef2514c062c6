"""Child processes of `alpr run`: start, watch, restart with backoff, stop in order, and never leave one
behind.

Each child runs in a session of its own (so a Ctrl-C in the terminal reaches only the supervisor, which
then stops the stages in pipeline order) and gets `PR_SET_PDEATHSIG`: if the supervisor itself dies, even
by SIGKILL, the kernel sends the child `death_signal` (SIGTERM for our services, which then drain and
release their shared memory; SIGINT, a fast shutdown, for PostgreSQL). Stopping a child is SIGTERM (or
the spec's stop signal), a bounded wait, then SIGKILL to its whole process group.

Restart policy (`RestartPolicy`): an unexpected exit is restarted after an exponential backoff; a child
that keeps crashing soon after each start (`give_up_after` crashes in a row, each within `fast_crash_s`
of its start) is given up, and so is one that exits with code 2 (its configuration is wrong; a restart
cannot fix that). Giving up ends the run with a message naming the child, its exit code and the end of
its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from alpr_shared.run.plan import ProcessSpec

PR_SET_PDEATHSIG = 1
EXIT_CONFIG = 2

ChildState = Literal["idle", "starting", "running", "ready", "backoff", "stopping", "stopped", "failed"]


@dataclass(frozen=True)
class RestartPolicy:
    # First delay before a restart; it doubles per crash in a row up to `backoff_max_s`.
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    # A crash this soon after a start counts as "fast"; this many fast crashes in a row: give up.
    fast_crash_s: float = 20.0
    give_up_after: int = 5
    # SIGTERM, then this long to drain, then SIGKILL (the services' own drain timeout is 10 s).
    stop_timeout_s: float = 20.0

    def delay(self, crashes_in_row: int) -> float:
        delay: float = self.backoff_initial_s * 2.0 ** max(crashes_in_row - 1, 0)
        return min(delay, self.backoff_max_s)


def _libc_prctl() -> Callable[[int, int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    prctl: Callable[[int, int], int] = libc.prctl
    return prctl


def child_setup(parent_pid: int, death_signal: int) -> Callable[[], None]:
    """preexec_fn: die with the supervisor (Linux), and do not outlive a parent that died during fork."""
    prctl = _libc_prctl()

    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, death_signal)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return setup


@dataclass
class Child:
    spec: ProcessSpec
    log_path: Path
    death_signal: int = signal.SIGTERM
    stop_signal: int = signal.SIGTERM
    state: ChildState = "idle"
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    crashes_in_row: int = 0
    last_exit: int | None = None
    expected_exit: bool = False
    _exited: asyncio.Event = field(default_factory=asyncio.Event)
    _log: IO[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(f.tell() - 16_384, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        # JSON log lines can carry a whole traceback: keep each line readable in a terminal.
        return "\n".join(
            line if len(line) <= 400 else line[:200] + " … " + line[-200:]
            for line in text.splitlines()[-lines:]
        )


class Supervisor:
    """Owns the child processes; `close()` (or `stop_all`) leaves none running."""

    def __init__(
        self,
        children: list[Child],
        *,
        policy: RestartPolicy,
        env: dict[str, str],
        on_exit: Callable[[Child, int], None] | None = None,
    ) -> None:
        self.children = {c.name: c for c in children}
        self.policy = policy
        self.env = env
        self.on_exit = on_exit
        self._watchers: set[asyncio.Task[None]] = set()

    async def start(self, child: Child) -> None:
        spec = child.spec
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        if child._log is not None:
            child._log.close()
        child._log = child.log_path.open("ab")
        child._log.write(
            f"\n--- alpr run: starting {spec.name} at {time.strftime('%H:%M:%S')} ---\n".encode()
        )
        child._log.flush()
        child.expected_exit = False
        child._exited = asyncio.Event()
        child.state = "starting"
        child.process = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=child._log,
            stderr=child._log,
            env={**self.env, **spec.env},
            start_new_session=True,
            preexec_fn=child_setup(os.getpid(), child.death_signal),
            user=spec.user,
        )
        child.started_at = time.monotonic()
        child.state = "running"
        watcher = asyncio.create_task(self._watch(child, child.process), name=f"watch-{spec.name}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, child: Child, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if child.process is not process:
            return
        child.last_exit = code
        if child._log is not None:
            child._log.close()
            child._log = None
        child._exited.set()
        if child.expected_exit:
            child.state = "stopped"
            return
        quick = time.monotonic() - child.started_at < self.policy.fast_crash_s
        child.crashes_in_row = child.crashes_in_row + 1 if quick else 1
        child.state = "backoff"
        if self.on_exit is not None:
            self.on_exit(child, code)

    def should_give_up(self, child: Child) -> bool:
        return child.last_exit == EXIT_CONFIG or child.crashes_in_row >= self.policy.give_up_after

    async def stop(self, child: Child, timeout: float | None = None) -> int | None:
        """SIGTERM (or the child's stop signal), wait, SIGKILL the process group; returns the exit code."""
        process = child.process
        if process is None or process.returncode is not None:
            child.state = "stopped" if child.state != "failed" else "failed"
            return process.returncode if process is not None else None
        child.expected_exit = True
        child.state = "stopping"
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(child.stop_signal)
        try:
            await asyncio.wait_for(child._exited.wait(), timeout or self.policy.stop_timeout_s)
        except TimeoutError:
            self.kill(child)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child._exited.wait(), 5.0)
        self._kill_group(process.pid)  # helpers a child started (e.g. a GStreamer process) go too
        child.state = "stopped"
        return process.returncode

    def kill(self, child: Child) -> None:
        if child.process is not None and child.process.returncode is None:
            child.expected_exit = True
            self._kill_group(child.process.pid)

    @staticmethod
    def _kill_group(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    async def stop_all(self, groups: list[list[Child]]) -> dict[str, int | None]:
        """Stop group after group (each group's members together); returns every exit code."""
        codes: dict[str, int | None] = {}
        for group in groups:
            results = await asyncio.gather(*(self.stop(c) for c in group))
            codes.update({c.name: code for c, code in zip(group, results, strict=True)})
        return codes

    async def close(self) -> None:
        """Last resort: SIGKILL anything still running, then wait for the watchers."""
        for child in self.children.values():
            self.kill(child)
        for child in self.children.values():
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.process.wait(), 5.0)
            if child._log is not None:
                child._log.close()
                child._log = None
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
