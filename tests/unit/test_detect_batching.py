"""Batching across cameras (bounded, oldest dropped, fair) and the motion gate."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from alpr_detect.batching import FramePool
from alpr_detect.motion import MotionConfig, MotionGate
from alpr_shared.schemas import FrameReady, FrameRef


def _frame(camera: str, seq: int) -> FrameReady:
    ref = FrameRef(segment=f"alpr.t.{camera}", epoch=1, slot=seq % 4, seq=seq, height=4, width=4, channels=3)
    return FrameReady(camera_id=camera, frame=ref, captured_at_ns=seq, published_at_ns=seq)


def test_pool_drops_oldest_per_camera_and_counts() -> None:
    dropped: list[FrameReady] = []
    pool = FramePool(2, on_drop=dropped.append)
    for seq in range(1, 6):
        pool.add(_frame("a", seq), now_s=seq)
    pool.add(_frame("b", 1), now_s=6)
    assert len(pool) == 3  # bounded: 2 for a, 1 for b
    assert [f.frame.seq for f in dropped] == [1, 2, 3]
    assert pool.dropped == {"a": 3}
    taken = pool.take(8)
    assert [(p.message.camera_id, p.message.frame.seq) for p in taken] == [("a", 4), ("b", 1), ("a", 5)]
    assert len(pool) == 0


def test_pool_take_is_fair_across_cameras() -> None:
    pool = FramePool(4)
    for seq in range(1, 5):
        pool.add(_frame("busy", seq), now_s=seq * 0.01)
    pool.add(_frame("quiet", 1), now_s=1.0)
    first = pool.take(2)
    # One per camera per round: the quiet camera is not starved by the busy one's older backlog.
    assert sorted(p.message.camera_id for p in first) == ["busy", "quiet"]
    assert len(pool) == 3


async def test_wait_batch_returns_when_full_or_at_deadline() -> None:
    pool = FramePool(4)
    clock = time.monotonic
    pool.add(_frame("a", 1), clock())
    started = clock()
    await asyncio.wait_for(pool.wait_batch(4, 0.05, clock), 2)
    waited = clock() - started
    assert 0.03 <= waited < 1.0  # the deadline, not a full batch, released it

    async def feed() -> None:
        for seq in range(2, 5):
            await asyncio.sleep(0.005)
            pool.add(_frame("a", seq), clock())

    pool2 = FramePool(8)
    pool2.add(_frame("a", 1), clock())
    pool = pool2
    started = clock()
    feeder = asyncio.create_task(feed())
    await asyncio.wait_for(pool2.wait_batch(4, 5.0, clock), 2)
    await feeder
    assert clock() - started < 1.0  # full batch released it long before the 5 s deadline
    assert len(pool2) == 4


def test_pool_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FramePool(0)


def test_motion_gate_skips_still_frames_and_forces_periodically() -> None:
    gate = MotionGate(
        MotionConfig(thumbnail_width=64, pixel_threshold=18, min_changed_fraction=0.01, forced_interval_s=1.0)
    )
    rng = np.random.default_rng(3)
    # A smooth scene (a gradient), as a road is at thumbnail scale.
    ramp = np.linspace(40, 200, 640, dtype=np.float32)
    still = np.repeat(np.repeat(ramp[None, :, None], 360, axis=0), 3, axis=2).astype(np.uint8)
    assert gate.should_detect(still, 0.0) == (True, "first")
    noisy = np.clip(still.astype(np.int16) + rng.integers(-4, 5, still.shape), 0, 255).astype(np.uint8)
    assert gate.should_detect(noisy, 0.1) == (False, "still")  # sensor noise is not motion
    assert gate.should_detect(still, 1.2) == (True, "forced")  # parked vehicles are still seen
    moved = still.copy()
    moved[100:200, 200:300] = 10  # a dark vehicle entered
    assert gate.should_detect(moved, 1.3) == (True, "motion")
    assert gate.should_detect(moved, 1.4) == (False, "still")
