"""schemathesis against the query API's own OpenAPI schema, on a started server (uvicorn in a thread, the
app owning its pool) over a real PostgreSQL with stored events: for every operation, generated requests
with a valid admin key must get no server error (5xx) and only documented, schema-conforming answers
(status codes, content types, headers, bodies). Bounded by `max_examples` to stay well under a minute."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import uvicorn

from alpr_persist import migrate
from alpr_persist.store import PlateStore, init_connection
from alpr_persist.synthetic import make_event
from alpr_query.app import create_app
from alpr_query.db import Database
from alpr_query.keys.repository import KeyRepository
from alpr_shared.settings import PersistSettings
from tests.harness import PostgresServer, free_port, unique_database_name
from tests.integration.test_query_api import query_settings

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 20


@dataclass
class Server:
    base_url: str
    keys: list[str]  # two admin keys: the revocation run must not revoke the key of the main run


async def _prepare(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate.migrate(conn, PersistSettings())
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, init=init_connection)
    try:
        events = [make_event(i, cameras=3, jpeg_bytes=64 if i % 2 else 0) for i in range(200)]
        await PlateStore(pool, PersistSettings(), "partitioned").write(events)
        repo = KeyRepository(Database(pool))
        keys = [(await repo.create(f"schemathesis-{i}", ["admin"]))[1] for i in range(2)]
    finally:
        await pool.close()
    return keys


@pytest.fixture(scope="module")
def query_server(postgres_server: PostgresServer) -> Iterator[Server]:
    name = unique_database_name("schemathesis")
    dsn = postgres_server.create_database(name)
    try:
        keys = asyncio.run(_prepare(dsn))
        port = free_port()
        app = create_app(query_settings(dsn, cors_origins=["https://ui.example"]))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="query-under-test", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the query server did not start"
            time.sleep(0.05)
        try:
            yield Server(base_url=f"http://127.0.0.1:{port}", keys=keys)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            assert not thread.is_alive(), "the query server did not stop"
    finally:
        postgres_server.drop_database(name)


# What "0 server errors and 0 schema violations" means, as schemathesis checks.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


def _schemathesis(server: Server, key: str, workdir: Path, *selection: str) -> str:
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.base_url}/docs/openapi.json",
        "--header",
        f"Authorization: Bearer {key}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "2",
        "--report-dir",
        str(workdir),
        *selection,
    ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=workdir)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert " failed" not in output.split("Test cases:")[-1], output[-3000:]
    assert "Authentication failed" not in output, output[-3000:]
    return output


def test_every_operation_conforms_to_the_openapi_schema(query_server: Server, tmp_path: Path) -> None:
    # Key revocation in a run of its own: its stateful phase may revoke the key it runs with (it can read
    # key ids from GET /v1/keys), after which every other operation would only see 401s.
    main = _schemathesis(query_server, query_server.keys[0], tmp_path, "--exclude-path-regex", "/revoke$")
    assert "Tested: 14" in main, main[-2000:]
    revoke = _schemathesis(query_server, query_server.keys[1], tmp_path, "--include-path-regex", "/revoke$")
    assert "Tested: 1" in revoke, revoke[-2000:]
