"""What the test servers share: their errors, the log excerpt those carry, and where their files go.

A server that cannot start must say why in one message: which binary, which port, which data directory,
and the last lines the server wrote. Fixtures turn that message into a test failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Lines of a server's log quoted in an error: enough for a stack of startup errors, short enough to read.
LOG_TAIL_LINES = 40
# RAM-backed directory for server data. On this machine's ext4 disk, initdb takes ~1.2 s and each
# CREATE DATABASE ~0.25 s even with fsync off; on tmpfs 0.3 s and ~15 ms.
SHM_DIR = Path("/dev/shm")
# Use SHM_DIR only when it has this much room: Docker gives containers a 64 MiB /dev/shm by default, which
# a cluster with a few databases (and PostgreSQL's own shared memory segments) would fill.
SHM_MIN_FREE_BYTES = 1 << 30


def default_base_dir() -> Path:
    """Where servers put their temporary directory: ``/dev/shm`` when roomy, else the system temp dir."""
    try:
        roomy = (
            SHM_DIR.is_dir()
            and os.access(SHM_DIR, os.W_OK | os.X_OK)
            and shutil.disk_usage(SHM_DIR).free >= SHM_MIN_FREE_BYTES
        )
    except OSError:
        roomy = False  # not Linux, or /dev/shm unreadable
    return SHM_DIR if roomy else Path(tempfile.gettempdir())


class ServerError(RuntimeError):
    """A test server failed to start, stop or answer."""


class ServerStartError(ServerError):
    """A test server did not become ready. The message names the cause and quotes the server's log."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of ``path``, or a note saying why there are none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log: {path} does not exist)"
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    tail = text.splitlines()[-lines:]
    if not tail:
        return f"(log {path} is empty)"
    return "\n".join(tail)


def with_log(message: str, log_path: Path) -> str:
    """Append the tail of ``log_path`` to ``message``, framed so it stands out in a pytest report."""
    return f"{message}\n--- last lines of {log_path} ---\n{log_tail(log_path)}\n--- end of log ---"
