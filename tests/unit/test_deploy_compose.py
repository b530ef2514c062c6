"""deploy/compose checked without a Docker engine: each file against the Compose Specification's JSON
schema (the copy vendored in check-jsonschema, with its licence), after interpolating the documented env
example the way `docker compose` does; plus what the schema cannot know: every container runs the same
`alpr <service>` command as `alpr run`, frame-sharing stages join one IPC namespace with enough shm,
scaled services have no fixed name or host port, every variable is documented, and the mounted alpr
configuration loads with the overrides the files set.
"""

from __future__ import annotations

import copy
import importlib.resources
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from alpr_shared.cli import SERVICES
from alpr_shared.settings import DEFAULT_METRICS_PORTS, AlprSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
OBS = ROOT / "deploy" / "observability"
# File → the env example it is documented by.
FILES = {
    "edge.yaml": "edge.env.example",
    "edge.jetson.yaml": "edge.env.example",
    "server.yaml": "server.env.example",
    "all-in-one.yaml": "all-in-one.env.example",
}
FRAME_STAGES = {"ingest", "detect", "track", "ocr"}  # map the frame rings (events gets crops as JPEG)
SCALED = {"ocr-worker", "persist"}
CONFIG_IN_CONTAINER = "/etc/alpr/alpr.yaml"


# --- Compose's variable interpolation (compose-spec: interpolation.md) --------------------------------

_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


class MissingVariable(KeyError):
    pass


def interpolate(value: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:  # noqa: PLR0911 - one return per compose operator
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        parsed = _BRACED.match(match.group("braced"))
        if parsed is None:
            raise ValueError(f"bad interpolation ${{{match.group('braced')}}}")
        name, op, arg = parsed.group("name"), parsed.group("op"), parsed.group("arg") or ""
        current = env.get(name)
        empty = not current
        if op == ":-":
            return arg if empty else str(current)
        if op == "-":
            return arg if current is None else current
        if op in {":?", "?"} and (current is None or (op == ":?" and empty)):
            raise MissingVariable(f"{name}: {arg}")
        if op == ":+":
            return "" if empty else arg
        if op == "+":
            return "" if current is None else arg
        return current or ""

    return _VAR.sub(replace, value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def variables(node: Any) -> Iterator[tuple[str, str | None]]:
    """(name, operator) of every variable a compose document uses."""
    if isinstance(node, str):
        for match in _VAR.finditer(node):
            if match.group("named"):
                yield match.group("named"), None
            elif match.group("braced") is not None:
                parsed = _BRACED.match(match.group("braced"))
                assert parsed, match.group(0)
                yield parsed.group("name"), parsed.group("op")
    elif isinstance(node, list):
        for item in node:
            yield from variables(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from variables(value)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


def test_interpolation_follows_compose() -> None:
    env = {"A": "1", "E": ""}
    assert interpolate("$A ${A} ${B:-x} ${E:-x} ${E-x} ${A:+y} ${B+y} $$A", env) == "1 1 x x  y  $A"
    with pytest.raises(MissingVariable, match="B: needed"):
        interpolate("${B:?needed}", env)
    with pytest.raises(MissingVariable):
        interpolate("${E:?needed}", env)


# --- loading ---------------------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((COMPOSE / name).read_text(encoding="utf-8"))
    return doc


def rendered(name: str) -> dict[str, Any]:
    """The file with its env example interpolated, `x-` extensions dropped (what compose runs)."""
    doc = interpolate_tree(load(name), read_env_file(COMPOSE / FILES[name]))
    return {k: v for k, v in doc.items() if not k.startswith("x-")}


def project(*names: str) -> dict[str, dict[str, Any]]:
    """Services of the files merged as `docker compose -f a -f b` does for the keys used here."""
    services: dict[str, dict[str, Any]] = {}
    for name in names:
        for svc, body in rendered(name).get("services", {}).items():
            merged = services.setdefault(svc, {})
            for key, value in body.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
    return services


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    return schema


@pytest.mark.parametrize("name", sorted(FILES))
def test_file_matches_the_compose_specification(name: str, compose_schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(compose_schema)
    for doc in (load(name), rendered(name)):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{name}: {errors}"


def test_schema_catches_a_misspelt_key(compose_schema: dict[str, Any]) -> None:
    doc = copy.deepcopy(load("edge.yaml"))
    doc["services"]["ingest"]["shm_sise"] = "1gb"
    assert not jsonschema.Draft202012Validator(compose_schema).is_valid(doc)


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_variable_is_documented_in_the_env_example(name: str) -> None:
    documented = read_env_file(COMPOSE / FILES[name])
    used = list(variables(load(name)))
    assert used or name == "all-in-one.yaml", name  # all-in-one only includes the other two
    undocumented = sorted({var for var, _ in used if var not in documented})
    assert not undocumented, f"{name} uses variables {FILES[name]} does not document: {undocumented}"
    for var, op in used:  # a required variable must have an example value, so the example is runnable
        if op in {":?", "?"}:
            assert documented[var], f"{var} is required by {name} but empty in {FILES[name]}"


def test_all_in_one_env_covers_what_the_included_files_require() -> None:
    env = read_env_file(COMPOSE / "all-in-one.env.example")
    for included in load("all-in-one.yaml")["include"]:
        assert included["env_file"] == "all-in-one.env"
        interpolate_tree(load(included["path"]), env)  # raises MissingVariable if one is missing


def test_real_env_files_are_never_committed() -> None:
    """The examples are committed; the copies with passwords (edge.env, server.env, …) are ignored."""
    for example in set(FILES.values()):
        assert example.endswith(".env.example")
    ignored = (COMPOSE / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "*.env" in ignored


# --- what the services run --------------------------------------------------------------------------


def alpr_services(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    return {
        name: body["command"]
        for name, body in services.items()
        if isinstance(body.get("command"), list) and body["command"][:1] == ["alpr"]
    }


@pytest.mark.parametrize("names", [("edge.yaml",), ("edge.yaml", "edge.jetson.yaml"), ("server.yaml",)])
def test_every_container_runs_an_alpr_command_like_alpr_run(names: tuple[str, ...]) -> None:
    services = project(*names)
    commands = alpr_services(services)
    assert commands
    for name, command in commands.items():
        if command[1] in SERVICES:
            # A long-running service: the compose service is named after its command, like `alpr run`'s.
            assert name == command[1], (name, command)
            assert command[2:] == ["--config", CONFIG_IN_CONTAINER], command
        else:  # a one-shot tool before the services start
            assert command[1] in {"models", "db"}, command
            assert services[name]["restart"] == "no"
        mounts = [m for m in services[name]["volumes"] if m.endswith(f":{CONFIG_IN_CONTAINER}:ro")]
        assert len(mounts) == 1, f"{name} must mount the configuration read-only at {CONFIG_IN_CONTAINER}"
        assert (COMPOSE / mounts[0].split(":")[0]).is_file()


def test_edge_and_server_together_run_every_service() -> None:
    commands = alpr_services(project("edge.yaml")) | alpr_services(project("server.yaml"))
    assert {c[1] for c in commands.values()} >= set(SERVICES)


def test_all_in_one_includes_edge_and_server() -> None:
    paths = [item["path"] for item in load("all-in-one.yaml")["include"]]
    assert paths == ["edge.yaml", "server.yaml"]
    assert not set(project("edge.yaml")) & set(project("server.yaml")), "service names must not clash"


def test_frame_stages_share_one_ipc_namespace_with_room_for_the_rings() -> None:
    services = project("edge.yaml")
    owners = [n for n, s in services.items() if s.get("ipc") == "shareable"]
    assert owners == ["shm"]
    size = services["shm"]["shm_size"]
    match = re.fullmatch(r"([0-9]+)(gb|mb)", size)
    assert match, size
    shm_bytes = int(match.group(1)) * (1 << 30 if match.group(2) == "gb" else 1 << 20)
    settings = load_settings(COMPOSE / "config" / "edge.yaml")
    store = settings.frame_store
    ring = store.slots_per_camera * store.max_width * store.max_height * 3
    assert shm_bytes >= ring * len(settings.cameras), "shm_size smaller than the example cameras' rings"
    for stage in FRAME_STAGES:
        assert services[stage]["ipc"] == "service:shm", stage
        assert "alpr-run:/run/alpr" in services[stage]["volumes"], stage
    assert "alpr-run:/run/alpr" in services["events"]["volumes"]


@pytest.mark.parametrize("name", sorted(FILES))
def test_scaling_needs_no_fixed_names_or_host_ports(name: str) -> None:
    for svc, body in project(name).items():
        assert "container_name" not in body, f"{svc}: container_name prevents --scale"
        if svc in SCALED:
            assert "ports" not in body, f"{svc}: a host port prevents --scale"
    assert "ipc" not in project("edge.yaml")["ocr-worker"], "workers need no shared memory: jobs carry crops"


def test_ocr_workers_reach_the_coordinator_over_the_network() -> None:
    services = project("edge.yaml")
    settings = load_settings(COMPOSE / "config" / "edge.yaml")
    coordinator = settings.endpoint("ocr_jobs")
    assert coordinator.startswith("bind:tcp://0.0.0.0:")
    port = coordinator.rsplit(":", 1)[1]
    assert port in services["ocr"]["expose"]
    worker_endpoint = services["ocr-worker"]["environment"]["ALPR_ENDPOINTS__OCR_JOBS"]
    assert worker_endpoint == f"connect:tcp://ocr:{port}"
    assert int(services["ocr-worker"]["deploy"]["replicas"]) >= 1


def test_jetson_override_reserves_the_gpu_for_decode_and_detect() -> None:
    services = project("edge.yaml", "edge.jetson.yaml")
    for stage in ("ingest", "detect"):
        assert services[stage]["runtime"] == "nvidia"
        devices = services[stage]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    images = {body["image"] for body in services.values() if body["image"].startswith("alpr-")}
    assert images == {"alpr-edge-jetson:0.1.0"}
    # Every stage is built from the Jetson Dockerfile, never the x86 one under the Jetson image's name.
    assert {body["build"]["dockerfile"] for body in services.values() if "build" in body} == {
        "deploy/docker/jetson.Dockerfile"
    }


def test_models_are_provisioned_into_the_cache_volume_before_detect() -> None:
    services = project("edge.yaml")
    assert services["models"]["command"][:4] == ["alpr", "models", "export", "--if-missing"]
    assert "alpr-models:/var/lib/alpr/models" in services["models"]["volumes"]
    assert "alpr-models:/var/lib/alpr/models" in services["detect"]["volumes"]
    assert services["detect"]["depends_on"]["models"]["condition"] == "service_completed_successfully"


def _environment(body: dict[str, Any]) -> dict[str, str]:
    env = body.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {k: str(v) for k, v in env.items()}


@pytest.mark.parametrize(("name", "config"), [("edge.yaml", "edge.yaml"), ("server.yaml", "server.yaml")])
def test_configuration_loads_with_each_containers_environment(
    name: str, config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for svc, command in alpr_services(project(name)).items():
        with monkeypatch.context() as env:
            for key, value in _environment(project(name)[svc]).items():
                if key.startswith("ALPR_"):
                    env.setenv(key, value)
            settings = load_settings(COMPOSE / "config" / config)
        if command[1] in SERVICES:
            own = getattr(settings.services, command[1].replace("-", "_"))
            assert own.metrics_host == "0.0.0.0", f"{svc}: metrics must be reachable from Prometheus"
            assert settings.environment == "production"


def test_server_keeps_secrets_out_of_urls_and_config() -> None:
    services = project("server.yaml")
    for svc in ("persist", "query", "migrate"):
        env = _environment(services[svc])
        url = urlsplit(env["ALPR_DATABASE__URL"])
        assert url.username == "alpr" and url.password is None, "the password travels as PGPASSWORD"
        assert env["PGPASSWORD"] == read_env_file(COMPOSE / "server.env.example")["POSTGRES_PASSWORD"]
    settings = load_settings(COMPOSE / "config" / "server.yaml")
    assert settings.query.host == "0.0.0.0"
    published = services["query"]["ports"][0]
    assert published.endswith(f":{settings.query.port}")


def test_prometheus_scrapes_every_service_on_its_metrics_port() -> None:
    jobs: dict[str, int] = {}
    for config in ("edge-agent.yml", "prometheus.yml"):
        doc = yaml.safe_load((OBS / "prometheus" / config).read_text(encoding="utf-8"))
        for job in doc["scrape_configs"]:
            for sd in job.get("dns_sd_configs", []):
                assert sd["names"] == [job["job_name"]], "the job is named after the compose service"
                jobs[job["job_name"]] = sd["port"]
    defaults = AlprSettings().services
    expected = {cmd: getattr(defaults, cmd.replace("-", "_")).metrics_port for cmd in SERVICES}
    assert jobs == expected
    assert set(expected) == {k.replace("_", "-") for k in DEFAULT_METRICS_PORTS}


def test_observability_files_are_mounted_where_their_configs_look() -> None:
    services = project("server.yaml")
    mounts = {
        target: (COMPOSE / source).resolve()
        for svc in ("prometheus", "grafana")
        for source, target, *_ in (m.split(":") for m in services[svc]["volumes"])
        if source.startswith(".")
    }
    for path in mounts.values():
        assert path.exists(), path
    prometheus = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text(encoding="utf-8"))
    for rule_file in prometheus["rule_files"]:
        assert mounts[rule_file] == (OBS / "prometheus" / "alerts.yml").resolve()
    provider = yaml.safe_load((OBS / "grafana/provisioning/dashboards/alpr.yaml").read_text(encoding="utf-8"))
    assert mounts[provider["providers"][0]["options"]["path"]] == (OBS / "grafana" / "dashboards").resolve()
    assert mounts["/etc/grafana/provisioning"] == (OBS / "grafana" / "provisioning").resolve()
    # The agent forwards to the server's Prometheus, which must accept remote writes.
    assert "--web.enable-remote-write-receiver" in services["prometheus"]["command"]
    agent = project("edge.yaml")["prometheus-agent"]
    assert "--agent" in agent["command"]
    agent_config = yaml.safe_load((OBS / "prometheus" / "edge-agent.yml").read_text(encoding="utf-8"))
    assert "rule_files" not in agent_config, "agent mode evaluates no rules"
    target = agent_config["remote_write"][0]["url"].split("/")[2].split(":")[0]
    address = next(h.split(":", 1)[1] for h in agent["extra_hosts"] if h.startswith(f"{target}:"))
    assert address == "host-gateway" or ipaddress.ip_address(address), "extra_hosts takes an address"
    assert "ALPR_SITE_ID" in agent["environment"]
