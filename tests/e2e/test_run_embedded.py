"""`alpr run` in its default, embedded mode (no broker, no database server), every stage its own process:

- the demo video gives one event per car, with the photos' plates, stored and served by the API;
- a watchlist entry stored through the API while the run goes reaches the events stage (which follows the
  embedded database: no broker carries `alpr.watchlist`);
- SIGKILL of each stage in turn during a run: each is restarted, and the final events equal those of the
  undisturbed run (nothing lost, nothing doubled);
- Ctrl-C leaves no process and no shared-memory ring behind; neither does a SIGKILLed supervisor.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from alpr_query.db import Database
from alpr_query.keys.repository import KeyRepository
from alpr_shared.tools.demovideo import DemoVideo
from tests.e2e.run_helpers import (
    AlprRun,
    assert_one_to_one,
    base_config,
    demo_videos,
    rings_of,
    wait_gone,
)

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 240.0


@dataclass
class Finished:
    plates: list[str]  # plate of each stored event, in time order
    event_ids: list[str]
    output: str
    api_events: list[str] | None  # plates the API returned (None: no query service in this build)
    events_log: list[dict[str, object]]  # the events stage's JSON log lines
    watchlist_answer: dict[str, object] | None = None  # the API's answer to a watchlist change


async def _stored(url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT event_id, plate FROM plate_events ORDER BY first_seen")
    finally:
        await conn.close()
    return [(r["event_id"], r["plate"]) for r in rows]


def _api_plates(run: AlprRun) -> list[str] | None:
    match = run.wait_for(r"(alpr run: done[\s\S]*?)alpr run: serving until", 5)
    summary = match.group(1)
    curl = [line for line in summary.splitlines() if "curl" in line]
    if not curl:
        return None
    key = curl[0].split("X-API-Key: ", 1)[1].split("'", 1)[0]
    url = curl[0].rsplit("'", 2)[-2]
    response = httpx.get(url, headers={"X-API-Key": key}, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    items = body["items"] if isinstance(body, dict) else body
    return [str(item["plate"]) for item in items]


def _finish(run: AlprRun) -> Finished:
    run.wait_for(r"alpr run: serving until Ctrl-C", RUN_TIMEOUT_S)
    stored = asyncio.run(_stored(run.database_url()))
    api = _api_plates(run)
    assert run.interrupt() == 0, run.output
    log = (run.data_dir / "logs" / "events.log").read_text(errors="replace")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return Finished([p for _, p in stored], [e for e, _ in stored], run.output, api, lines)


async def _watch_through_the_api(run: AlprRun) -> dict[str, object]:
    """As soon as the API is up (ingest starts then): a write key, and a watchlist entry through the API for
    a plate that is not in the demo (the cars' timing would make a label on their events a race)."""
    api = run.wait_for(r"alpr run: API on (\S+)/v1", 120).group(1)
    pool = await asyncpg.create_pool(run.database_url(), min_size=1, max_size=1)
    try:
        _, key = await KeyRepository(Database(pool)).create("e2e-watchlist", ["write"])
    finally:
        await pool.close()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.put(
            f"{api}/v1/watchlist/e2e-1", json={"plate": "WL0TEST", "label": "e2e"}, headers={"X-API-Key": key}
        )
    assert response.status_code in (200, 201), response.text
    body: dict[str, object] = response.json()
    return body


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[DemoVideo]:
    return demo_videos(tmp_path_factory.mktemp("video"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return ["--config", str(base_config(tmp_path_factory.mktemp("config")))]


@pytest.fixture(scope="module")
def undisturbed(demo: list[DemoVideo], base: list[str]) -> Finished:
    run = AlprRun([*(str(d.path) for d in demo), *base, "--keep-serving"])
    try:
        answer = asyncio.run(_watch_through_the_api(run))
        finished = _finish(run)
    finally:
        run.close()
    finished.watchlist_answer = answer
    return finished


def test_the_demo_video_gives_one_event_per_car_with_its_plate(
    demo: list[DemoVideo], undisturbed: Finished
) -> None:
    labels = [p for d in demo for p in d.plates]
    # Each car's event carries its plate as well as the OCR reads it: every label is matched by its own
    # event within one character (the recogniser reads ~80 % of US plates exactly and confuses G/6, 1/I
    # on some frames; which frames detect picks depends on the machine's load).
    assert_one_to_one(labels, undisturbed.plates, undisturbed.output)
    assert "alpr run: done" in undisturbed.output
    assert f"events          {len(labels)}" in undisturbed.output
    if undisturbed.api_events is not None:
        assert sorted(undisturbed.api_events) == sorted(undisturbed.plates)


def test_a_watchlist_entry_stored_through_the_api_reaches_events(undisturbed: Finished) -> None:
    assert undisturbed.watchlist_answer is not None
    assert undisturbed.watchlist_answer["published"] == "disabled"  # no broker: stored only
    events = [line for line in undisturbed.events_log if line.get("event") == "watchlist_source"]
    assert [line["source"] for line in events] == ["database"], undisturbed.events_log
    changed = [line for line in undisturbed.events_log if line.get("event") == "watchlist_changed"]
    # Applied within a poll (events.watchlist_poll_s, 2 s), while the run's cars were still passing.
    assert changed and changed[-1]["entries"] == 1, undisturbed.events_log
    assert undisturbed.plates and "watchlist hits  0" in undisturbed.output


def test_sigkill_of_each_stage_loses_and_doubles_nothing(
    demo: list[DemoVideo], base: list[str], undisturbed: Finished, tmp_path: Path
) -> None:
    run = AlprRun([*(str(d.path) for d in demo), *base, "--keep-serving"])
    killed: list[str] = []
    try:
        run.wait_for(r"alpr run: 3 camera\(s\)", 120)
        stages = list(run.children())
        order = ["detect", "track", "ocr", "ocr-worker-1", "events", "persist", "query", "postgres", "ingest"]
        for stage in [s for s in order if s in stages]:
            before = run.children()[stage]
            before.send_signal(signal.SIGKILL)
            killed.append(stage)
            # Back: a new process of that stage, and the supervisor said so.
            deadline = time.monotonic() + 60
            while True:
                now = run.children().get(stage)
                if now is not None and now.pid != before.pid:
                    break
                assert time.monotonic() < deadline, f"{stage} was not restarted:\n{run.output}"
                time.sleep(0.2)
            time.sleep(2.0)
        finished = _finish(run)
    finally:
        run.close()
    for stage in killed:
        assert f"alpr run: {stage} exited with code -9; restarting" in finished.output
    assert "replaying the files" in finished.output
    # Same events: one per car, none lost and none doubled (a replay may pick another best frame, so a
    # confusable character may differ from the undisturbed run's read).
    assert_one_to_one(undisturbed.plates, finished.plates, finished.output)
    assert len(set(finished.event_ids)) == len(finished.event_ids)


def test_ctrl_c_leaves_no_process_and_no_shared_memory(
    demo: list[DemoVideo], base: list[str], tmp_path: Path
) -> None:
    run = AlprRun([*(str(d.path) for d in demo), *base])
    try:
        run.wait_for(r"gate-1 +[1-9]\d?%", 120)  # frames are flowing
        processes = run.descendants()
        namespace = run.namespace()
        assert rings_of(namespace), "ingest should have its ring while running"
        assert run.interrupt() == 0, run.output
    finally:
        run.close()
    assert not wait_gone(processes, 5), [p.pid for p in processes if p.is_running()]
    assert rings_of(namespace) == []
    assert "alpr run: stopped" in run.output


def test_a_killed_supervisor_takes_its_children_with_it(
    demo: list[DemoVideo], base: list[str], tmp_path: Path
) -> None:
    run = AlprRun([*(str(d.path) for d in demo), *base])
    try:
        run.wait_for(r"gate-1 +[1-9]\d?%", 120)
        processes = run.descendants()
        namespace = run.namespace()
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(10)
        alive = wait_gone(processes, 40)
        assert not alive, [(p.pid, p.cmdline()) for p in alive if p.is_running()]
        assert rings_of(namespace) == [], "the stages drain on SIGTERM and release their rings"
    finally:
        for p in run.descendants() if psutil.pid_exists(run.proc.pid) else []:
            p.kill()
        run.close()


def test_a_stage_that_cannot_start_ends_the_run_with_its_reason(
    demo: list[DemoVideo], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("detect:\n  plate_model: no-such-model\n")
    run = AlprRun([str(demo[0].path), "--config", str(bad), "--no-api"])
    try:
        code = run.proc.wait(120)
        # Every child read the generated run.yaml of this data directory: none may be left.
        leftovers = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if str(run.data_dir) in " ".join(p.info["cmdline"] or [])
        ]
    finally:
        run.close()
    assert code == 1, run.output
    assert "giving up on detect (exit code 2): its configuration is invalid" in run.output
    assert "unknown model 'no-such-model'" in run.output  # the end of its log, shown to the user
    assert leftovers == []
