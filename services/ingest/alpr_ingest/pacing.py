"""Timing decisions of one camera, as pure logic: which frames to keep, when to release a file's frame,
how long to wait before reconnecting. No I/O, no clock of their own (callers pass the time), so tests
drive them with exact numbers.
"""

from __future__ import annotations

import random


class FpsCap:
    """Keeps frames evenly spaced at no more than `target_fps` (None: keeps every frame).

    Decisions use the frame's own timestamp (presentation time, or arrival time when the source has
    none): a 25 fps source capped at 10 keeps 10 frames of every 25, about one every 100 ms, instead of
    the first 10 of each second. A timestamp that jumps back (a looped file, a reconnected stream) or far
    ahead (a gap) restarts the schedule rather than dropping or bursting.
    """

    def __init__(self, target_fps: float | None) -> None:
        self.interval = 1.0 / target_fps if target_fps else 0.0
        self._next: float | None = None

    def reset(self) -> None:
        self._next = None

    def accept(self, t: float) -> bool:
        if not self.interval:
            return True
        nxt = self._next
        if nxt is None or t < nxt - 2 * self.interval or t >= nxt + self.interval:
            self._next = t + self.interval  # first frame, a jump back, or a gap: start again here
            return True
        if t + 1e-6 >= nxt:
            self._next = nxt + self.interval
            return True
        return False


class Pacer:
    """Releases a file's frames at the file's own rate: frame with timestamp `pts` is due at
    `anchor_wall + (pts - anchor_pts)`. Behind by more than `max_lag_s` (a slow machine, a paused
    process), it re-anchors instead of bursting to catch up; a timestamp going backwards (a loop)
    re-anchors too."""

    def __init__(self, max_lag_s: float = 0.5) -> None:
        self.max_lag_s = max_lag_s
        self._anchor: tuple[float, float] | None = None  # (wall, pts)
        self._last_pts: float | None = None

    def reset(self) -> None:
        self._anchor = None
        self._last_pts = None

    def delay(self, pts: float, now: float) -> float:
        """Seconds to wait before releasing the frame at `pts` (0: release now)."""
        if self._anchor is None or (self._last_pts is not None and pts < self._last_pts):
            self._anchor = (now, pts)
        self._last_pts = pts
        wall, pts0 = self._anchor
        due = wall + (pts - pts0)
        if now - due > self.max_lag_s:
            self._anchor = (now, pts)
            return 0.0
        return max(0.0, due - now)


class Backoff:
    """Exponential backoff with full jitter between `min_s` and `max_s`, forever.

    Attempt n waits a uniform random time in [min_s, min(max_s, min_s * 2**n)]; the jitter keeps cameras
    that failed together (a switch reboot) from reconnecting in lockstep. `reset()` after a connection
    that delivered frames.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if min_s <= 0 or max_s < min_s:
            raise ValueError(f"backoff bounds must satisfy 0 < min_s <= max_s (got {min_s}, {max_s})")
        self.min_s = min_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.min_s * 2 ** min(self.attempt, 62))
        self.attempt += 1
        return self._rng.uniform(self.min_s, ceiling)
