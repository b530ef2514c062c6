"""Gathering frames of every camera into one inference batch, bounded, oldest dropped under overload.

`FramePool` holds at most `max_pending_per_camera` frames per camera. Adding one more drops that
camera's oldest waiting frame (counted). `take(batch_size)` hands out up to `batch_size` frames, oldest
first but at most one per camera per round, so a busy camera cannot starve the others. The service
waits for a full batch or for `deadline` after the first waiting frame, whichever comes first.
Nothing here does I/O; the service owns the clock and the sockets.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from alpr_shared.schemas import FrameReady


@dataclass
class Pending:
    message: FrameReady
    received_s: float  # monotonic time the frame entered the pool


class FramePool:
    def __init__(
        self, max_pending_per_camera: int, on_drop: Callable[[FrameReady], None] | None = None
    ) -> None:
        if max_pending_per_camera < 1:
            raise ValueError("max_pending_per_camera must be at least 1")
        self.max_pending = max_pending_per_camera
        self._queues: dict[str, deque[Pending]] = {}
        self._on_drop = on_drop
        self._changed = asyncio.Event()
        self.dropped: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def add(self, message: FrameReady, now_s: float) -> None:
        queue = self._queues.setdefault(message.camera_id, deque())
        while len(queue) >= self.max_pending:
            old = queue.popleft()
            self.dropped[old.message.camera_id] = self.dropped.get(old.message.camera_id, 0) + 1
            if self._on_drop is not None:
                self._on_drop(old.message)
        queue.append(Pending(message, now_s))
        self._changed.set()

    def oldest_s(self) -> float | None:
        heads = [q[0].received_s for q in self._queues.values() if q]
        return min(heads) if heads else None

    def take(self, batch_size: int) -> list[Pending]:
        """Up to `batch_size` frames: round-robin over cameras, each round oldest camera head first."""
        out: list[Pending] = []
        while len(out) < batch_size:
            heads = sorted((q[0].received_s, cam) for cam, q in self._queues.items() if q)
            if not heads:
                break
            for _, cam in heads:
                if len(out) >= batch_size:
                    break
                out.append(self._queues[cam].popleft())
        if not len(self):
            self._changed.clear()
        return out

    async def wait_batch(self, batch_size: int, deadline_s: float, clock: Callable[[], float]) -> None:
        """Return once the pool holds `batch_size` frames, or `deadline_s` after its oldest frame arrived."""
        while True:
            if len(self) >= batch_size:
                return
            oldest = self.oldest_s()
            if oldest is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            remaining = oldest + deadline_s - clock()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return
