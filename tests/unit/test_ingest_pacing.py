"""The timing rules of one camera: even frame dropping, file pacing, and reconnect backoff."""

from __future__ import annotations

import random

import numpy as np
import pytest

from alpr_ingest.pacing import Backoff, FpsCap, Pacer


def _kept(source_fps: float, target: float | None, seconds: float = 10.0, start: float = 0.0) -> list[float]:
    cap = FpsCap(target)
    times = [start + i / source_fps for i in range(round(seconds * source_fps))]
    return [t for t in times if cap.accept(t)]


@pytest.mark.parametrize(("source", "target"), [(25, 10), (30, 5), (30, 29), (60, 7.5), (25, 24.9)])
def test_fps_cap_keeps_the_target_rate_evenly(source: float, target: float) -> None:
    kept = _kept(source, target)
    assert len(kept) == pytest.approx(10 * target, abs=1)
    gaps = np.diff(kept)
    # Never closer than the target interval (minus one source frame), never further apart than that plus one.
    assert gaps.min() >= 1 / target - 1 / source - 1e-9
    assert gaps.max() <= 1 / target + 1 / source + 1e-9


def test_fps_cap_above_the_source_rate_or_unset_keeps_everything() -> None:
    assert len(_kept(10, 25)) == 100
    assert len(_kept(25, None)) == 250


def test_fps_cap_restarts_after_a_jump_back_or_a_gap() -> None:
    cap = FpsCap(10)
    assert [cap.accept(t) for t in (5.0, 5.04, 5.08, 5.12)] == [True, False, False, True]
    assert cap.accept(0.0)  # a looped file starts again at 0: kept, and the schedule restarts there
    assert not cap.accept(0.04)
    assert cap.accept(60.0)  # a reconnect after a minute: kept at once
    assert not cap.accept(60.04)


def test_pacer_releases_frames_at_the_file_rate_without_bursting() -> None:
    pacer = Pacer(max_lag_s=0.5)
    assert pacer.delay(0.0, now=100.0) == 0.0
    assert pacer.delay(0.04, now=100.0) == pytest.approx(0.04)
    assert pacer.delay(1.0, now=100.5) == pytest.approx(0.5)
    # Far behind (the process was paused): release now and re-anchor rather than rushing the backlog.
    assert pacer.delay(1.04, now=110.0) == 0.0
    assert pacer.delay(1.08, now=110.0) == pytest.approx(0.04)
    # A loop: timestamps go back to 0, the schedule re-anchors.
    assert pacer.delay(0.0, now=111.0) == 0.0
    assert pacer.delay(0.04, now=111.0) == pytest.approx(0.04)


def test_backoff_grows_exponentially_with_jitter_and_is_bounded_forever() -> None:
    backoff = Backoff(0.5, 30.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.5 <= d <= 30.0 for d in delays)
    ceilings = [min(30.0, 0.5 * 2**n) for n in range(200)]
    assert all(d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[10:]) > 20  # reaches the top of the range
    assert len({round(d, 6) for d in delays[10:]}) > 150  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() == 0.5  # the first retry after a good session is quick again


def test_backoff_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="min_s <= max_s"):
        Backoff(5, 1)
