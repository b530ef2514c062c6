"""`alpr run`'s supervisor with small real child processes: exits seen, restart backoff, giving up, stop
with SIGKILL fallback, and children that die with the supervisor (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from alpr_shared.run.plan import ProcessSpec
from alpr_shared.run.supervisor import Child, RestartPolicy, Supervisor


def _child(tmp_path: Path, name: str, code: str) -> Child:
    spec = ProcessSpec(name, "ingest", [sys.executable, "-c", code], None)
    return Child(spec, tmp_path / f"{name}.log")


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(backoff_initial_s=0.5, backoff_max_s=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_an_unexpected_exit_is_reported_and_repeated_fast_crashes_give_up(tmp_path: Path) -> None:
    exits: list[tuple[str, int]] = []
    child = _child(tmp_path, "crasher", "import sys; print('boom', file=sys.stderr); sys.exit(3)")
    sup = Supervisor(
        [child],
        policy=RestartPolicy(give_up_after=3),
        env={},
        on_exit=lambda c, code: exits.append((c.name, code)),
    )
    try:
        for _ in range(3):
            await sup.start(child)
            await asyncio.wait_for(child._exited.wait(), 10)
            await asyncio.sleep(0.05)
        assert exits == [("crasher", 3)] * 3
        assert child.crashes_in_row == 3 and sup.should_give_up(child)
        assert "boom" in child.log_tail()
    finally:
        await sup.close()


async def test_a_configuration_error_gives_up_at_once(tmp_path: Path) -> None:
    child = _child(tmp_path, "bad-config", "import sys; sys.exit(2)")
    sup = Supervisor([child], policy=RestartPolicy(), env={}, on_exit=lambda c, code: None)
    try:
        await sup.start(child)
        await asyncio.wait_for(child._exited.wait(), 10)
        assert sup.should_give_up(child)
    finally:
        await sup.close()


async def test_stop_sends_sigterm_then_kills_what_does_not_leave(tmp_path: Path) -> None:
    polite = _child(tmp_path, "polite", "import time\nwhile True: time.sleep(0.1)")
    stubborn = _child(
        tmp_path,
        "stubborn",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
        "while True: time.sleep(0.1)",
    )
    exits: list[str] = []
    sup = Supervisor(
        [polite, stubborn],
        policy=RestartPolicy(stop_timeout_s=1.0),
        env={},
        on_exit=lambda c, _: exits.append(c.name),
    )
    try:
        await sup.start(polite)
        await sup.start(stubborn)
        deadline = time.monotonic() + 10
        while "ready" not in stubborn.log_tail():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        codes = await sup.stop_all([[stubborn], [polite]])
        assert codes == {"stubborn": -signal.SIGKILL, "polite": -signal.SIGTERM}
        assert exits == []  # expected exits are not crashes
        assert polite.state == stubborn.state == "stopped"
    finally:
        await sup.close()


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    script = tmp_path / "sup.py"
    script.write_text(
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from alpr_shared.run.plan import ProcessSpec\n"
        "from alpr_shared.run.supervisor import Child, RestartPolicy, Supervisor\n"
        "async def main():\n"
        "    spec = ProcessSpec('sleeper', 'ingest', [sys.executable, '-c', 'import time; time.sleep(600)'], None)\n"
        f"    child = Child(spec, Path({str(tmp_path / 'sleeper.log')!r}))\n"
        "    sup = Supervisor([child], policy=RestartPolicy(), env={}, on_exit=None)\n"
        "    await sup.start(child)\n"
        "    print(child.pid, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        child = psutil.Process(pid)
        assert child.is_running()
        proc.kill()
        proc.wait(10)
        child.wait(10)  # SIGTERM from the kernel (PR_SET_PDEATHSIG), not an orphan
        assert not psutil.pid_exists(pid) or child.status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
