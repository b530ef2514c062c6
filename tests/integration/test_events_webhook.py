"""Webhook delivery against a local HTTP server: HMAC-SHA256 signature, retries with backoff on 5xx and
dropped connections, no retry on a 4xx, failures counted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import msgspec
import pytest
from pydantic import SecretStr

from alpr_events.webhook import WebhookSender, verify
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, WatchlistAlert
from alpr_shared.settings import WebhookSettings

pytestmark = pytest.mark.integration

SECRET = "s3cret-key"  # noqa: S105 - a test key for a local server
ALERT = WatchlistAlert(
    alert_id="a-1",
    event_id="e-1",
    entry_id="w1",
    label="stolen",
    watched_plate="AB12CDE",
    plate="AB12CDE",
    distance=0,
    camera_id="gate-1",
    site_id="hq",
    seen_ns=1,
    confidence=0.9,
)


class Receiver(BaseHTTPRequestHandler):
    # Status codes to answer, in order (then 200); what arrived.
    script: ClassVar[list[int]] = []
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        status = type(self).script.pop(0) if type(self).script else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    Receiver.script = []
    Receiver.received = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def sender(url: str, max_attempts: int = 4) -> tuple[WebhookSender, ServiceMetrics]:
    metrics = ServiceMetrics("events")
    settings = WebhookSettings(url=url, secret=SecretStr(SECRET), max_attempts=max_attempts, backoff_s=0.05)
    return WebhookSender(0, settings, metrics), metrics


def value(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


async def test_signed_delivery_is_retried_on_5xx_until_it_succeeds(server: str) -> None:
    Receiver.script = [503, 500]
    webhook, metrics = sender(server)
    async with httpx.AsyncClient(timeout=5) as client:
        assert await webhook.deliver(client, ALERT, asyncio.Event())
    assert len(Receiver.received) == 3
    for headers, body in Receiver.received:
        assert body == Codec(WatchlistAlert, wire="json").encode(ALERT)
        assert headers["X-Alpr-Alert-Id"] == "a-1"
        assert verify(SECRET.encode(), headers["X-Alpr-Timestamp"], body, headers["X-Alpr-Signature"])
        assert not verify(b"wrong", headers["X-Alpr-Timestamp"], body, headers["X-Alpr-Signature"])
    assert value(metrics, "alpr_events_webhook_failures_total", webhook="0", reason="http_5xx") == 2
    assert value(metrics, "alpr_events_webhook_deliveries_total", webhook="0", result="delivered") == 1


async def test_client_error_is_not_retried_and_is_counted(server: str) -> None:
    Receiver.script = [401]
    webhook, metrics = sender(server)
    async with httpx.AsyncClient(timeout=5) as client:
        assert not await webhook.deliver(client, ALERT, asyncio.Event())
    assert len(Receiver.received) == 1
    assert value(metrics, "alpr_events_webhook_deliveries_total", webhook="0", result="failed") == 1


async def test_unreachable_endpoint_fails_after_max_attempts(server: str) -> None:
    dead = server.rsplit(":", 1)[0] + ":9/hook"  # discard port: nothing listens
    webhook, metrics = sender(dead, max_attempts=3)
    async with httpx.AsyncClient(timeout=2) as client:
        assert not await webhook.deliver(client, ALERT, asyncio.Event())
    assert value(metrics, "alpr_events_webhook_attempts_total", webhook="0") == 3
    assert value(metrics, "alpr_events_webhook_failures_total", webhook="0", reason="connection") == 3
    assert value(metrics, "alpr_events_webhook_deliveries_total", webhook="0", result="failed") == 1


async def test_worker_delivers_queued_alerts_and_drains_on_stop(server: str) -> None:
    webhook, metrics = sender(server)
    stopping = asyncio.Event()
    task = asyncio.create_task(webhook.run(stopping))
    for i in range(3):
        webhook.offer(msgspec.structs.replace(ALERT, alert_id=f"a-{i}"))
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert sorted(h["X-Alpr-Alert-Id"] for h, _ in Receiver.received) == ["a-0", "a-1", "a-2"]
    assert value(metrics, "alpr_events_webhook_deliveries_total", webhook="0", result="delivered") == 3
