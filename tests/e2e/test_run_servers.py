"""`alpr run --kafka BOOTSTRAP --database-url URL`: the same run against a real Kafka-protocol broker and a
real PostgreSQL 15 server. Events go through the topic and persist's consumer group, as in production."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.run_helpers import AlprRun, assert_one_to_one, base_config, demo_videos
from tests.harness.kafka import KafkaBroker

pytestmark = pytest.mark.e2e


async def _plates(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r["plate"] for r in await conn.fetch("SELECT plate FROM plate_events ORDER BY first_seen")]
    finally:
        await conn.close()


def test_run_with_a_broker_and_a_postgresql_server(
    kafka_broker: KafkaBroker, postgres_db: str, tmp_path: Path
) -> None:
    for topic in ("alpr.plates.detected", "alpr.watchlist", "alpr.alerts", "alpr.plates.dlq"):
        asyncio.run(kafka_broker.create_topic(topic))
    demo = demo_videos(tmp_path / "video")
    args = [*(str(d.path) for d in demo), "--config", str(base_config(tmp_path))]
    run = AlprRun([*args, "--kafka", kafka_broker.bootstrap, "--database-url", postgres_db, "--keep-serving"])
    try:
        run.wait_for(r"alpr run: serving until Ctrl-C", 240)
        plates = asyncio.run(_plates(postgres_db))
        assert run.interrupt() == 0, run.output
    finally:
        run.close()
    assert "embedded database" not in run.output
    assert "persist" in run.output and "postgres:" not in run.output  # no embedded server among the stages
    labels = [p for d in demo for p in d.plates]
    assert_one_to_one(labels, plates, run.output)
    assert "events          3" in run.output
