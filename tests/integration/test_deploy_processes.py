"""The compose deployment's containers, run as processes on this machine (no Docker engine here): each
service starts with the command, the mounted configuration and the `ALPR_*` environment its compose
service gives it — only host names and ports are mapped to this machine — and the images' health check
script (`deploy/docker/healthcheck.py`) judges it from its command line, as Docker's HEALTHCHECK would.

Edge: track, the OCR coordinator and an OCR worker that reaches the coordinator over TCP the way
`--scale ocr-worker=N` replicas do. Server: the one-shot `alpr db migrate`, then persist, against a real
PostgreSQL and Kafka-protocol broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.kafka import KafkaBroker
from tests.harness.ports import free_port
from tests.unit.test_deploy_compose import interpolate_tree, read_env_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
ALPR = Path(sys.executable).parent / "alpr"  # the console script, as in the images' venv


def compose_service(file: str, env_example: str, name: str) -> tuple[list[str], dict[str, str]]:
    """(command, environment) of a compose service with its env example interpolated."""
    doc = yaml.safe_load((COMPOSE / file).read_text(encoding="utf-8"))
    body = interpolate_tree(doc["services"][name], read_env_file(COMPOSE / env_example))
    return body["command"], {k: str(v) for k, v in body.get("environment", {}).items()}


def write_config(source: Path, tmp: Path, changes: dict[str, Any]) -> Path:
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp / source.name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start(command: list[str], config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`alpr <service> --config <config>` as the container runs it (the mounted file replaced)."""
    assert command[0] == "alpr" and command[-2:] == ["--config", "/etc/alpr/alpr.yaml"], command
    argv = [str(ALPR), *command[1:-1], str(config)]
    with log.open("wb") as stderr:
        return subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **env, "ALPR_LOG__FORMAT": "json"},
        )


def healthcheck(pid: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPR_")}
    proc = subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**env, "ALPR_HEALTH_PID": str(pid)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode


def wait_healthy(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args!r} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if healthcheck(proc.pid) == 0:
            return
        time.sleep(0.3)
    pytest.fail(f"{proc.args!r} not healthy after {timeout} s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def test_edge_containers_start_connect_and_pass_their_health_check(tmp_path: Path) -> None:
    jobs_port = free_port()
    ports = {svc: free_port() for svc in ("track", "ocr", "ocr_worker")}
    config = write_config(
        COMPOSE / "config" / "edge.yaml",
        tmp_path,
        {
            "runtime_dir": str(tmp_path / "run"),
            "frame_store.namespace": f"deploytest{os.getpid()}",
            "endpoints.ocr_jobs": f"bind:tcp://127.0.0.1:{jobs_port}",
            **{f"services.{svc}.metrics_port": port for svc, port in ports.items()},
        },
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for svc in ("track", "ocr", "ocr-worker"):
            command, env = compose_service("edge.yaml", "edge.env.example", svc)
            if svc == "ocr-worker":  # the compose host name `ocr` is this machine here
                assert env["ALPR_ENDPOINTS__OCR_JOBS"] == "connect:tcp://ocr:5560"
                env["ALPR_ENDPOINTS__OCR_JOBS"] = f"connect:tcp://127.0.0.1:{jobs_port}"
            log = tmp_path / f"{svc}.log"
            procs[svc] = start(command, config, env, log)
            wait_healthy(procs[svc], log)
        # The worker reached the coordinator over TCP, as a scaled replica does.
        deadline = time.monotonic() + 20
        while "alpr_ocr_workers_count 1.0" not in scrape(ports["ocr"]):
            assert time.monotonic() < deadline, scrape(ports["ocr"])
            time.sleep(0.3)
    finally:
        codes = {svc: stop(proc) for svc, proc in procs.items()}
    assert codes == {"track": 0, "ocr": 0, "ocr-worker": 0}
    assert healthcheck(procs["track"].pid) == 1  # gone: the check fails instead of hanging


def test_server_containers_migrate_then_persist_passes_its_health_check(
    tmp_path: Path, postgres_db: str, kafka_broker: KafkaBroker
) -> None:
    metrics_port = free_port()
    config = write_config(
        COMPOSE / "config" / "server.yaml",
        tmp_path,
        {"services.persist.metrics_port": metrics_port},
    )
    server_env = {
        "ALPR_KAFKA__BOOTSTRAP": kafka_broker.bootstrap,
        "ALPR_DATABASE__URL": postgres_db,
        # The test cluster trusts local connections: no password (compose passes POSTGRES_PASSWORD).
        "PGPASSWORD": "",
    }
    migrate_cmd, migrate_env = compose_service("server.yaml", "server.env.example", "migrate")
    assert migrate_cmd[1:3] == ["db", "migrate"]
    assert migrate_env["PGPASSWORD"] == "change-me" and "@timescaledb:" in migrate_env["ALPR_DATABASE__URL"]
    log = tmp_path / "migrate.log"
    migrate = start(migrate_cmd, config, {**migrate_env, **server_env}, log)
    assert migrate.wait(120) == 0, log.read_text()[-2000:]

    persist_cmd, persist_env = compose_service("server.yaml", "server.env.example", "persist")
    log = tmp_path / "persist.log"
    persist = start(persist_cmd, config, {**persist_env, **server_env}, log)
    try:
        wait_healthy(persist, log, timeout=90)
        assert "alpr_persist_records_total" in scrape(metrics_port)
    finally:
        code = stop(persist)
    assert code == 0, log.read_text()[-2000:]
