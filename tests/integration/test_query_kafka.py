"""Watchlist changes made through the API reach the edge: the real broker (noida-db), and the events
service's own consumer of the compacted topic (`WatchlistFollower`) as the receiving end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from alpr_events.kafka import WatchlistFollower
from alpr_events.watchlist import Watchlist
from alpr_shared.metrics import ServiceMetrics
from alpr_shared.schemas import Codec, WatchlistEntry
from alpr_shared.settings import AlprSettings
from tests.harness import KafkaBroker, unique_topic_name
from tests.integration.test_query_api import query_db, query_settings, running_api

__all__ = ["query_db"]  # a fixture shared with test_query_api

pytestmark = pytest.mark.integration


def kafka_settings(dsn: str, bootstrap: str, topic: str, **query: Any) -> AlprSettings:
    base = query_settings(dsn, watchlist_publish=True, **query)
    return base.model_copy(
        update={"kafka": base.kafka.model_copy(update={"bootstrap": bootstrap, "watchlist_topic": topic})}
    )


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        return [(r.key, r.value) for records in batches.values() for r in records]
    finally:
        await consumer.stop()


async def test_watchlist_changes_reach_an_events_consumer(kafka_broker: KafkaBroker, query_db: str) -> None:
    topic = unique_topic_name()
    settings = kafka_settings(query_db, kafka_broker.bootstrap, topic)
    watchlist = Watchlist()
    stopping = asyncio.Event()
    follower = WatchlistFollower(settings.kafka, watchlist, ServiceMetrics("events"), on_change=lambda: None)
    follow = asyncio.create_task(follower.run(stopping))
    try:
        async with running_api(settings) as api:
            headers = api.auth("write")
            first = await api.client.post(
                "/v1/watchlist", json={"plate": "ab 123", "label": "stolen"}, headers=headers
            )
            assert first.status_code == 201 and first.json()["published"] == "sent", first.text
            entry_id = first.json()["entry_id"]
            second = await api.client.put(
                "/v1/watchlist/fleet-7",
                json={"plate": "ZZ999", "match": "fuzzy", "max_distance": 1},
                headers=headers,
            )
            assert second.json()["published"] == "sent"
            changed = await api.client.put(
                f"/v1/watchlist/{entry_id}", json={"plate": "AB124"}, headers=headers
            )
            assert changed.json()["published"] == "sent"
            gone = await api.client.delete("/v1/watchlist/fleet-7", headers=headers)
            assert gone.status_code == 200 and gone.json()["published"] == "sent"

            def state() -> dict[str, str]:
                return {e.entry_id: e.plate for e in watchlist.entries()}

            # The follower started before the topic existed (as at a fresh site): it must find it.
            await _until(
                lambda: state() == {entry_id: "AB124"}, 20, "the consumer to see the final watchlist"
            )
            assert watchlist.hits("AB124")[0].entry.entry_id == entry_id
            listed = (await api.get("/v1/watchlist")).json()["items"]
            assert [(e["entry_id"], e["published"]) for e in listed] == [(entry_id, "sent")]
    finally:
        stopping.set()
        await follow

    records = await _records(kafka_broker.bootstrap, topic)
    codec: Codec[WatchlistEntry] = Codec(WatchlistEntry, wire="json")
    assert [key for key, _ in records] == [entry_id.encode(), b"fleet-7", entry_id.encode(), b"fleet-7"]
    assert records[-1][1] is None  # the delete is a tombstone
    updated = codec.decode(records[2][1] or b"")
    assert updated.plate == "AB124" and updated.label == "watchlist" and updated.updated_at_ns > 0
    fuzzy = codec.decode(records[1][1] or b"")
    assert fuzzy.match == "fuzzy" and fuzzy.max_distance == 1

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    configs = {c[0]: c[1] for r in described for res in r.resources for c in res[4]}
    assert configs.get("cleanup.policy") == "compact"


async def test_changes_made_while_the_broker_is_down_are_sent_later(
    make_kafka_broker: Callable[..., KafkaBroker], query_db: str
) -> None:
    broker = make_kafka_broker()
    topic = unique_topic_name()
    settings = kafka_settings(
        query_db,
        broker.bootstrap,
        topic,
        publish_timeout_s=1.0,
        republish_interval_s=0.5,
    )
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"request_timeout_ms": 1000})}
    )
    broker.stop()
    async with running_api(settings) as api:
        created = await api.client.post("/v1/watchlist", json={"plate": "OUT4GE"}, headers=api.auth("write"))
        assert created.status_code == 201 and created.json()["published"] == "pending", created.text
        entry_id = created.json()["entry_id"]
        assert (await api.get(f"/v1/watchlist/{entry_id}")).json()["published"] == "pending"
        broker.start()

        async def published() -> str:
            return str((await api.get(f"/v1/watchlist/{entry_id}")).json()["published"])

        deadline = asyncio.get_running_loop().time() + 30
        while await published() != "sent":
            assert asyncio.get_running_loop().time() < deadline, "the retry loop never published the change"
            await asyncio.sleep(0.2)
    records = await _records(broker.bootstrap, topic)
    assert [key for key, _ in records] == [entry_id.encode()]
