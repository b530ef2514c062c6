"""The summary `alpr run` prints when its file sources are done: what was read, what was stored, and how to
ask the API for it. The numbers come from the store itself (the events this run wrote), not from counters
that a restarted process would have reset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

# Rows of the event table printed under the summary (the rest: ask the API).
SHOWN_EVENTS = 20


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    camera_id: str
    plate: str
    confidence: float
    first_seen: datetime
    reads: int
    watchlist: list[str]


@dataclass
class RunSummary:
    cameras: list[str]
    seconds: float
    frames: int
    plate_reads: int  # OCR reads of plate crops (several per passing vehicle; voting combines them)
    events: list[StoredEvent] = field(default_factory=list)

    @property
    def watchlist_hits(self) -> int:
        return sum(1 for e in self.events if e.watchlist)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


async def stored_events(url: str, cameras: list[str], since: datetime) -> list[StoredEvent]:
    """Events of these cameras whose first revision was stored at or after `since` (this run's)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT event_id, camera_id, plate, confidence, first_seen, reads, watchlist FROM plate_events "
            "WHERE camera_id = ANY($1::text[]) AND created_at >= $2 ORDER BY first_seen",
            cameras,
            since,
        )
    finally:
        await conn.close()
    return [
        StoredEvent(
            r["event_id"],
            r["camera_id"],
            r["plate"],
            float(r["confidence"]),
            r["first_seen"],
            int(r["reads"]),
            list(r["watchlist"]),
        )
        for r in rows
    ]


def render(summary: RunSummary, *, api: str | None, api_key: str | None, note: str | None) -> str:
    lines = [
        "",
        "alpr run: done",
        "",
        f"  sources         {len(summary.cameras)} ({', '.join(summary.cameras)})",
        f"  time            {summary.seconds:.1f} s",
        f"  frames          {summary.frames} ({summary.fps:.1f} fps)",
        f"  plates read     {summary.plate_reads}",
        f"  events          {len(summary.events)}",
        f"  watchlist hits  {summary.watchlist_hits}",
        "",
    ]
    if summary.events:
        lines.append(f"  {'time (UTC)':<20} {'camera':<16} {'plate':<10} {'conf':>5} {'reads':>5}  watchlist")
        for e in summary.events[:SHOWN_EVENTS]:
            lines.append(
                f"  {e.first_seen.strftime('%Y-%m-%d %H:%M:%S'):<20} {e.camera_id[:16]:<16} {e.plate:<10} "
                f"{e.confidence:5.2f} {e.reads:5d}  {','.join(e.watchlist)}"
            )
        if len(summary.events) > SHOWN_EVENTS:
            lines.append(f"  … and {len(summary.events) - SHOWN_EVENTS} more")
        lines.append("")
    if api is not None:
        key = api_key or "$ALPR_API_KEY"
        lines.append("  query them:")
        lines.append(f"    curl -s -H 'X-API-Key: {key}' '{api}/v1/events?limit=20'")
    if note:
        lines.append(f"  {note}")
    return "\n".join(lines)
