"""Synthetic plate events for tests and `bench/persist.py`: deterministic, realistic in shape and size.

Never used by the service itself.
"""

from __future__ import annotations

import random
import time
import uuid

from alpr_shared.schemas import Box, PlateEvent

_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_NS = uuid.UUID("6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e")


def make_event(
    index: int,
    *,
    revision: int = 1,
    cameras: int = 4,
    now_ns: int | None = None,
    spread_s: float = 3600.0,
    seed: int = 7,
    jpeg_bytes: int = 0,
) -> PlateEvent:
    """Event number `index`: the same index always gives the same event id, camera and times."""
    rng = random.Random(seed * 1_000_003 + index)  # noqa: S311 - test data, not secrets
    base = now_ns if now_ns is not None else time.time_ns()
    first = base - int(rng.uniform(0, spread_s) * 1e9)
    plate = "".join(rng.choice(_LETTERS) for _ in range(3)) + f"{rng.randrange(1000):03d}"
    camera = f"cam-{index % cameras}"
    return PlateEvent(
        event_id=str(uuid.uuid5(_NS, f"{seed}/{index}")),
        revision=revision,
        camera_id=camera,
        site_id="site-1",
        plate=plate,
        plate_raw=plate,
        region="us",
        format_valid=rng.random() < 0.9,
        confidence=min(1.0, round(rng.uniform(0.5, 0.95) + 0.01 * revision, 4)),
        first_seen_ns=first,
        last_seen_ns=first + int(rng.uniform(0.5, 5.0) * 1e9),
        track_id=index,
        direction=rng.choice(["in", "out", None]),
        vehicle_class=rng.choice(["car", "truck", "bus", None]),
        plate_jpeg=(b"\xff\xd8" + bytes(rng.getrandbits(8) for _ in range(jpeg_bytes)))
        if jpeg_bytes
        else None,
        reads=revision + 2,
        best_shot_ns=first + 10**8,
        emitted_at_ns=base,
        camera_name=f"Gate {index % cameras}",
        plate_box=Box(x1=100.0, y1=200.0, x2=220.0, y2=240.0),
        watchlist=["stolen"] if index % 97 == 0 else [],
    )
