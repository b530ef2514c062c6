"""Observability files of deploy/ checked against the code: every metric an alert rule, a Grafana panel, a
dashboard variable or the OCR autoscaler names must be one that a service really registers.

The registered names are collected by running each service's own metrics registration (the classes and
functions that call `ServiceMetrics.counter/gauge/histogram`) against a fresh `ServiceMetrics` named as
`run_service` names it, not from a list kept here. A second test scans the source for every registration
call, so a new metrics owner that this collection does not run fails loudly instead of going unseen.
PromQL is parsed by a real parser (`promql-parser`, the Rust parser of GreptimeDB); Prometheus itself
(promtool) is not installed here, so rule files are checked structurally around it.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram

from alpr_shared.cli import SERVICES
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.settings import AlprSettings, PersistSettings, WebhookSettings
from alpr_shared.transport import TransportMetrics

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy" / "observability"
ALERTS = OBS / "prometheus" / "alerts.yml"
DASHBOARD = OBS / "grafana" / "dashboards" / "alpr.json"
ADAPTER = OBS / "prometheus-adapter" / "rules.yaml"
HPA_FILE = ROOT / "deploy" / "k8s" / "overlays" / "edge-site" / "ocr-worker.yaml"

# Series Prometheus makes itself, per scrape target; not registered by any service.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}


# --- what the services register ----------------------------------------------------------------------


def _sample_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry exposes, including metrics that have no labelled child yet."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def _ctx(metrics: ServiceMetrics) -> Any:
    """The part of a ServiceContext that metrics owners read at construction."""
    return SimpleNamespace(metrics=metrics, settings=AlprSettings(), health=metrics.health)


def _ingest(m: ServiceMetrics) -> None:
    from alpr_ingest.metrics import IngestMetrics  # noqa: PLC0415 - each service imported only here

    IngestMetrics(m)


def _detect(m: ServiceMetrics) -> None:
    from alpr_detect.service import DetectMetrics  # noqa: PLC0415

    DetectMetrics(_ctx(m))


def _track(m: ServiceMetrics) -> None:
    from alpr_track.service import Pump  # noqa: PLC0415

    Pump(_ctx(m), tracking=None, pull=None, push=None)  # type: ignore[arg-type]  # only its metrics are used


def _ocr(m: ServiceMetrics) -> None:
    from alpr_ocr.service import CoordinatorMetrics  # noqa: PLC0415

    CoordinatorMetrics(m)


def _ocr_worker(m: ServiceMetrics) -> None:
    from alpr_ocr.worker import Worker  # noqa: PLC0415

    Worker(_ctx(m), recognizer=None, sock=None, worker_id="w")  # type: ignore[arg-type]  # metrics only


def _events(m: ServiceMetrics) -> None:
    from alpr_events.kafka import DrainerMetrics, WatchlistFollower  # noqa: PLC0415
    from alpr_events.service import EventsMetrics  # noqa: PLC0415
    from alpr_events.watchlist import Watchlist  # noqa: PLC0415
    from alpr_events.watchlist_db import WatchlistPoller  # noqa: PLC0415
    from alpr_events.webhook import WebhookSender  # noqa: PLC0415

    EventsMetrics(m)
    DrainerMetrics(m)
    WatchlistFollower(AlprSettings().kafka, Watchlist(), m, on_change=lambda: None)
    # `events.watchlist_source: database` (alpr run's embedded mode); no connection until it runs.
    WatchlistPoller("postgresql://unused", Watchlist(), m, lambda: None, poll_s=2.0, command_timeout_s=5.0)
    hook = WebhookSettings(url="http://127.0.0.1:1/hook", secret="s")  # type: ignore[arg-type]  # noqa: S106
    WebhookSender(0, hook, m)


def _persist(m: ServiceMetrics) -> None:
    from alpr_persist.consumer import BatchWriter, PersistConsumer  # noqa: PLC0415
    from alpr_persist.service import _maintenance_loop  # noqa: PLC0415

    settings = PersistSettings()
    stopped = asyncio.Event()
    writer = BatchWriter(None, settings, m, stopped)  # type: ignore[arg-type]  # no store: metrics only
    PersistConsumer(AlprSettings().kafka, settings, writer, m, stopped)
    try:  # the embedded mode's source (`alpr run`: events' outbox instead of Kafka), where it exists
        from alpr_persist.outbox_source import OutboxSource  # noqa: PLC0415
    except ModuleNotFoundError:
        pass
    else:
        topic = AlprSettings().kafka.topic
        OutboxSource(
            Path("outbox"), topic=topic, settings=settings, writer=writer, metrics=m, stopping=stopped
        )
    stopped.set()  # the maintenance loop registers its counters, then returns at once
    asyncio.run(_maintenance_loop(None, settings, None, stopped, m))  # type: ignore[arg-type]


def _query(m: ServiceMetrics) -> None:
    from alpr_query.app import RequestMetrics  # noqa: PLC0415
    from alpr_query.watchlist.publisher import WatchlistPublisher  # noqa: PLC0415

    RequestMetrics(None, m, access_log=False)  # type: ignore[arg-type]  # middleware without an app
    WatchlistPublisher(None, AlprSettings().kafka, m, enabled=False, timeout_s=1, interval_s=1)  # type: ignore[arg-type]


# Service name as run_service gives it to ServiceMetrics → what registers its metrics. Every service
# with ZeroMQ sockets also has the shared transport counters.
OWNERS: dict[str, tuple[Callable[[ServiceMetrics], None], bool]] = {
    "ingest": (_ingest, True),
    "detect": (_detect, True),
    "track": (_track, True),
    "ocr": (_ocr, True),
    "ocr_worker": (_ocr_worker, True),
    "events": (_events, True),
    "persist": (_persist, False),
    "query": (_query, False),
}


def _service_metrics() -> dict[str, ServiceMetrics]:
    out = {}
    for service, (register, zmq) in OWNERS.items():
        metrics = ServiceMetrics(service)
        register(metrics)
        if zmq:
            TransportMetrics(metrics)
        out[service] = metrics
    return out


def registered_metrics() -> dict[str, set[str]]:
    """Service → every series name its running process can expose."""
    return {service: _sample_names(m.registry) for service, m in _service_metrics().items()}


def registered_labels() -> dict[str, set[str]]:
    """Series name → its label names (as registered; `le` on histogram buckets)."""
    out: dict[str, set[str]] = {}
    for metrics in _service_metrics().values():
        # ServiceMetrics keeps what it created by full name; prometheus_client has no public accessor.
        for name, metric in metrics._metrics.items():
            labels = set(metric._labelnames)
            if isinstance(metric, Histogram):
                out[f"{name}_bucket"] = labels | {"le"}
                out[f"{name}_sum"] = out[f"{name}_count"] = labels
            elif isinstance(metric, Counter):
                out[name if name.endswith("_total") else f"{name}_total"] = labels
            else:
                out[name] = labels
    return out


@pytest.fixture(scope="module")
def registered() -> dict[str, set[str]]:
    return registered_metrics()


@pytest.fixture(scope="module")
def all_names(registered: dict[str, set[str]]) -> set[str]:
    return set().union(*registered.values()) | PROMETHEUS_SYNTHETIC


@pytest.fixture(scope="module")
def labels_of() -> dict[str, set[str]]:
    return registered_labels()


def test_every_service_command_has_its_metrics_collected() -> None:
    assert {command.replace("-", "_") for command in SERVICES} == set(OWNERS)


def _registration_calls() -> Iterator[tuple[Path, str]]:
    """(file, name) of every `<x>.counter|gauge|histogram("name", …)` in the services and shared code."""
    files = sorted((ROOT / "services").glob("*/alpr_*/**/*.py")) + sorted((ROOT / "shared").rglob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"counter", "gauge", "histogram"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                yield path, node.args[0].value


def test_collection_runs_every_metrics_registration_in_the_code(registered: dict[str, set[str]]) -> None:
    calls = list(_registration_calls())
    assert len(calls) > 50, "the scan found too few registrations: has the layout changed?"
    # Which services a package's registrations may belong to: its commands in cli.SERVICES.
    package_services: dict[str, set[str]] = {}
    for command, module in SERVICES.items():
        package_services.setdefault(module.split(".")[0], set()).add(command.replace("-", "_"))
    missing = []
    for path, name in calls:
        package = next((p for p in path.parts if p.startswith("alpr_")), "")
        services = package_services.get(package, set(registered))  # shared code: any service
        if not any(f"alpr_{s}_{name}" in _families(registered[s]) for s in services):
            missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, (
        "metrics registered in the code but not produced by registered_metrics(); add their owner to "
        f"OWNERS in {Path(__file__).name}: {missing}"
    )


def _families(names: set[str]) -> set[str]:
    """Registration names (`frames_total`, `inference_seconds`) back from series names."""
    out = set(names)
    for name in names:
        for suffix in ("_created", "_bucket", "_sum", "_count"):
            if name.endswith(suffix):
                out.add(name[: -len(suffix)])
    return out


# --- PromQL ------------------------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (raises ValueError on a syntax error)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:  # {__name__="…"} form
                for matcher in node.matchers.matchers:
                    if matcher.name == "__name__":
                        names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


# Grafana's template variables, replaced by representative values before parsing.
_GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$site": ".*",
    "$camera": ".*",
}


def _grafana_to_promql(expr: str) -> str:
    for var, value in _GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


# Labels every scraped series gets from Prometheus (job, instance), from the site agent's external
# labels (site) or from Kubernetes relabelling (namespace, pod).
TARGET_LABELS = {"job", "instance", "site", "namespace", "pod"}


def label_problems(expr: str, labels_of: dict[str, set[str]]) -> list[str]:
    """Label names an expression matches on, groups by or joins on that its metrics do not carry."""
    problems: list[str] = []

    def known(node: Any) -> set[str]:
        found: set[str] = set(TARGET_LABELS)

        def collect(inner: Any) -> None:
            if isinstance(inner, promql_parser.VectorSelector) and inner.name in labels_of:
                found.update(labels_of[inner.name])

        promql_parser.walk(node, collect)
        return found

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name in labels_of:
            for matcher in node.matchers.matchers:
                if matcher.name != "__name__" and matcher.name not in labels_of[node.name] | TARGET_LABELS:
                    problems.append(f"{node.name} has no label {matcher.name!r}")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            missing = set(node.modifier.labels) - known(node.expr)
            if missing:
                problems.append(f"aggregation over {sorted(missing)} that its input does not carry")
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            if matching is not None:
                missing = set(matching.labels) - (known(node.lhs) | known(node.rhs))
                if missing:
                    problems.append(f"join on {sorted(missing)} that neither side carries")

    promql_parser.walk(promql_parser.parse(expr), visit)
    return problems


def test_label_check_catches_wrong_labels() -> None:
    labels = {"alpr_ocr_queue_jobs": set(), "alpr_ingest_camera_fps": {"camera"}}
    assert label_problems('sum by (site) (alpr_ocr_queue_jobs{job="ocr"})', labels) == []
    assert label_problems("sum by (camera) (alpr_ocr_queue_jobs)", labels)
    assert label_problems('alpr_ocr_queue_jobs{camera="a"}', labels)
    assert label_problems("alpr_ocr_queue_jobs * on (camera) alpr_ingest_camera_fps", labels) == []
    assert label_problems("alpr_ocr_queue_jobs * on (lane) alpr_ingest_camera_fps", labels)


def test_promql_extraction_finds_names_and_rejects_bad_syntax() -> None:
    expr = 'sum by (camera) (rate(alpr_ingest_frames_total{site="a"}[5m])) / on() up or {__name__="x_y"}'
    assert metric_names(expr) == {"alpr_ingest_frames_total", "up", "x_y"}
    with pytest.raises(ValueError, match="parenthesis"):
        metric_names("sum(rate(alpr_ingest_frames_total[5m])")


# --- alert rules -------------------------------------------------------------------------------------


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert set(doc) == {"groups"}
    rules = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules"}, group.get("name")
        rules += group["rules"]
    return rules


_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def test_alert_rules_are_well_formed() -> None:
    rules = _alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
        assert re.match(r"^[A-Z][A-Za-z0-9]+$", rule["alert"])
        if "for" in rule:
            assert _DURATION.match(rule["for"]), rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        metric_names(rule["expr"])  # parses


def test_the_issue_alerts_exist() -> None:
    """Camera down, OCR backlog growing, consumer lag, DB write errors, outbox growing."""
    exprs = {r["alert"]: r["expr"] for r in _alert_rules()}
    wanted = {
        "AlprCameraDown": "alpr_ingest_camera_connected_info",
        "AlprOcrBacklogGrowing": "alpr_ocr_queue_jobs",
        "AlprConsumerLagHigh": "alpr_persist_consumer_lag_messages",
        "AlprDatabaseWriteErrors": "alpr_persist_db_retries_total",
        "AlprEventsOutboxGrowing": "alpr_events_outbox_messages_count",
    }
    for alert, metric in wanted.items():
        assert metric in metric_names(exprs[alert]), alert


def test_every_alert_uses_registered_metrics(all_names: set[str]) -> None:
    unknown = {
        rule["alert"]: sorted(metric_names(rule["expr"]) - all_names)
        for rule in _alert_rules()
        if metric_names(rule["expr"]) - all_names
    }
    assert not unknown, f"alert rules name metrics no service registers: {unknown}"


def test_every_alert_uses_labels_its_metrics_carry(labels_of: dict[str, set[str]]) -> None:
    problems = {r["alert"]: label_problems(r["expr"], labels_of) for r in _alert_rules()}
    assert not {k: v for k, v in problems.items() if v}


def test_a_rule_naming_an_unknown_metric_is_caught(all_names: set[str]) -> None:
    assert metric_names("rate(alpr_ingest_frames_totl[5m]) > 0") - all_names == {"alpr_ingest_frames_totl"}


# --- Grafana -----------------------------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def _dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable."""
    doc = _dashboard()
    out = []
    for panel in _panels(doc["panels"]):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", _grafana_to_promql(target["expr"])))
    for var in doc["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        inner = re.fullmatch(r"label_values\((.+),\s*([a-z_]+)\)", query)
        assert inner, f"variable {var['name']}: only label_values(selector, label) is used"
        out.append((f"variable {var['name']}", _grafana_to_promql(inner.group(1))))
    return out


def test_dashboard_is_provisionable() -> None:
    doc = _dashboard()
    assert doc["uid"] == "alpr-overview" and doc["title"]
    ids = [p["id"] for p in _panels(doc["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasources = yaml.safe_load((OBS / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    for panel in _panels(doc["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    provider = yaml.safe_load((OBS / "grafana/provisioning/dashboards/alpr.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    """Per-camera fps, detections, reads, events/s, OCR latency, consumer lag, API latency."""
    used = set().union(*(metric_names(q) for _, q in _dashboard_queries()))
    for metric in (
        "alpr_ingest_camera_fps",
        "alpr_detect_detections_total",
        "alpr_ocr_plate_reads_total",
        "alpr_events_events_total",
        "alpr_ocr_job_latency_seconds_bucket",
        "alpr_persist_consumer_lag_messages",
        "alpr_query_http_request_seconds_bucket",
    ):
        assert metric in used, metric


def test_every_dashboard_query_uses_registered_metrics(all_names: set[str]) -> None:
    unknown = {}
    for where, query in _dashboard_queries():
        missing = metric_names(query) - all_names
        if missing:
            unknown[where] = sorted(missing)
    assert not unknown, f"dashboard queries name metrics no service registers: {unknown}"


def test_every_dashboard_query_uses_labels_its_metrics_carry(labels_of: dict[str, set[str]]) -> None:
    problems = {where: label_problems(query, labels_of) for where, query in _dashboard_queries()}
    assert not {k: v for k, v in problems.items() if v}


# --- autoscaling signal ------------------------------------------------------------------------------


def test_ocr_autoscaler_metric_is_served_by_the_adapter_and_registered(all_names: set[str]) -> None:
    docs = list(yaml.safe_load_all(HPA_FILE.read_text(encoding="utf-8")))
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    custom = [m for m in hpa["spec"]["metrics"] if m["type"] != "Resource"]
    assert [m["object"]["metric"]["name"] for m in custom] == ["alpr_ocr_queue_jobs"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    adapter = yaml.safe_load(ADAPTER.read_text(encoding="utf-8"))
    served = {rule["name"]["as"]: rule for rule in adapter["rules"]["custom"]}
    assert "alpr_ocr_queue_jobs" in served
    assert metric_names(served["alpr_ocr_queue_jobs"]["seriesQuery"]) <= all_names
    # The adapter maps the series to the object the HPA describes (a Pod) through its `pod` label.
    overrides = served["alpr_ocr_queue_jobs"]["resources"]["overrides"]
    assert overrides["pod"]["resource"] == "pod"
    assert custom[0]["object"]["describedObject"]["kind"] == "Pod"
