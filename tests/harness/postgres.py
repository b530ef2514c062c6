"""A throwaway PostgreSQL 15 cluster for integration tests and benchmarks.

``PostgresServer`` owns one cluster: a temporary directory holding the data directory, the server log and
the unix socket, and the postmaster started in it with ``pg_ctl``. It never touches the distribution's
default cluster (port 5432) and never leaves a server running after ``close()`` (an ``atexit`` hook backs
that up when a caller forgets). Durability is switched off (``fsync``, ``full_page_writes``,
``synchronous_commit``): data survives ``stop()``/``start()``, not a machine crash.

When the process runs as root (as tests do on CI), ``initdb`` and ``pg_ctl`` run as the ``postgres`` OS
user through ``runuser``, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.harness.common import ServerError, ServerStartError, default_base_dir, with_log
from tests.harness.ports import free_port

DEFAULT_BINDIR = Path("/usr/lib/postgresql/15/bin")
BINDIR_ENV = "ALPR_PG_BINDIR"
SUPERUSER = "postgres"
# OS user that owns the cluster when we run as root (created by Debian's postgresql-common).
OS_USER_WHEN_ROOT = "postgres"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
# Client-side cap on one psql call (CREATE DATABASE copies a template: quick, but not instant).
PSQL_TIMEOUT_S = 60.0
# Fresh ports tried when an automatically chosen port turns out to be taken at bind time.
PORT_ATTEMPTS = 5
# Settings that make a test cluster fast; a crash may lose data, which no test relies on.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
}
_INSTALL_HINT = (
    "install PostgreSQL 15 with scripts/install-system-deps.sh, or point ALPR_PG_BINDIR at its bin dir"
)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PORT_IN_USE = ("Address already in use", "could not create any TCP/IP sockets")


def default_bindir() -> Path:
    """The PostgreSQL bin directory: ``$ALPR_PG_BINDIR`` if set, else Debian's PostgreSQL 15 location."""
    return Path(os.environ.get(BINDIR_ENV) or DEFAULT_BINDIR)


def unique_database_name(prefix: str = "test") -> str:
    """A database name that no other test in any session will pick."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _check_identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"database name {name!r} must match {_IDENTIFIER.pattern}")
    return name


class PostgresServer:
    """One throwaway PostgreSQL cluster on ``host:port``; ``start()`` / ``stop()`` / ``close()``.

    ``start()`` the first time runs ``initdb``; later calls restart the same data directory on the same
    port (for outage tests). ``stop()`` shuts down cleanly and keeps the data; ``kill()`` is an immediate
    shutdown (no checkpoint, crash recovery on the next start); ``close()`` stops and deletes everything.
    """

    def __init__(
        self,
        *,
        bindir: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        base_dir: Path | str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """Describe a cluster; nothing starts until ``start()``.

        ``port=None`` picks a free port (and a new one if that is taken by the time the server binds);
        ``base_dir`` is where the temporary directory goes (default: ``default_base_dir()``);
        ``settings`` are extra ``-c name=value`` server settings, applied after ``FAST_SETTINGS``.
        """
        self._bindir = Path(bindir) if bindir is not None else default_bindir()
        self._host = host
        self._port_fixed = port is not None
        self._port = port if port is not None else free_port(host)
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._startup_timeout = startup_timeout
        self._settings = {**FAST_SETTINGS, **(settings or {})}
        self._workdir: Path | None = None
        self._running = False
        self._ever_started = False

    # ----------------------------------------------------------------------------------------- properties
    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def bindir(self) -> Path:
        return self._bindir

    @property
    def dsn(self) -> str:
        """DSN of the ``postgres`` database as the ``postgres`` superuser (no password: trust auth)."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{self._host}:{self._port}/{database}"

    @property
    def running(self) -> bool:
        return self._running

    @property
    def workdir(self) -> Path:
        """The temporary directory: ``data/`` (PGDATA), ``postgresql.log`` and the unix socket."""
        if self._workdir is None:
            raise ServerError("PostgreSQL server has not been started yet: no working directory")
        return self._workdir

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgresql.log"

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"PostgresServer({self.dsn}, {state}, workdir={self._workdir})"

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the cluster (``initdb`` first if this is the first start); wait until it accepts clients.

        Raises ``ServerStartError`` naming the cause (missing binary, missing OS user, port taken, ...)
        and quoting the server's log.
        """
        if self._running:
            raise ServerError(f"{self!r} is already running")
        self._check_installation()
        if self._workdir is None:
            self._workdir = self._make_workdir()
            atexit.register(self.close)
            try:
                self._initdb()
            except BaseException:
                # A half-initialised data dir would make the next start() fail for the wrong reason.
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
                raise
        self._start_postmaster()
        self._running = True
        self._ever_started = True

    def stop(self) -> None:
        """Shut down cleanly (``pg_ctl -m fast``); data and port are kept for ``start()``."""
        self._pg_ctl_stop("fast")

    def kill(self) -> None:
        """Shut down abruptly (``pg_ctl -m immediate``): clients are cut off, no shutdown checkpoint."""
        self._pg_ctl_stop("immediate")

    def close(self) -> None:
        """Stop the server if it runs and delete its directory. Safe to call more than once."""
        atexit.unregister(self.close)
        try:
            if self._running:
                try:
                    self.stop()
                except ServerError:
                    # A server that ignores a fast shutdown still must not outlive us.
                    self.kill()
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ databases
    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database ``name`` (optionally as a copy of ``template``) and return its DSN."""
        sql = f'CREATE DATABASE "{_check_identifier(name)}"'
        if template is not None:
            sql += f' TEMPLATE "{_check_identifier(template)}"'
        self.psql(sql)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting any client still using it."""
        self.psql(f'DROP DATABASE IF EXISTS "{_check_identifier(name)}" WITH (FORCE)')

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` (stops at the first error) and return its unaligned output."""
        argv = [
            str(self._bindir / "psql"),
            "-X",  # ignore ~/.psqlrc
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            self._host,
            "-p",
            str(self._port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-c",
            sql,
        ]
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=PSQL_TIMEOUT_S, env=env, check=False
            )
        except FileNotFoundError as exc:
            raise ServerError(f"psql not found at {argv[0]}: {_INSTALL_HINT}") from exc
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"psql on {self.dsn_for(database)} timed out after {exc.timeout} s") from exc
        if proc.returncode != 0:
            raise ServerError(
                f"psql on {self.dsn_for(database)} failed (exit {proc.returncode}) running {sql!r}: "
                f"{proc.stderr.strip()}"
            )
        return proc.stdout

    # ------------------------------------------------------------------------------------------ internals
    def _running_as_root(self) -> bool:
        return os.geteuid() == 0

    def _check_installation(self) -> None:
        missing = [
            str(self._bindir / b) for b in ("initdb", "pg_ctl", "psql") if not (self._bindir / b).is_file()
        ]
        if missing:
            raise ServerStartError(f"PostgreSQL binaries not found: {', '.join(missing)}; {_INSTALL_HINT}")
        if self._running_as_root():
            if shutil.which("runuser") is None:
                raise ServerStartError("running as root needs `runuser` (util-linux) to start PostgreSQL")
            try:
                pwd.getpwnam(OS_USER_WHEN_ROOT)
            except KeyError:
                raise ServerStartError(
                    f"running as root needs the OS user {OS_USER_WHEN_ROOT!r} to own the cluster; "
                    f"{_INSTALL_HINT}"
                ) from None

    def _make_workdir(self) -> Path:
        workdir = Path(tempfile.mkdtemp(prefix="alpr-pg-", dir=self._base_dir or default_base_dir()))
        if self._running_as_root():
            owner = pwd.getpwnam(OS_USER_WHEN_ROOT)
            os.chown(workdir, owner.pw_uid, owner.pw_gid)
        return workdir

    def _as_server_user(self, argv: Sequence[str]) -> list[str]:
        if self._running_as_root():
            return ["runuser", "-u", OS_USER_WHEN_ROOT, "--", *argv]
        return list(argv)

    def _run(self, argv: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._as_server_user(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            # Our own cwd (e.g. /root) may be closed to the postgres user.
            cwd=self.workdir,
            check=False,
        )

    def _initdb(self) -> None:
        argv = [
            str(self._bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
        try:
            proc = self._run(argv, timeout=self._startup_timeout)
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(f"initdb in {self.data_dir} timed out after {exc.timeout} s") from exc
        if proc.returncode != 0:
            raise ServerStartError(
                f"initdb failed (exit {proc.returncode}): {shlex.join(argv)}\n{proc.stdout.strip()}"
            )

    def _server_options(self) -> str:
        opts = ["-c", f"listen_addresses={self._host}", "-p", str(self._port), "-k", str(self.workdir)]
        for name, value in self._settings.items():
            opts += ["-c", f"{name}={value}"]
        # pg_ctl hands this string to /bin/sh: quote every word.
        return shlex.join(opts)

    def _start_postmaster(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        attempts = 0
        while True:
            attempts += 1
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            argv = [
                str(self._bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(max(1, int(deadline - time.monotonic()))),
                "-o",
                self._server_options(),
                "start",
            ]
            try:
                proc = self._run(argv, timeout=self._startup_timeout + 5)
            except subprocess.TimeoutExpired as exc:
                self._abort_start()
                raise ServerStartError(
                    with_log(f"pg_ctl start on port {self._port} hung for {exc.timeout} s", self.log_path)
                ) from exc
            if proc.returncode == 0:
                return
            self._abort_start()
            new_log = self._log_since(log_offset)
            port_taken = any(marker in new_log for marker in _PORT_IN_USE)
            if port_taken and time.monotonic() < deadline:
                if not self._ever_started and not self._port_fixed and attempts < PORT_ATTEMPTS:
                    self._port = free_port(self._host)
                    continue
                if self._ever_started:
                    # A restart must keep its port: wait for whoever holds it to let go.
                    time.sleep(0.2)
                    continue
            raise ServerStartError(
                with_log(
                    f"PostgreSQL did not start on {self._host}:{self._port} "
                    f"(data dir {self.data_dir}, exit {proc.returncode}): {proc.stdout.strip()}",
                    self.log_path,
                )
            )

    def _abort_start(self) -> None:
        """After a failed ``pg_ctl start``, make sure no postmaster is left behind (it may be half up)."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            self._run(
                [str(self._bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"],
                timeout=STOP_TIMEOUT_S,
            )

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _pg_ctl_stop(self, mode: str) -> None:
        if not self._running:
            raise ServerError(f"{self!r} is not running")
        argv = [
            str(self._bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(STOP_TIMEOUT_S)),
            "stop",
        ]
        try:
            proc = self._run(argv, timeout=STOP_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"pg_ctl stop -m {mode} hung for {exc.timeout} s on {self!r}") from exc
        if proc.returncode != 0:
            raise ServerError(
                with_log(
                    f"pg_ctl stop -m {mode} failed (exit {proc.returncode}): {proc.stdout}", self.log_path
                )
            )
        self._running = False
