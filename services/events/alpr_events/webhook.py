"""Watchlist alerts to HTTP webhooks, signed with HMAC-SHA256, retried with backoff, failures counted.

Request: `POST <url>` with the alert as JSON (`WatchlistAlert`, the same bytes as on `alpr.alerts`) and
- `X-Alpr-Timestamp`: Unix seconds when this attempt was signed,
- `X-Alpr-Signature`: `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`,
- `X-Alpr-Alert-Id`: the alert id (stable across retries and replays: receivers dedupe on it).
The receiver recomputes the signature with the shared secret and rejects stale timestamps (replays).

Retries: connection errors, timeouts, 408, 429 and 5xx are retried with doubling backoff (capped at
30 s) up to `max_attempts`; other 4xx are final (a retry would get the same answer). Deliveries live in
a bounded in-memory queue per webhook: the durable copy of every alert is the `alpr.alerts` record
that goes through the outbox; a webhook is a notification, and alerts queued when the process dies
are not re-delivered (counted as `queue_full` when the queue overflows).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Sequence

import httpx

from alpr_shared.logging import get_logger
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, WatchlistAlert
from alpr_shared.settings import WebhookSettings

log = get_logger(__name__)

QUEUE_SIZE = 1000
BACKOFF_CAP_S = 30.0
_RETRY_STATUS = frozenset({408, 425, 429})


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>")."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (constant-time compare)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookSender:
    """One webhook: a queue and a worker task that owns one HTTP client."""

    def __init__(self, index: int, settings: WebhookSettings, metrics: ServiceMetrics) -> None:
        self.index = index
        self.settings = settings
        self.queue: asyncio.Queue[WatchlistAlert] = asyncio.Queue(QUEUE_SIZE)
        self.codec: Codec[WatchlistAlert] = Codec(WatchlistAlert, wire="json")
        self.deliveries = metrics.counter(
            "webhook_deliveries_total", "Webhook deliveries by final result", ["webhook", "result"]
        )
        self.attempts = metrics.counter("webhook_attempts_total", "Webhook HTTP attempts", ["webhook"])
        self.failures = metrics.counter(
            "webhook_failures_total", "Webhook attempts that failed (retried or not)", ["webhook", "reason"]
        )
        self._label = str(index)

    def wants(self, alert: WatchlistAlert) -> bool:
        return not self.settings.labels or alert.label in self.settings.labels

    def offer(self, alert: WatchlistAlert) -> None:
        try:
            self.queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.deliveries.labels(self._label, "queue_full").inc()
            log.error("webhook_queue_full", webhook=self.index, alert_id=alert.alert_id)  # noqa: TRY400

    async def run(self, stopping: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
            while not (stopping.is_set() and self.queue.empty()):
                try:
                    alert = await asyncio.wait_for(self.queue.get(), 0.5)
                except TimeoutError:
                    continue
                await self.deliver(client, alert, stopping)

    async def deliver(
        self, client: httpx.AsyncClient, alert: WatchlistAlert, stopping: asyncio.Event
    ) -> bool:
        body = self.codec.encode(alert)
        secret = self.settings.secret.get_secret_value().encode()
        delay = self.settings.backoff_s
        for attempt in range(1, self.settings.max_attempts + 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Alpr-Timestamp": timestamp,
                "X-Alpr-Signature": sign(secret, timestamp, body),
                "X-Alpr-Alert-Id": alert.alert_id,
            }
            self.attempts.labels(self._label).inc()
            retry = True
            try:
                response = await client.post(self.settings.url, content=body, headers=headers)
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.TransportError as exc:
                reason = "connection"
                log.debug("webhook_connection_error", webhook=self.index, error=str(exc))
            else:
                if response.is_success:
                    self.deliveries.labels(self._label, "delivered").inc()
                    return True
                reason = f"http_{response.status_code // 100}xx"
                retry = response.status_code >= 500 or response.status_code in _RETRY_STATUS
            self.failures.labels(self._label, reason).inc()
            last = attempt == self.settings.max_attempts
            if not retry or last or stopping.is_set():
                self.deliveries.labels(self._label, "failed").inc()
                log.error(
                    "webhook_delivery_failed",
                    webhook=self.index,
                    alert_id=alert.alert_id,
                    attempts=attempt,
                    reason=reason,
                )
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP_S)
        return False  # pragma: no cover - the loop always returns


class Webhooks:
    """Every configured webhook; `offer()` routes an alert to those that want its label."""

    def __init__(self, settings: Sequence[WebhookSettings], metrics: ServiceMetrics) -> None:
        self.senders = [WebhookSender(i, s, metrics) for i, s in enumerate(settings)]

    def offer(self, alert: WatchlistAlert) -> None:
        for sender in self.senders:
            if sender.wants(alert):
                sender.offer(alert)
