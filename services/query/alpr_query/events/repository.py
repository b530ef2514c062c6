"""SQL of the events routes: filtered, keyset-paginated listings, one event, its crops.

Listings are newest first on `(first_seen, event_id)`; the next page starts strictly after the last row's
key, which the `(camera_id, first_seen)`, `(plate, first_seen)` and `(first_seen)` indexes walk directly
(no OFFSET). Fuzzy plate search ranks by trigram similarity, then newest first, and pages on
`(score, first_seen, event_id)`:

- `trigram` mode (pg_trgm installed): `plate % $q` uses the GIN trigram index; the threshold is set per
  transaction (`pg_trgm.similarity_threshold`), so pooled connections keep their defaults.
- `scan` mode (no pg_trgm, e.g. the embedded pgserver): the newest `query.fuzzy_scan_limit` events that
  pass the other filters are scored in Python (`alpr_query.similarity`: pg_trgm's formula, bit-equal, so
  both modes rank alike), then the page's rows are read. Older events are not searched; the page says
  `fuzzy_mode: "scan"`. Ties on (score, first_seen) are broken by event id in Python's order here, in the
  database collation's order in trigram mode.

Values always travel as parameters; the only text spliced into SQL is this module's own column lists
and operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
import numpy as np

from alpr_query.cursor import Position, fingerprint
from alpr_query.db import Database
from alpr_query.similarity import similarity, trigrams

Match = Literal["exact", "prefix", "fuzzy"]
# A result row: an asyncpg record, or (fuzzy scan) a tuple of the same columns plus the score.
Row = asyncpg.Record | tuple[Any, ...]
FuzzyMode = Literal["trigram", "scan"]

SUMMARY_COLUMNS = (
    "event_id",
    "first_seen",
    "last_seen",
    "revision",
    "camera_id",
    "site_id",
    "camera_name",
    "plate",
    "plate_raw",
    "region",
    "format_valid",
    "corrected",
    "confidence",
    "direction",
    "camera_direction",
    "vehicle_class",
    "watchlist",
    "has_plate_image",
    "has_vehicle_image",
)
DETAIL_COLUMNS = (
    *SUMMARY_COLUMNS,
    "latitude",
    "longitude",
    "track_id",
    "tracks",
    "reads",
    "final",
    "best_shot_at",
    "plate_box",
    "vehicle_box",
    "crossed_line",
    "schema_version",
    "emitted_at",
    "stored_at",
    "created_at",
)
_SUMMARY = ", ".join(SUMMARY_COLUMNS)
_DETAIL = ", ".join(DETAIL_COLUMNS)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """The filters of an events listing (already validated and normalised by the route)."""

    plate: str | None = None
    match: Match = "exact"
    min_score: float = 0.3
    cameras: tuple[str, ...] = ()
    site: str | None = None
    region: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_confidence: float | None = None
    direction: str | None = None
    watchlist_hit: bool | None = None
    watchlist_label: str | None = None

    @property
    def fuzzy(self) -> bool:
        return self.plate is not None and self.match == "fuzzy"

    def fingerprint(self) -> str:
        return fingerprint(
            self.plate,
            self.match,
            self.min_score if self.fuzzy else None,
            self.cameras,
            self.site,
            self.region,
            self.since,
            self.until,
            self.min_confidence,
            self.direction,
            self.watchlist_hit,
            self.watchlist_label,
        )


class _Args:
    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _conditions(f: EventFilter, args: _Args) -> list[str]:  # noqa: PLR0912 - one branch per filter
    where: list[str] = []
    if f.plate is not None and f.match == "exact":
        where.append(f"plate = {args.add(f.plate)}")
    elif f.plate is not None and f.match == "prefix":
        where.append(f"starts_with(plate, {args.add(f.plate)})")
    if len(f.cameras) == 1:
        where.append(f"camera_id = {args.add(f.cameras[0])}")
    elif f.cameras:
        where.append(f"camera_id = ANY({args.add(list(f.cameras))}::text[])")
    if f.site is not None:
        where.append(f"site_id = {args.add(f.site)}")
    if f.region is not None:
        where.append(f"region = {args.add(f.region)}")
    if f.since is not None:
        where.append(f"first_seen >= {args.add(f.since)}")
    if f.until is not None:
        where.append(f"first_seen < {args.add(f.until)}")
    if f.min_confidence is not None:
        where.append(f"confidence >= {args.add(f.min_confidence)}::real")
    if f.direction is not None:
        where.append(f"direction = {args.add(f.direction)}")
    if f.watchlist_hit is True:
        where.append("watchlist <> '{}'")
    elif f.watchlist_hit is False:
        where.append("watchlist = '{}'")
    if f.watchlist_label is not None:
        where.append(f"watchlist @> ARRAY[{args.add(f.watchlist_label)}::text]")
    return where


def _where(conditions: list[str]) -> str:
    return ("WHERE " + " AND ".join(conditions)) if conditions else ""


class EventRepository:
    def __init__(self, db: Database, *, fuzzy_scan_limit: int) -> None:
        self.db = db
        self.fuzzy_scan_limit = fuzzy_scan_limit
        self.fuzzy_mode: FuzzyMode = "scan"

    async def detect_fuzzy_mode(self, wanted: Literal["auto", "trigram", "scan"]) -> FuzzyMode:
        """`trigram` when pg_trgm is installed in this database (and not turned off), else `scan`."""
        installed = bool(
            await self.db.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')"
            )
        )
        if wanted == "trigram" and not installed:
            raise RuntimeError(
                "query.fuzzy is 'trigram' but pg_trgm is not installed in this database "
                "(install it and run `alpr db migrate`, or set query.fuzzy: auto)"
            )
        self.fuzzy_mode = "trigram" if installed and wanted != "scan" else "scan"
        return self.fuzzy_mode

    async def search(
        self, f: EventFilter, *, limit: int, after: Position | None
    ) -> tuple[list[Row], FuzzyMode | None]:
        """Up to `limit` + 1 rows (the extra one tells the caller there is a next page)."""
        if f.fuzzy:
            if self.fuzzy_mode == "trigram":
                return list(await self._fuzzy_trigram(f, limit, after)), "trigram"
            return await self._fuzzy_scan(f, limit, after), "scan"
        args = _Args()
        where = _conditions(f, args)
        if after is not None:
            where.append(
                f"(first_seen, event_id) < ({args.add(after.first_seen)}, {args.add(after.event_id)})"
            )
        sql = (
            f"SELECT {_SUMMARY} FROM plate_events {_where(where)} "  # noqa: S608 - see the module docstring
            f"ORDER BY first_seen DESC, event_id DESC LIMIT {args.add(limit + 1)}"
        )
        rows: list[Row] = list(await self.db.pool.fetch(sql, *args.values))
        return rows, None

    async def _fuzzy_trigram(
        self, f: EventFilter, limit: int, after: Position | None
    ) -> list[asyncpg.Record]:
        args = _Args()
        query = args.add(f.plate)
        score = f"similarity(plate, {query})"
        where = [f"plate % {query}", *_conditions(f, args)]
        if after is not None:
            where.append(
                f"({score}, first_seen, event_id) < "
                f"({args.add(after.score)}::real, {args.add(after.first_seen)}, {args.add(after.event_id)})"
            )
        sql = (
            f"SELECT {_SUMMARY}, {score} AS score FROM plate_events {_where(where)} "  # noqa: S608
            f"ORDER BY score DESC, first_seen DESC, event_id DESC LIMIT {args.add(limit + 1)}"
        )
        async with self.db.pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(
                "SELECT set_config('pg_trgm.similarity_threshold', $1, true)", repr(float(f.min_score))
            )
            return await conn.fetch(sql, *args.values)

    async def _fuzzy_scan(self, f: EventFilter, limit: int, after: Position | None) -> list[Row]:
        """Score the newest `fuzzy_scan_limit` candidates in Python (`similarity.py`, bit-equal to pg_trgm),
        then read the full rows of the page. One narrow scan (id, time, plate) instead of a SQL function
        per row: 50,000 candidates take ~0.2 s here, `alpr_similarity()` in SQL over 10 s."""
        assert f.plate is not None  # noqa: S101 - `fuzzy` implies a plate
        args = _Args()
        candidates = await self.db.pool.fetch(
            f"SELECT event_id, first_seen, plate FROM plate_events {_where(_conditions(f, args))} "  # noqa: S608
            f"ORDER BY first_seen DESC LIMIT {args.add(self.fuzzy_scan_limit)}",
            *args.values,
        )
        wanted = trigrams(f.plate)
        minimum = float(np.float32(f.min_score))
        scores: dict[str, float] = {}
        ranked: list[tuple[float, datetime, str]] = []
        for event_id, first_seen, plate in candidates:
            score = scores.get(plate)
            if score is None:
                score = scores[plate] = similarity(trigrams(plate), wanted)
            if score >= minimum:
                ranked.append((score, first_seen, event_id))
        ranked.sort(reverse=True)
        if after is not None:
            bound = (float(np.float32(after.score or 0.0)), after.first_seen, after.event_id)
            ranked = [key for key in ranked if key < bound]
        page = ranked[: limit + 1]
        if not page:
            return []
        rows = await self.db.pool.fetch(
            f"""SELECT {_SUMMARY} FROM plate_events
                WHERE (event_id, first_seen) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[]))""",  # noqa: S608
            [key[2] for key in page],
            [key[1] for key in page],
        )
        by_key = {(r["event_id"], r["first_seen"]): r for r in rows}
        return [(*by_key[(e, t)], score) for score, t, e in page if (e, t) in by_key]

    async def get(self, event_id: str) -> asyncpg.Record | None:
        return await self.db.pool.fetchrow(
            f"SELECT {_DETAIL} FROM plate_events WHERE event_id = $1 ORDER BY first_seen DESC LIMIT 1",  # noqa: S608
            event_id,
        )

    async def image(self, event_id: str, kind: Literal["plate", "vehicle"]) -> bytes | None:
        data: bytes | None = await self.db.pool.fetchval(
            "SELECT jpeg FROM plate_event_images WHERE event_id = $1 AND kind = $2 "
            "ORDER BY first_seen DESC LIMIT 1",
            event_id,
            kind,
        )
        return data
