"""`alpr query` and `alpr keys` as a user runs them: separate processes, a real PostgreSQL, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harness import free_port
from tests.integration.test_query_api import query_db

pytestmark = pytest.mark.integration
__all__ = ["query_db"]  # a fixture shared with test_query_api

ALPR = [sys.executable, "-m", "alpr_shared.cli"]


def _config(tmp_path: Path, dsn: str, port: int) -> Path:
    config = {
        "database": {"url": dsn},
        "query": {"port": port, "watchlist_publish": False, "key_cache_s": 0},
        "services": {"query": {"metrics_port": 0, "shutdown_timeout_s": 5}},
        "log": {"format": "json"},
    }
    path = tmp_path / "alpr.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _keys(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ALPR, "keys", *args, "-c", str(config)], capture_output=True, text=True, timeout=60, check=False
    )


def test_keys_cli_and_the_service_under_sigterm(tmp_path: Path, query_db: str) -> None:
    port = free_port()
    config = _config(tmp_path, query_db, port)
    created = _keys(config, "create", "--name", "ops", "--scope", "read", "--scope", "write")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("alpr_") and "\n" not in key and "shown only now" in created.stderr
    listed = _keys(config, "list")
    assert listed.returncode == 0 and "ops" in listed.stdout and "read,write" in listed.stdout
    assert key not in listed.stdout and key[:14] in listed.stdout
    key_id = key.split("_")[1]
    assert key_id in listed.stdout

    log_path = tmp_path / "query.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*ALPR, "query", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            response = client.get("/v1/events", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200 and response.json()["items"] == []
            assert client.get("/v1/events").status_code == 401
            assert client.get("/docs").status_code == 200
            assert "alpr_query_http_requests_total" in client.get("/metrics").text
            revoked = _keys(config, "revoke", key_id)
            assert revoked.returncode == 0 and key_id in revoked.stdout
            assert client.get("/v1/events", headers={"X-API-Key": key}).status_code == 401
        assert _keys(config, "revoke", "nope").returncode == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert "query_listening" in output and "service_stopped" in output
    assert key not in output


def test_a_port_in_use_is_a_configuration_error(tmp_path: Path, query_db: str) -> None:
    import socket  # noqa: PLC0415 - only this test holds a port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config = _config(tmp_path, query_db, taken.getsockname()[1])
        run = subprocess.run(
            [*ALPR, "query", "-c", str(config)], capture_output=True, text=True, timeout=60, check=False
        )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "cannot listen" in run.stdout + run.stderr


def test_keys_cli_without_a_database_says_so(tmp_path: Path) -> None:
    config = _config(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", free_port())
    run = _keys(config, "list")
    assert run.returncode == 1 and "cannot connect" in run.stderr
