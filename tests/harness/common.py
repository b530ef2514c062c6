"""Errors raised by the test-server harness, and the log excerpt they carry.

A server that cannot start must say why in one message: which binary, which port, which data directory,
and the last lines the server wrote. Fixtures turn that message into a test failure, never a skip.
"""

from __future__ import annotations

from pathlib import Path

# Lines of a server's log quoted in an error: enough for a stack of startup errors, short enough to read.
LOG_TAIL_LINES = 40


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
