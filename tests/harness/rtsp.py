"""A throwaway RTSP server for integration tests: GStreamer's RTSP server serving a generated H.264 stream.

``RtspServer`` owns one process: Debian's ``/usr/bin/python3`` (the interpreter with GStreamer's Python
bindings, ``gi``; the project's venv has none) running the script below, which serves a live
``videotestsrc → x264enc → rtph264pay`` stream on ``rtsp://127.0.0.1:<port>/<mount>`` for each mount.
The media is shared between clients (one encoder per mount). With ``username``/``password`` every mount
requires HTTP basic authentication, so tests exercise real credentials.

``stop()`` terminates the process, which drops every client's connection mid-stream (the "camera went
away" case); ``start()`` again serves on the same port. A server that cannot start raises
``ServerStartError`` with its log; the fixture turns that into a failure, never a skip. Needs the Debian
packages that ``scripts/install-system-deps.sh`` installs (python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-{base,good,bad,ugly}).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.harness.common import ServerError, ServerStartError, default_base_dir, with_log
from tests.harness.ports import free_port, port_is_open, wait_port_closed

PYTHON_ENV = "ALPR_GST_PYTHON"
DEFAULT_PYTHON = Path("/usr/bin/python3")
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 5
_INSTALL_HINT = (
    "install GStreamer's RTSP server with scripts/install-system-deps.sh (python3-gi, "
    "gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad,ugly}); set ALPR_GST_PYTHON to an "
    "interpreter with gi if it is not /usr/bin/python3"
)

# Run by the system interpreter; its configuration arrives as JSON on argv[1] (no secrets on this
# machine's test server matter, but the script keeps them off the command line anyway: stdin).
_SERVER_SCRIPT = r"""
import json, signal, sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

cfg = json.loads(sys.stdin.readline())
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(str(cfg["port"]))
w, h, fps, gop = cfg["width"], cfg["height"], cfg["fps"], cfg["gop"]
launch = (
    f"( videotestsrc is-live=true pattern={cfg['pattern']} ! "
    f"video/x-raw,width={w},height={h},framerate={fps}/1 ! "
    f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bframes=0 threads=1 ! "
    "video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
mounts = server.get_mount_points()
for mount in cfg["mounts"]:
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    if cfg.get("username"):
        factory.add_role_from_structure(
            Gst.Structure.from_string("user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")[0]
        )
    mounts.add_factory("/" + mount, factory)
if cfg.get("username"):
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(cfg["username"], cfg["password"]), token)
    server.set_auth(auth)
if server.attach(None) == 0:
    print("cannot bind port", cfg["port"], "already in use?", flush=True)
    sys.exit(3)
loop = GLib.MainLoop()
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
print("ready", flush=True)
loop.run()
"""


def default_python() -> Path:
    """The interpreter with GStreamer's bindings: ``$ALPR_GST_PYTHON`` if set, else Debian's python3."""
    return Path(os.environ.get(PYTHON_ENV) or DEFAULT_PYTHON)


class RtspServer:
    """One GStreamer RTSP server process on ``127.0.0.1:port`` serving ``mounts`` (default ``cam``).

    ``url(mount)`` gives the address a camera uses. ``start()`` / ``stop()`` / ``close()``; a restart keeps
    the port, so clients can reconnect to the same URL.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        mounts: Sequence[str] = ("cam",),
        width: int = 320,
        height: int = 240,
        fps: int = 25,
        gop: int = 25,
        pattern: str = "ball",
        username: str | None = None,
        password: str | None = None,
        python: Path | None = None,
    ) -> None:
        self._port = port
        self._fixed_port = port is not None
        self.mounts = list(mounts)
        self.width, self.height, self.fps, self.gop, self.pattern = width, height, fps, gop, pattern
        self.username, self.password = username, password
        self.python = python or default_python()
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        atexit.register(self.close)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServerError("the RTSP server has no port yet: start() it first")
        return self._port

    def url(self, mount: str | None = None) -> str:
        return f"rtsp://{self.host}:{self.port}/{mount or self.mounts[0]}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="alpr-rtsp-", dir=default_base_dir()))
        return self._workdir / "server.log"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RtspServer({self.host}:{self._port}, mounts={self.mounts}, {state})"

    def start(self) -> None:
        """Start serving (again, on the same port); raise ``ServerStartError`` with the log if it fails."""
        if self.running:
            return
        if not self.python.exists():
            raise ServerStartError(f"no interpreter at {self.python}: {_INSTALL_HINT}")
        attempts = 1 if self._fixed_port or self._port is not None else PORT_ATTEMPTS
        last = ""
        for _ in range(attempts):
            if self._port is None:
                self._port = free_port()
            failure = self._launch_and_wait()
            if failure is None:
                self.starts += 1
                return
            last, port_taken = failure
            if not port_taken or self.starts > 0 or self._fixed_port:
                break
            self._port = None  # a race for the port: try another
        raise ServerStartError(with_log(f"RTSP server did not start: {last}. {_INSTALL_HINT}", self.log_path))

    def stop(self) -> None:
        """Terminate the server: every client loses its connection at once. The port is kept."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self._proc = None
        if self._port is not None:
            wait_port_closed(self.host, self._port, STOP_TIMEOUT_S)

    def kill(self) -> None:
        """SIGKILL the server (no RTSP TEARDOWN, sockets reset by the kernel)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=STOP_TIMEOUT_S)
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        atexit.unregister(self.close)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _launch_and_wait(self) -> tuple[str, bool] | None:
        config = {
            "port": self.port,
            "mounts": self.mounts,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "gop": self.gop,
            "pattern": self.pattern,
            "username": self.username,
            "password": self.password,
        }
        with self.log_path.open("ab") as log:
            offset = log.tell()
            proc = subprocess.Popen(
                [str(self.python), "-c", _SERVER_SCRIPT],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._proc = proc
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(config) + "\n").encode())
        proc.stdin.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self._log_since(offset)
            if proc.poll() is not None:
                self._proc = None
                return (f"the server exited with code {proc.returncode}", "cannot bind port" in text)
            if "ready" in text.splitlines() and port_is_open(self.host, self.port):
                return None
            time.sleep(0.05)
        self.kill()
        return (f"not ready within {STARTUP_TIMEOUT_S:.0f}s", False)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""
