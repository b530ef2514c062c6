"""Benchmark of `alpr query` on 1,000,000 stored plate events, against a bare Litestar + asyncpg endpoint
running the equivalent SQL, in the same run.

What it does, on a PostgreSQL 15 it starts itself (tests/harness; fsync off):
1. migrates a database (persist's migrations) and loads 1,000,000 events over the 29 days before the load,
   20 cameras, 200,000 distinct plates (about 5 sightings each), generated in SQL (`generate_series`),
   indexes built after the load, then ANALYZE (about 25 s). The cluster is kept (`--keep-db DIR`, default
   $TMPDIR/alpr-bench-query-db) and reused by later runs; `--fresh-db` loads it again.
2. starts two servers, each its own process with one worker, uvicorn + httptools, the same pool size
   (`--pool`, default 2 × cores + 1: see POOL):
   - ours: `python -m alpr_shared.cli query` (API keys with the cache, rate limit on but high, scope check,
     metrics, error handling, parameter checks — everything the service does);
   - bare: Litestar + asyncpg with no auth and no checks, answering the same SQL with the same JSON fields,
     with what the service does to its database access and process (`alpr_query.db`: generic plans, no
     reset round trip on release, connections first come first served (`FairPool`); `settle_gc`), so the
     ratio measures the API layer alone.
3. for each endpoint — `GET /v1/events?camera=cam-N&limit=50` (camera rotating) and the plate lookup
   `GET /v1/plates/{plate}` (plate rotating over known plates; bare: the service's own statement,
   `alpr_query.plates.repository.HISTORY_SQL`) — runs wrk (Debian `wrk`; one thread, 50 keep-alive
   connections, a Lua script that rotates the paths), bare and ours alternating in short slices (8 × 5 s
   each; `--quick` 2 × 2 s) so that both see the same background load, and pools req/s and latency
   percentiles over all slices. Every answer must be a 200 and wrk must report no socket error.
4. reads the query process's peak RSS (VmHWM from /proc) before stopping it, each server's CPU time per
   request (user + system, psutil) and wrk's: on a shared machine the req/s ratio moves with the
   background load, the CPU cost per request much less. It also reports how much CPU other processes took
   during the slices (the machine's busy time less both servers, PostgreSQL and wrk): the figures are
   from a quiet machine only when that is near 0.

Targets (issue 11): ours ≥ 80 % of the bare endpoint's req/s on each endpoint, p99 ≤ 100 ms, query process
peak RSS ≤ 256 MB. The machine has 2 cores shared by PostgreSQL, the servers and wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench/query.py` runs as a script

import asyncpg
import psutil
import yaml
from tests.harness import PostgresServer, ServerError, ServerStartError, free_port

from alpr_persist import migrate, partitions
from alpr_persist.store import init_connection
from alpr_shared.settings import PersistSettings
from bench._common import ROOT, bench_parser, finish, fmt, machine_line, table

EVENTS = 1_000_000
CAMERAS = 20
PLATES = 200_000
DAYS = 29
CONNECTIONS = 50
# Database connections of each server (both the same): PostgreSQL's sizing rule, 2 × cores + 1 (its wiki,
# "Number Of Database Connections"), as PostgreSQL shares this machine's cores with the server. More
# backends than that only take turns on the cores, and each one runnable preempts the server's single
# thread: at 10 on 2 cores the plate look-up's p99 was 2-3× that at 5 for 8 % more req/s (`--pool 10`).
POOL = 2 * (os.cpu_count() or 1) + 1
TARGET_RATIO = 0.80
TARGET_P99_MS = 100.0
TARGET_RSS_MB = 256.0
LOAD_MARKER = "bench_query_load_v2"
DEFAULT_KEEP_DIR = Path(tempfile.gettempdir()) / "alpr-bench-query-db"

# Only this module's integer constants are spliced into the SQL.
LOAD_SQL = f"""
INSERT INTO plate_events (
    event_id, first_seen, last_seen, revision, camera_id, site_id, camera_name, plate, plate_raw, region,
    format_valid, corrected, confidence, track_id, tracks, reads, final, best_shot_at, direction,
    vehicle_class, plate_box, crossed_line, watchlist, has_plate_image, has_vehicle_image, schema_version,
    emitted_at)
SELECT
    'ev-' || lpad(i::text, 8, '0'),
    t, t + interval '3 seconds', 1,
    'cam-' || (i % {CAMERAS}), 'site-' || (i % {CAMERAS} / 5), 'Gate ' || (i % {CAMERAS}),
    p, p, 'us', (i % 10) <> 0, false, 0.5 + ((i * 37) % 50) / 100.0, i, 1, 3, true,
    t + interval '1 second', (ARRAY['in', 'out'])[1 + i % 2], (ARRAY['car', 'truck', 'bus'])[1 + i % 3],
    ARRAY[100, 200, 220, 240]::real[], false,
    CASE WHEN i % 97 = 0 THEN ARRAY['stolen'] ELSE '{{}}'::text[] END, false, false, 1, t + interval '4 seconds'
FROM (
    SELECT i,
           now() - (i * ({DAYS} * 86400.0 / {EVENTS})) * interval '1 second' AS t,
           chr(65 + (k % 23)) || chr(65 + (k / 23 % 23)) || chr(65 + (k / 529 % 23))
               || lpad((k / 12167 % 1000)::text, 3, '0') AS p
    FROM (SELECT i, ((i::bigint * 7919) % {PLATES})::int AS k FROM generate_series(1, {EVENTS}) AS i) AS s
) AS g
"""  # noqa: S608


# ------------------------------------------------------------------------------------------ database


def _kept_server(directory: Path, *, new_port: bool = False) -> PostgresServer:
    """A cluster whose directory outlives the run (`--keep-db`): reused when it already holds data."""
    directory.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(base_dir=directory, port=_kept_port(directory, new=new_port))
    existing = sorted(p for p in directory.glob("alpr-pg-*") if (p / "data" / "PG_VERSION").exists())
    if existing:
        server._workdir = existing[-1]  # the harness has no "reuse this data directory" option
    return server


def _start_kept(directory: Path) -> PostgresServer:
    server = _kept_server(directory)
    try:
        server.start()
    except ServerStartError:  # most likely the kept port is taken now: once more on a fresh one
        server = _kept_server(directory, new_port=True)
        server.start()
    atexit.unregister(server.close)  # the kept cluster must survive this process
    return server


def _kept_port(directory: Path, *, new: bool) -> int:
    path = directory / "port"
    if path.exists() and not new:
        return int(path.read_text())
    port = free_port()
    path.write_text(str(port))
    return port


async def prepare(dsn: str) -> float:
    """Migrate and load the events (skipped when already loaded); returns the load time in s (0: reused)."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", LOAD_MARKER):
            count = await conn.fetchval("SELECT count(*) FROM plate_events")
            if count == EVENTS:
                return 0.0
        started = time.perf_counter()
        await migrate.migrate(conn, PersistSettings())
        today = partitions.today_utc()
        await partitions.ensure_partitions(
            conn, "plate_events", {today - timedelta(days=d) for d in range(DAYS + 2)}
        )
        await conn.execute("TRUNCATE plate_events, plate_events_hourly, cameras")
        indexes = await conn.fetch(
            """SELECT indexname, indexdef FROM pg_indexes
               WHERE tablename = 'plate_events' AND indexname <> 'plate_events_pkey'"""
        )
        for row in indexes:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        await conn.execute(LOAD_SQL)
        for row in indexes:
            # pg_indexes shows a partitioned index as `ON ONLY` (the parent alone, no partition builds it).
            await conn.execute(row["indexdef"].replace(" ON ONLY ", " ON ", 1))
        await conn.execute(
            """INSERT INTO plate_events_hourly (bucket, camera_id, events, format_valid, watchlist_hits, confidence_sum)
               SELECT date_trunc('hour', first_seen, 'UTC'), camera_id, count(*),
                      count(*) FILTER (WHERE format_valid), count(*) FILTER (WHERE watchlist <> '{}'),
                      sum(confidence)
               FROM plate_events GROUP BY 1, 2"""
        )
        await conn.execute(
            """INSERT INTO cameras (camera_id, site_id, name, first_event_at, last_event_at)
               SELECT camera_id, min(site_id), min(camera_name), min(first_seen), max(first_seen)
               FROM plate_events GROUP BY camera_id"""
        )
        await conn.execute("VACUUM ANALYZE plate_events")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {LOAD_MARKER} ()")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def sample_plates(dsn: str, n: int) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT plate FROM plate_events WHERE first_seen > now() - interval '1 day' GROUP BY plate LIMIT $1",
            n,
        )
        return [r["plate"] for r in rows]
    finally:
        await conn.close()


async def create_key(dsn: str) -> str:
    from alpr_query.db import Database  # noqa: PLC0415 - only the main process needs the service's code
    from alpr_query.keys.repository import KeyRepository  # noqa: PLC0415

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, init=init_connection)
    try:
        return (await KeyRepository(Database(pool)).create("bench", ["read"]))[1]
    finally:
        await pool.close()


# ------------------------------------------------------------------------------------- bare server


def bare_server(dsn: str, port: int, pool_size: int) -> None:
    """Litestar + asyncpg, no auth, no checks: the same SQL and JSON fields as the service."""
    import uvicorn  # noqa: PLC0415 - only the bare server's process needs these
    from litestar import Litestar, get  # noqa: PLC0415

    from alpr_query.db import SESSION_SETTINGS, FairPool, keep_session  # noqa: PLC0415
    from alpr_query.events.repository import SUMMARY_COLUMNS  # noqa: PLC0415
    from alpr_query.plates.repository import HISTORY_SQL, SUMMARY_AT  # noqa: PLC0415
    from alpr_query.service import settle_gc  # noqa: PLC0415

    cols = ", ".join(SUMMARY_COLUMNS)
    state: dict[str, FairPool] = {}

    async def startup() -> None:
        # What the service does to its process and pool, so the ratio measures the API layer: the same
        # session settings, connections handed out first come first served, the same GC settings.
        state["pool"] = FairPool(
            await asyncpg.create_pool(
                dsn, min_size=1, max_size=pool_size, reset=keep_session, server_settings=SESSION_SETTINGS
            )
        )
        settle_gc()

    async def shutdown() -> None:
        await state["pool"].close()

    @get("/v1/events")
    async def events(camera: str, limit: int = 50) -> dict[str, Any]:
        rows = await state["pool"].fetch(
            f"SELECT {cols} FROM plate_events WHERE camera_id = $1 "  # noqa: S608 - constant columns
            "ORDER BY first_seen DESC, event_id DESC LIMIT $2",
            camera,
            limit + 1,
        )
        return {"items": [dict(r) for r in rows[:limit]], "next": None, "limit": limit}

    @get("/v1/plates/{plate:str}")
    async def plate(plate: str) -> dict[str, Any]:
        # The service's own statement (one round trip): the newest 100 sightings and every camera's totals.
        rows = await state["pool"].fetch(HISTORY_SQL, plate, None, None, 100)
        cameras: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r[0] not in cameras:
                cameras[r[0]] = {"camera_id": r[0], "count": r[1], "first_seen": r[2], "last_seen": r[3]}
        return {
            "plate": plate,
            "cameras": sorted(cameras.values(), key=lambda c: c["last_seen"], reverse=True),
            "sightings": [dict(zip(SUMMARY_COLUMNS, r[SUMMARY_AT:], strict=True)) for r in rows if r[4]],
        }

    app = Litestar([events, plate], on_startup=[startup], on_shutdown=[shutdown], logging_config=None)
    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", log_level="warning", access_log=False)


# ---------------------------------------------------------------------------------- load generator

# wrk (Debian `wrk`, C, one event-driven thread) drives the load: it needs a few % of one core at these
# rates, where the asyncio generator used before took a full share of the 2 cores the servers and
# PostgreSQL need. Each thread rotates over the paths (one request string built per path in `init`, so
# `request()` is a table look-up); `response()` counts answers other than 200 (wrk's own `errors.status`
# counts only > 399); `done()` prints one JSON line: totals, errors and the latency distribution as
# quantiles (wrk keeps a histogram per µs; `percentile()` reads it), fine-grained at the tail so that the
# slices of a run can be pooled into one distribution (`pooled_percentile`).
WRK_SCRIPT = r"""
local threads = {}

function setup(thread)
   thread:set("offset", #threads * 7919)
   table.insert(threads, thread)
end

function init(args)
   reqs = {}
   for line in io.lines(args[1]) do
      reqs[#reqs + 1] = wrk.format("GET", line)
   end
   n = #reqs
   i = offset or 0
   non200 = 0
end

function request()
   i = i + 1
   return reqs[i % n + 1]
end

function response(status, headers, body)
   if status ~= 200 then
      non200 = non200 + 1
   end
end

function done(summary, latency, requests)
   local bad = 0
   for _, t in ipairs(threads) do
      bad = bad + t:get("non200")
   end
   local e = summary.errors
   local q = {}
   local p = 0.5
   while p < 90 do
      q[#q + 1] = string.format("[%.2f,%d]", p, latency:percentile(p))
      p = p + 0.5
   end
   for k = 9000, 9999 do
      q[#q + 1] = string.format("[%.2f,%d]", k / 100, latency:percentile(k / 100))
   end
   q[#q + 1] = string.format("[100,%d]", latency.max)
   io.write(string.format(
      'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"non200":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"quantiles_us":[%s]}\n',
      summary.requests, summary.duration, summary.bytes, bad,
      e.connect, e.read, e.write, e.status, e.timeout, table.concat(q, ",")))
end
"""
WRK_THREADS = 1  # one thread serves > 20k req/s; a second would only add a runnable thread on 2 cores
WRK_TIMEOUT_S = 10  # wrk's default (2 s) would count a slow answer as an error instead of a latency


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(
            "bench/query.py needs wrk (the HTTP load generator): install the Debian package `wrk` "
            "(scripts/install-system-deps.sh does)"
        )
    return found


def run_load(port: int, paths: list[str], headers: str, seconds: float, wrk: str) -> dict[str, Any]:
    """One slice: wrk with CONNECTIONS keep-alive connections for `seconds` on `paths`, rotating.

    `headers`: one `Name: value` header or ""."""
    with tempfile.TemporaryDirectory(prefix="bench-query-wrk-") as tmp:
        script = Path(tmp) / "rotate.lua"
        script.write_text(WRK_SCRIPT)
        path_file = Path(tmp) / "paths.txt"
        path_file.write_text("".join(f"{p}\n" for p in paths))
        command = [
            wrk,
            f"-t{WRK_THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{round(seconds)}s",
            f"--timeout={WRK_TIMEOUT_S}s",
            "-s",
            str(script),
            *(["-H", headers] if headers else []),
            f"http://127.0.0.1:{port}",
            "--",
            str(path_file),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout!r} {done.stderr!r}")
    raw = json.loads(line.removeprefix("WRK_RESULT "))
    requests = int(raw["requests"])
    # Each quantile point stands for the requests between it and the previous one.
    weighted: list[tuple[float, float]] = []
    previous = 0.0
    for q, value_us in raw["quantiles_us"]:
        weighted.append((value_us / 1000.0, requests * (q - previous) / 100.0))
        previous = q
    return {
        "requests": requests,
        "seconds": raw["duration_us"] / 1e6,
        "bytes": raw["bytes"],
        "non200": raw["non200"],
        "errors": raw["errors"],
        "latency_ms_weighted": weighted,
    }


def pooled_percentile(runs: list[dict[str, Any]], q: float) -> float:
    """The q-th percentile of all slices' requests together (each slice's distribution as weighted
    quantile points: exact to the grid, 0.5 points below p90 and 0.01 above)."""
    points: list[tuple[float, float]] = sorted(p for r in runs for p in r["latency_ms_weighted"])
    total = sum(w for _, w in points)
    if total <= 0:
        return float("nan")
    rank = total * q / 100.0
    seen = 0.0
    for value, weight in points:
        seen += weight
        if seen >= rank - 1e-9:
            return value
    return points[-1][0]


# ------------------------------------------------------------------------------------------- main


def _wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} not ready after {timeout} s")
        time.sleep(0.2)


def _busy_s() -> float:
    """CPU time processes ran since boot (all cores: user, nice, system; guest time is inside user).
    Interrupt time is left out: the kernel's loopback network work for the bench's own traffic lands there,
    charged to no process, and would read as "other processes" growing with the request rate."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system)


def _tree_cpu_s(pids: list[int]) -> float:
    """CPU time of these processes and their children (PostgreSQL's backends are the postmaster's)."""
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for p in [process, *process.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = p.cpu_times()
                    total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def _children_cpu_s() -> float:
    """CPU time (user + system) of the finished children of this process: wrk's, after each slice."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--keep-db",
        type=Path,
        default=DEFAULT_KEEP_DIR,
        help=f"where the cluster with the loaded events is kept for later runs (default {DEFAULT_KEEP_DIR})",
    )
    parser.add_argument(
        "--fresh-db", action="store_true", help="delete the kept cluster first and load again"
    )
    parser.add_argument(
        "--pool",
        type=int,
        default=POOL,
        help=f"database connections of each server (both the same; default {POOL})",
    )
    parser.add_argument("--bare-server", nargs=3, metavar=("DSN", "PORT", "POOL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server[0], int(args.bare_server[1]), int(args.bare_server[2]))
        return 0
    wrk = wrk_binary()  # before the minute of setup, not after it

    # Bare and ours alternate in short slices, so both see the same background load (the machine is shared).
    seconds = 2.0 if args.quick else 5.0
    rounds = 2 if args.quick else 8
    print(machine_line())
    print(
        f"{EVENTS:,} events, {CAMERAS} cameras, {PLATES:,} plates; {CONNECTIONS} connections, "
        f"{rounds} alternating slices of {seconds:.0f} s per server and endpoint, servers: 1 process each, pool {args.pool}"
    )
    print(f"load generator: {wrk} ({WRK_THREADS} thread, {CONNECTIONS} keep-alive connections)")
    if args.fresh_db and args.keep_db.exists():
        shutil.rmtree(args.keep_db)
    pg = _start_kept(args.keep_db)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        try:
            dsn = pg.create_database("bench_query")
        except ServerError:  # already there in a kept cluster
            dsn = pg.dsn_for("bench_query")
        load_s = asyncio.run(prepare(dsn))
        print(
            f"load: {'reused the kept database' if load_s == 0 else f'{load_s:.1f} s (SQL generate_series, indexes after)'}"
        )
        key = asyncio.run(create_key(dsn))
        plates = asyncio.run(sample_plates(dsn, 2000))
        ours_port, bare_port = free_port(), free_port()
        workdir = Path(tempfile.mkdtemp(prefix="bench-query-"))
        config = workdir / "alpr.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "database": {"url": dsn},
                    "query": {
                        "port": ours_port,
                        "pool_size": args.pool,
                        "watchlist_publish": False,
                        "rate_limit_per_s": 1_000_000,  # on (the code path runs) but never the limit
                        "rate_limit_burst": 1_000_000,
                    },
                    "services": {"query": {"metrics_port": 0}},
                    "log": {"level": "warning", "format": "json"},
                }
            )
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        ours = subprocess.Popen(
            [sys.executable, "-m", "alpr_shared.cli", "query", "-c", str(config)], env=env, cwd=ROOT
        )
        procs.append(ours)
        bare = subprocess.Popen(
            [sys.executable, __file__, "--bare-server", dsn, str(bare_port), str(args.pool)],
            env=env,
            cwd=ROOT,
        )
        procs.append(bare)
        _wait_http(ours_port, "/health/ready", ours)
        _wait_http(bare_port, "/v1/events?camera=cam-1", bare)

        endpoints = {
            "events?camera": [f"/v1/events?camera=cam-{i % CAMERAS}&limit=50" for i in range(CAMERAS)],
            "plates/{plate}": [f"/v1/plates/{p}" for p in plates],
        }
        auth = f"Authorization: Bearer {key}"
        for paths in endpoints.values():  # warm-up: connections, plans, caches
            run_load(ours_port, paths, auth, 1.0, wrk)
            run_load(bare_port, paths, "", 1.0, wrk)
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # What else ran during the slices: the machine's busy time less this bench's own processes
        # (both servers, PostgreSQL and its backends, wrk), as % of all cores.
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        own_pids = [ours.pid, bare.pid, postmaster]
        measured_s = other_s = 0.0
        servers = {"bare": (bare_port, ""), "ours": (ours_port, auth)}
        for round_ in range(rounds):
            for name, paths in endpoints.items():
                order = ("bare", "ours") if round_ % 2 == 0 else ("ours", "bare")
                for server in order:
                    port, headers = servers[server]
                    process = psutil.Process(ours.pid if server == "ours" else bare.pid)
                    before = sum(process.cpu_times()[:2])
                    wrk_before = _children_cpu_s()
                    busy_before, own_before, wall_before = _busy_s(), _tree_cpu_s(own_pids), time.monotonic()
                    result = run_load(port, paths, headers, seconds, wrk)
                    result["server_cpu_s"] = sum(process.cpu_times()[:2]) - before
                    result["wrk_cpu_s"] = _children_cpu_s() - wrk_before
                    measured_s += time.monotonic() - wall_before
                    other_s += (
                        (_busy_s() - busy_before) - (_tree_cpu_s(own_pids) - own_before) - result["wrk_cpu_s"]
                    )
                    results.setdefault((name, server), []).append(result)
        rss_mb = _peak_rss_mb(ours.pid)
        bare_rss_mb = _peak_rss_mb(bare.pid)
    finally:
        for proc in procs:
            _stop(proc)
        pg.stop()

    rows = []
    cpu_ratios: dict[str, float] = {}
    ours_rates: dict[str, float] = {}
    ratios: list[float] = []
    p99s: list[float] = []
    failures: list[str] = []
    for name in endpoints:
        rates = {}
        cpu_per_request: dict[str, float] = {}
        for server in ("bare", "ours"):
            runs = results[(name, server)]
            total = sum(r["requests"] for r in runs)
            rate = total / sum(r["seconds"] for r in runs)
            rates[server] = rate
            cpu_per_request[server] = 1000 * sum(r["server_cpu_s"] for r in runs) / max(total, 1)
            wrk_cpu = 1000 * sum(r["wrk_cpu_s"] for r in runs) / max(total, 1)
            p50 = pooled_percentile(runs, 50)
            p99 = pooled_percentile(runs, 99)
            bad = sum(r["non200"] for r in runs)
            errors = {k: sum(r["errors"][k] for r in runs) for k in runs[0]["errors"]}
            if bad:
                failures.append(f"{server} {name}: {bad} answers other than 200")
            if any(errors.values()):
                failures.append(f"{server} {name}: wrk errors {errors}")
            if not total:
                failures.append(f"{server} {name}: no request answered")
            if server == "ours":
                p99s.append(p99)
            rows.append(
                [
                    f"{name} ({server})",
                    f"{total:,}",
                    fmt(rate, 0),
                    fmt(p50, 1),
                    fmt(p99, 1),
                    fmt(cpu_per_request[server], 3),
                    fmt(wrk_cpu, 3),
                    f"{sum(r['bytes'] for r in runs) / max(total, 1):,.0f}",
                ]
            )
        ours_rates[name] = rates["ours"]
        ratios.append(rates["ours"] / rates["bare"])
        cpu_ratios[name] = cpu_per_request["ours"] / cpu_per_request["bare"]
        rows.append(
            [f"{name}: ours / bare", "", fmt(ratios[-1], 3), "", "", fmt(cpu_ratios[name], 3), "", ""]
        )
    print(
        table(
            [
                "endpoint (server)",
                "requests",
                "req/s",
                "p50 ms",
                "p99 ms",
                "server CPU ms/req",
                "wrk CPU ms/req",
                "bytes/answer",
            ],
            rows,
        )
    )
    print(f"peak RSS: query {rss_mb:.0f} MB, bare {bare_rss_mb:.0f} MB")
    cores = os.cpu_count() or 1
    other_pct = 100.0 * max(other_s, 0.0) / (measured_s * cores)
    print(
        f"other processes during the slices: {other_pct:.1f} % of the {cores} cores "
        "(machine busy time less both servers, PostgreSQL and wrk; near 0 = the figures are from a quiet machine)"
    )
    for failure in failures:
        print(f"ERROR: {failure}")
    ratio = min(ratios)
    p99_worst = max(p99s)
    passed = not failures and ratio >= TARGET_RATIO and p99_worst <= TARGET_P99_MS and rss_mb <= TARGET_RSS_MB
    return finish(
        "query",
        {
            "ratio": fmt(ratio, 3),
            "cpu_per_req_ratio": fmt(max(cpu_ratios.values()), 3),
            "events_rps": fmt(ours_rates["events?camera"], 0),
            "plates_rps": fmt(ours_rates["plates/{plate}"], 0),
            "p99_ms": fmt(p99_worst, 1),
            "rss_mb": fmt(rss_mb, 0),
            "other_cpu_pct": fmt(other_pct, 1),
        },
        f"ratio>={TARGET_RATIO},p99<={TARGET_P99_MS:.0f}ms,rss<={TARGET_RSS_MB:.0f}MB",
        passed,
    )


if __name__ == "__main__":
    sys.exit(main())
