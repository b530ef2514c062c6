"""Start `alpr <service>` as its own process for a test, and stop it the way an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def start_service(command: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`alpr <command> -c config` on any free metrics port, JSON logs to `log`."""
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "alpr_shared.cli", command, "-c", str(config), "--metrics-port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "ALPR_LOG__FORMAT": "json"},
        )


def stop_service(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM (graceful drain), SIGKILL after `timeout`; returns the exit code (-9 when killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return -9
    return int(proc.returncode)
