"""One `alpr run`: set up the data directory and the database, start every stage, show the status, restart
what crashes, finish a file run once the pipeline drained, print the summary, and clean up.

Phases: prepare (lock the data directory, write `run.yaml`, initdb once) → start (database, then the
stages downstream first, ingest last once the others are ready) → run (status every second; crashes
restarted, and for file runs the files replayed after a stage upstream of the store lost in-memory work)
→ finish (file runs: every source ended and the pipeline went quiet → stop the stages in pipeline order,
wait until persist stored everything in the outbox, summary) or stop (Ctrl-C / SIGTERM: same order,
nothing waited for) → clean up (no child left, rings of this run's namespace unlinked, runtime directory
removed, lock released).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import asyncpg
import httpx
import psutil
import yaml

from alpr_shared.framestore import SHM_DIR, reclaim_stale_segments
from alpr_shared.run import plan, status
from alpr_shared.run.embedded_db import EmbeddedDatabaseError, EmbeddedPostgres
from alpr_shared.run.plan import Layout, ProcessSpec, RunError, RunOptions
from alpr_shared.run.summary import RunSummary, render, stored_events
from alpr_shared.run.supervisor import Child, RestartPolicy, Supervisor
from alpr_shared.settings import ConfigError, load_settings

StatusMode = Literal["live", "plain", "off"]

# How long every stage may take to report ready (detect loads its model, OCR workers theirs).
READY_TIMEOUT_S = 300.0
# A file run is over when every source ended and the stage counters stayed still this long.
QUIET_S = 2.0
# ... or this long, when a stage still reports work in hand but no counter moved at all.
STUCK_S = 30.0
# After the edge stages stopped: how long persist may take to store what is left in the outbox.
STORE_TIMEOUT_S = 120.0
# While finishing: a stage whose input stopped is done once still this long (bounded by SETTLE_TIMEOUT_S).
SETTLE_S = 1.0
SETTLE_TIMEOUT_S = 60.0
SCRAPE_INTERVAL_S = 1.0
PLAIN_STATUS_EVERY_S = 5.0


class Counter:
    """A counter summed across the restarts of the process that exposes it."""

    def __init__(self) -> None:
        self.base = 0.0
        self.last = 0.0

    def update(self, value: float) -> float:
        if value < self.last:
            self.base += self.last
        self.last = value
        return self.value

    @property
    def value(self) -> float:
        return self.base + self.last


def probe(source: str) -> tuple[int | None, tuple[int, int] | None]:
    """Frames and (width, height) of a video file; (None, None) when it cannot be told cheaply."""
    path = Path(source)
    if plan.is_live(source) or not path.is_file():
        if path.is_dir():
            images = [p for p in path.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"}]
            return len(images), None
        return None, None
    import av  # noqa: PLC0415 - only for file sources

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = int(stream.frames or 0)
            if not frames and stream.duration and stream.time_base and stream.average_rate:
                frames = int(float(stream.duration * stream.time_base) * float(stream.average_rate))
            return frames or None, (int(stream.width), int(stream.height))
    except (av.error.FFmpegError, IndexError):
        return None, None


class Run:
    def __init__(
        self,
        options: RunOptions,
        *,
        status_mode: StatusMode = "plain",
        out: TextIO | None = None,
        policy: RestartPolicy | None = None,
    ) -> None:
        self.options = options
        self.status_mode = status_mode
        self.out = out or sys.stdout
        self.policy = policy or RestartPolicy()
        self.stop_requested = asyncio.Event()
        self.failure: str | None = None
        self.failed = asyncio.Event()
        self.draining = False
        self.replays = 0
        self._recovering = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._replay_lock = asyncio.Lock()
        self._model = status.StatusModel()
        self._frames = Counter()
        self._reads = Counter()
        self._quiet_since: float | None = None
        self._signature: tuple[float, ...] | None = None
        self._live: Any = None
        self._started = time.monotonic()
        self._started_wall = datetime.now(UTC)
        self._last_plain = 0.0
        self.supervisor: Supervisor | None = None
        self.layout: Layout | None = None
        self.database_url = ""
        self.cameras: list[str] = []
        self.totals: dict[str, int | None] = {}
        self.finite = False
        self.api_url: str | None = None
        self.summary: RunSummary | None = None

    @property
    def sup(self) -> Supervisor:
        if self.supervisor is None:
            raise RuntimeError("no supervisor before the run started")
        return self.supervisor

    @property
    def lay(self) -> Layout:
        if self.layout is None:
            raise RuntimeError("no layout before the run started")
        return self.layout

    # --- output -----------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)

    # --- preparation ------------------------------------------------------------------------------------

    def _load_base(self, configs: list[Path]) -> dict[str, Any]:
        base: dict[str, Any] = {}
        paths = ([self.options.config] if self.options.config else []) + configs
        for path in paths:
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise RunError(f"cannot read configuration {path}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise RunError(f"configuration {path} must hold a mapping at the top")
            cameras = [*base.get("cameras", []), *loaded.get("cameras", [])]
            base = plan._deep_merge(base, loaded)
            base["cameras"] = cameras
        return base

    def _lock(self, layout: Layout) -> int:
        layout.data.mkdir(parents=True, exist_ok=True)
        fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise RunError(
                f"another `alpr run` is using {layout.data}; stop it or pass --data-dir / $ALPR_DATA_HOME"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _prepare(self, layout: Layout) -> tuple[list[ProcessSpec], EmbeddedPostgres | None]:
        options = self.options
        camera_sources, configs = plan.split_sources(options.sources)
        base = self._load_base(configs)
        taken = {str(c.get("id")) for c in base.get("cameras", []) if isinstance(c, dict)}
        cameras = plan.cameras_from_sources(camera_sources, realtime=options.realtime, taken=taken)
        all_cameras = [*base.get("cameras", []), *cameras]
        self.cameras = [str(c["id"]) for c in all_cameras if isinstance(c, dict) and c.get("enabled", True)]
        sizes: list[tuple[int, int]] = []
        live = False
        for cam in all_cameras:
            source = str(cam.get("source", ""))
            frames, size = probe(source)
            live = live or plan.is_live(source) or bool(cam.get("loop"))
            self.totals[str(cam["id"])] = frames
            if size is not None:
                sizes.append(size)
        self.finite = bool(self.cameras) and not live
        frame_size = None
        if sizes and len(sizes) == len(all_cameras):
            frame_size = (max(w for w, _ in sizes), max(h for _, h in sizes))
        embedded: EmbeddedPostgres | None = None
        if options.database_url is None:
            embedded = EmbeddedPostgres(layout.postgres, layout.postgres_socket)
            stale = embedded.stale_pid_file()
            if stale is not None:
                stale.unlink()
            created = embedded.prepare()
            if created:
                self.say(f"alpr run: created the embedded database in {layout.postgres}")
            self.database_url = embedded.url
        else:
            self.database_url = options.database_url
        ports = plan.allocate_ports(options)
        query_available = options.api and _module_exists("alpr_query.service")
        view_available = _module_exists("alpr_view") or _module_exists("alpr_shared.view")
        if options.view and not view_available:
            self.say("alpr run: --view is not available in this build (the view module is missing)")
        config = plan.build_config(
            options,
            layout,
            base=base,
            cameras=cameras,
            database_url=self.database_url,
            ports=ports,
            namespace=f"run{os.getpid()}",
            frame_size=frame_size,
        )
        layout.config.write_text(
            "# Generated by `alpr run` at every start; edit your own --config file instead.\n"
            + yaml.safe_dump(config, sort_keys=False),
            encoding="utf-8",
        )
        try:
            settings = load_settings(layout.config)
        except ConfigError as exc:
            raise RunError(str(exc)) from exc
        self.namespace = settings.frame_store.namespace
        if query_available:
            self.api_url = f"http://{settings.query.host}:{settings.query.port}"
        specs = plan.process_specs(
            options,
            layout,
            ports=ports,
            postgres=embedded.command() if embedded else None,
            postgres_user=embedded.run_as if embedded else None,
            query_available=query_available,
            view_available=view_available,
        )
        if not self.cameras:
            specs = [s for s in specs if s.stage in {"postgres", "query"}]
        return specs, embedded

    # --- the run ----------------------------------------------------------------------------------------

    async def execute(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        _remove_stale_runtime_dirs()
        layout = Layout(
            plan.data_dir(self.options), Path(tempfile.mkdtemp(prefix=f"alpr-run-{os.getpid()}-"))
        )
        self.layout = layout
        layout.runtime.chmod(0o755)
        lock_fd: int | None = None
        try:
            lock_fd = self._lock(layout)
            self.say(f"alpr run: data in {layout.data} (logs: {layout.logs})")
            specs, embedded = await asyncio.to_thread(self._prepare, layout)
            return await self._run(specs, embedded)
        except (RunError, EmbeddedDatabaseError) as exc:
            self.say(f"alpr run: {exc}")
            return 2
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self._cleanup()
            if lock_fd is not None:
                os.close(lock_fd)

    def _on_signal(self, signum: int) -> None:
        if self.stop_requested.is_set() and self.supervisor is not None:
            self.say("alpr run: second signal: killing every stage now")
            for child in self.supervisor.children.values():
                self.supervisor.kill(child)
            return
        self.say(f"alpr run: {signal.Signals(signum).name}: stopping (sources first, so work drains)")
        self.stop_requested.set()

    async def _run(self, specs: list[ProcessSpec], embedded: EmbeddedPostgres | None) -> int:
        layout = self.lay
        children = []
        for spec in specs:
            child = Child(spec, layout.logs / f"{spec.name}.log")
            if spec.stage == "postgres":
                child.death_signal = child.stop_signal = signal.SIGINT  # fast shutdown
            children.append(child)
        env = {k: v for k, v in os.environ.items() if k != "ALPR_CONFIG"}
        self.supervisor = Supervisor(children, policy=self.policy, env=env, on_exit=self._on_exit)
        sup = self.supervisor
        async with httpx.AsyncClient() as client:
            self.client = client
            if embedded is not None:
                await sup.start(sup.children["postgres"])
                if not await self._until(self._database_ready(embedded), 60.0):
                    code = self._give_up_message(
                        "the embedded database did not start", sup.children["postgres"]
                    )
                    await self._stop_everything()
                    return code
                sup.children["postgres"].state = "ready"
            elif not await self._check_database():
                return 1
            rest = [c for c in children if c.spec.stage not in {"postgres", "ingest"}]
            for child in rest:
                await sup.start(child)
            if not await self._until(self._all_ready(rest), READY_TIMEOUT_S):
                code = self._failed_start(rest)
                await self._stop_everything()
                return code
            if "ingest" in sup.children:
                await sup.start(sup.children["ingest"])
            self._started = time.monotonic()
            self._started_wall = datetime.now(UTC)
            self.say(self._banner())
            code = await self._loop()
            return code

    async def _stop_everything(self) -> None:
        """Stop whatever runs, in pipeline order (a stop during start-up, a stage that never got ready)."""
        sup = self.sup
        groups = plan.stop_order([c.spec for c in sup.children.values()])
        self._report(await sup.stop_all([[sup.children[s.name] for s in g] for g in groups]))

    def _banner(self) -> str:
        lines = []
        if self.cameras:
            kind = "files: ends by itself once they are read" if self.finite else "live: Ctrl-C to stop"
            lines.append(f"alpr run: {len(self.cameras)} camera(s) ({', '.join(self.cameras)}), {kind}")
        if self.api_url:
            hint = f"a key: alpr keys create --config {self.lay.config}"
            lines.append(f"alpr run: API on {self.api_url}/v1 ({hint})")
        if self.options.view and self.supervisor and "view" in self.supervisor.children:
            lines.append(f"alpr run: live view on http://127.0.0.1:{self.options.view_port}/")
        return "\n".join(lines)

    async def _until(self, condition: Any, timeout: float | None) -> bool:
        """Await a readiness coroutine, unless the run is stopped or a child gave up first."""
        task = asyncio.ensure_future(condition)
        stop = asyncio.ensure_future(self.stop_requested.wait())
        fail = asyncio.ensure_future(self.failed.wait())
        try:
            done, _ = await asyncio.wait(
                {task, stop, fail}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for f in (stop, fail):
                f.cancel()
        if task in done:
            return bool(task.result())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _database_ready(self, embedded: EmbeddedPostgres) -> bool:
        while True:
            try:
                conn = await asyncpg.connect(embedded.admin_url, timeout=2)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            try:
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", "alpr")
                if not exists:
                    await conn.execute("CREATE DATABASE alpr")
            except asyncpg.PostgresError:  # the system is starting up / shutting down: try again
                await asyncio.sleep(0.2)
                continue
            finally:
                await conn.close()
            return True

    async def _check_database(self) -> bool:
        try:
            conn = await asyncpg.connect(self.database_url, timeout=10)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self.say(f"alpr run: cannot connect to --database-url: {exc}")
            return False
        await conn.close()
        return True

    async def _all_ready(self, children: list[Child]) -> bool:
        while True:
            pending = [c for c in children if c.state != "ready"]
            for child in pending:
                port = child.spec.metrics_port
                if child.alive and (port is None or await status.ready(self.client, port)):
                    child.state = "ready"
            if all(c.state == "ready" for c in children):
                return True
            await asyncio.sleep(0.25)

    def _failed_start(self, children: list[Child]) -> int:
        if self.stop_requested.is_set():
            return 0
        if self.failure is not None:
            self.say(self.failure)
            return 1
        late = [c for c in children if c.state != "ready"]
        names = ", ".join(c.name for c in late)
        self.say(f"alpr run: not ready after {READY_TIMEOUT_S:.0f} s: {names}")
        for child in late:
            self.say(f"--- {child.log_path} (last lines)\n{child.log_tail()}")
        return 1

    def _give_up_message(self, what: str, child: Child) -> int:
        if self.stop_requested.is_set():
            return 0
        self.say(f"alpr run: {what}; see {child.log_path}\n{child.log_tail()}")
        return 1

    # --- crashes ----------------------------------------------------------------------------------------

    def _on_exit(self, child: Child, code: int) -> None:
        task = asyncio.create_task(self._recover(child, code), name=f"recover-{child.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, child: Child, code: int) -> None:
        sup = self.sup
        if self.stop_requested.is_set():
            return
        self._model.samples.pop(child.name, None)
        if sup.should_give_up(child):
            why = (
                "its configuration is invalid"
                if code == 2
                else f"it crashed {child.crashes_in_row} times in a row"
            )
            child.state = "failed"
            self.failure = (
                f"alpr run: giving up on {child.name} (exit code {code}): {why}. Last lines of {child.log_path}:\n"
                + child.log_tail()
            )
            self.failed.set()
            return
        delay = self.policy.delay(child.crashes_in_row)
        self.say(f"alpr run: {child.name} exited with code {code}; restarting in {delay:.1f} s")
        self._recovering += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), delay)
            if self.stop_requested.is_set():
                return
            child.restarts += 1
            await sup.start(child)
            replay = (
                self.finite
                and not self.draining
                and child.spec.stage in plan.REPLAY_AFTER_CRASH
                and child.spec.stage != "ingest"
                and "ingest" in sup.children
            )
            if replay and await self._until(self._all_ready([child]), READY_TIMEOUT_S):
                await self._replay()
        finally:
            self._recovering -= 1

    async def _replay(self) -> None:
        """Read the files again from the start: what the crash lost in memory is seen again, and events
        merges the passages it already has (dedup window), so nothing is lost and nothing doubled."""
        sup = self.sup
        async with self._replay_lock:
            ingest = sup.children["ingest"]
            self.replays += 1
            self.say("alpr run: replaying the files from the start to recover what the crash lost")
            await sup.stop(ingest)
            self._model.samples.pop("ingest", None)
            if not self.stop_requested.is_set():
                await sup.start(ingest)

    # --- the main loop ----------------------------------------------------------------------------------

    async def _loop(self) -> int:
        live_ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.status_mode == "live":
            from rich.console import Console  # noqa: PLC0415 - only in a terminal
            from rich.live import Live  # noqa: PLC0415

            self._live = Live(console=Console(file=self.out), refresh_per_second=2, transient=False)
            live_ctx = self._live
        try:
            with live_ctx:
                while True:
                    if self.failed.is_set():
                        break
                    if self.stop_requested.is_set():
                        break
                    await self._scrape()
                    self._show()
                    if self.finite and self._finished():
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake(), SCRAPE_INTERVAL_S)
        finally:
            self._live = None
        return await self._finish()

    async def _wake(self) -> None:
        stop = asyncio.ensure_future(self.stop_requested.wait())
        fail = asyncio.ensure_future(self.failed.wait())
        try:
            await asyncio.wait({stop, fail}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            fail.cancel()

    async def _scrape(self) -> None:
        sup = self.sup
        children = [c for c in sup.children.values() if c.spec.metrics_port is not None and c.alive]
        results = await asyncio.gather(
            *(status.scrape(self.client, c.spec.metrics_port or 0) for c in children)
        )
        for child, samples in zip(children, results, strict=True):
            self._model.update(child.name, samples)
            if samples is not None and child.state == "running":
                child.state = "ready"
        self._frames.update(status.total(self._model.samples.get("ingest"), "alpr_ingest_frames_total"))
        self._reads.update(
            status.total(self._model.samples.get("ocr"), "alpr_ocr_jobs_total", outcome="answered")
        )

    def _rows(self) -> list[status.StageRow]:
        sup = self.sup
        now = time.monotonic()
        return [
            self._model.row(c.name, c.spec.stage, c.state, c.pid, restarts=c.restarts, now=now)
            for c in sup.children.values()
        ]

    def _show(self) -> None:
        if self.status_mode == "off":
            return
        rows = self._rows()
        progress = status.camera_progress(self._model.samples.get("ingest"), self.totals)
        elapsed = time.monotonic() - self._started
        if self._live is not None:
            header = f"alpr run · {self.layout.data if self.layout else ''}"
            self._live.update(status.render_rich(rows, progress, elapsed, header))
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_STATUS_EVERY_S:
            self._last_plain = now
            self.say(status.render_plain(rows, progress, elapsed))

    def _finished(self) -> bool:
        """Every file ended and the pipeline has been still for QUIET_S (nothing left to work on)."""
        if self._recovering or self._replay_lock.locked():
            self._quiet_since = None
            return False
        s = self._model.samples
        ingest = s.get("ingest")
        finished = status.series(ingest, "alpr_ingest_camera_finished_info", "camera")
        if not ingest or not self.cameras or not all(finished.get(c, 0) >= 1 for c in self.cameras):
            self._quiet_since = None
            return False
        detect = s.get("detect")
        # Frames detect took but has not finished (an inference can take seconds on a loaded CPU).
        detect_pending = status.total(detect, "alpr_detect_frames_in_total") - sum(
            status.total(detect, name)
            for name in (
                "alpr_detect_frames_out_total",
                "alpr_detect_frames_dropped_total",
                "alpr_detect_frames_skipped_total",
            )
        )
        ocr_pending = status.total(s.get("ocr"), "alpr_ocr_queue_jobs") + status.total(
            s.get("ocr"), "alpr_ocr_in_flight_jobs"
        )
        signature = (
            status.total(detect, "alpr_detect_frames_in_total"),
            status.total(detect, "alpr_detect_frames_out_total"),
            status.total(s.get("track"), "alpr_track_messages_received_total"),
            status.total(s.get("ocr"), "alpr_ocr_jobs_total"),
            status.total(s.get("events"), "alpr_events_reads_total"),
        )
        now = time.monotonic()
        if signature != self._signature or self._quiet_since is None:
            self._signature = signature
            self._quiet_since = now
            return False
        still = now - self._quiet_since
        if detect_pending > 0 or ocr_pending > 0:
            # Work in hand: wait for it, unless nothing moved for so long that the count must be off.
            return still >= STUCK_S
        return still >= QUIET_S

    # --- the end ----------------------------------------------------------------------------------------

    async def _finish(self) -> int:
        sup = self.sup
        groups = plan.stop_order([c.spec for c in sup.children.values()])
        by_name = sup.children
        if self.failed.is_set() or self.stop_requested.is_set() or not self.finite:
            self._report(await sup.stop_all([[by_name[s.name] for s in g] for g in groups]))
            if self.failure is not None:
                self.say(self.failure)
                return 1
            self.say("alpr run: stopped; data kept in " + str(self.layout.data if self.layout else ""))
            return 0
        self.draining = True
        seconds = time.monotonic() - self._started
        edge = [g for g in groups if g[0].stage not in {"persist", "query", "postgres"}]
        self.say("alpr run: every source ended; finishing open tracks and storing the last events")
        for group in edge:
            self._report(await sup.stop_all([[by_name[s.name] for s in group]]))
            if group[0].stage == "track" and "ocr" in by_name:
                # The ended tracks may still be due a last read: let OCR answer every job first.
                await self._until(self._settled("ocr"), SETTLE_TIMEOUT_S)
            if group[0].stage in {"ocr", "ocr-worker"} and "events" in by_name:
                await self._until(self._settled("events"), SETTLE_TIMEOUT_S)
        stored = await self._until(self._stored(), STORE_TIMEOUT_S)
        if not stored and not self.stop_requested.is_set():
            self.say("alpr run: persist did not store every event in time; the rest stays in the outbox")
        if "persist" in by_name:
            self._report({"persist": await sup.stop(by_name["persist"])})
        self.summary = RunSummary(self.cameras, seconds, int(self._frames.value), int(self._reads.value))
        try:
            self.summary.events = await stored_events(self.database_url, self.cameras, self._started_wall)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            self.say(f"alpr run: cannot read the stored events for the summary: {exc}")
        api_key = await self._api_key() if self.api_url else None
        note = None
        if self.api_url is None:
            note = (
                "the events are in the database; the API was not started (--no-api)"
                if _module_exists("alpr_query.service")
                else "the query API (`alpr query`) is not built yet (issue 11); the events are in the database"
            )
        elif self.options.keep_serving:
            note = "the API stays up until Ctrl-C (--keep-serving)"
        else:
            note = (
                "the API stopped with the run; `alpr run --keep-serving …` (or `alpr run` alone) keeps it up"
            )
        self.say(render(self.summary, api=self.api_url, api_key=api_key, note=note))
        if self.options.keep_serving:
            self.say(f"alpr run: serving until Ctrl-C (database: {self.database_url})")
            await self._until(self.stop_requested.wait(), None)
        rest = [g for g in groups if g[0].stage in {"query", "postgres"}]
        self._report(await sup.stop_all([[by_name[s.name] for s in g] for g in rest]))
        return 1 if self.failed.is_set() else 0

    def _report(self, codes: dict[str, int | None]) -> None:
        """A stage that did not stop cleanly (drain timeout, SIGKILL, error) is named with its log."""
        for name, code in codes.items():
            if code not in (0, None) and self.sup.children[name].state != "failed":  # failed: already said
                log = self.sup.children[name].log_path
                self.say(f"alpr run: {name} exited with code {code} while stopping; see {log}")

    async def _settled(self, name: str) -> bool:
        """True once a stage has nothing queued and its counters stayed still for `SETTLE_S`."""
        port = self.sup.children[name].spec.metrics_port or 0
        last: tuple[float, ...] | None = None
        still_since = time.monotonic()
        while True:
            samples = await status.scrape(self.client, port)
            if samples is None:
                return False  # gone: nothing to wait for
            self._model.update(name, samples)
            self._reads.update(
                status.total(self._model.samples.get("ocr"), "alpr_ocr_jobs_total", outcome="answered")
            )
            queued = status.total(samples, "alpr_ocr_queue_jobs") + status.total(
                samples, "alpr_ocr_in_flight_jobs"
            )
            now_sig = (
                status.total(samples, "alpr_ocr_jobs_total"),
                status.total(samples, "alpr_ocr_plate_reads_total"),
                status.total(samples, "alpr_events_reads_total"),
                queued,
            )
            now = time.monotonic()
            if now_sig != last or queued:
                last, still_since = now_sig, now
            elif now - still_since >= SETTLE_S:
                return True
            await asyncio.sleep(0.25)

    async def _stored(self) -> bool:
        """True once persist took every plate event out of the outbox (embedded) or caught up (Kafka)."""
        layout = self.lay
        if self.options.kafka is None:
            while True:
                if await asyncio.to_thread(_outbox_rows, layout.outbox) == 0:
                    return True
                await asyncio.sleep(0.2)
        last: float | None = None
        while True:
            await asyncio.sleep(1.0)
            samples = await status.scrape(self.client, self.sup.children["persist"].spec.metrics_port or 0)
            records = status.total(samples, "alpr_persist_records_total")
            lag = status.total(samples, "alpr_persist_consumer_lag_messages")
            if samples is not None and lag == 0 and records == last:
                return True
            last = records

    async def _api_key(self) -> str | None:
        """A read key for this local run, through `alpr keys create` (the query service's own tool)."""
        layout = self.lay
        command = [
            sys.executable, "-m", "alpr_shared.cli", "keys", "create",
            "--config", str(layout.config), "--name", "alpr-run", "--scope", "read", "--expires-days", "30",
        ]  # fmt: skip
        try:
            result = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        for token in result.stdout.split():
            if token.startswith("alpr_"):
                return token
        return None

    async def _cleanup(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.supervisor is not None:
            await self.supervisor.close()
        namespace = getattr(self, "namespace", None)
        if namespace is not None:
            reclaim_stale_segments(namespace)
            prefix = f"alpr.{namespace}."
            leftovers = [p.name for p in SHM_DIR.glob(prefix + "*")] if SHM_DIR.is_dir() else []
            if leftovers:
                self.say(f"alpr run: shared memory still in use: {leftovers}")
        if self.layout is not None:
            shutil.rmtree(self.layout.runtime, ignore_errors=True)


def _remove_stale_runtime_dirs() -> None:
    """Runtime directories (sockets only) of runs whose supervisor was killed before it could clean up."""
    for path in Path(tempfile.gettempdir()).glob("alpr-run-*-*"):
        pid = path.name.split("-")[2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _outbox_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    except sqlite3.Error:
        return -1


def _module_exists(name: str) -> bool:
    import importlib.util  # noqa: PLC0415

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def run(options: RunOptions, *, status_mode: StatusMode, out: TextIO | None = None) -> int:
    runner = Run(options, status_mode=status_mode, out=out)
    result: int = asyncio.run(runner.execute())
    return result
