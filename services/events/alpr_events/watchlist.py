"""Watchlist matching: which watched plates a plate text hits. Pure; the Kafka consumer that keeps it up
to date at run time lives in `kafka.py`.

Entries come from two places: the configuration (`events.watchlist`) and the compacted `alpr.watchlist`
topic that the query service publishes to. The topic's entries are layered over the configuration's:
the same id from the topic replaces the config entry, a tombstone (or `deleted=True`) removes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from alpr_events.plates import normalize
from alpr_shared.schemas import WatchlistEntry
from alpr_shared.settings import WatchlistEntrySettings


@dataclass(frozen=True, slots=True)
class Hit:
    entry: WatchlistEntry
    distance: int


def entry_from_settings(item: WatchlistEntrySettings) -> WatchlistEntry:
    return WatchlistEntry(
        entry_id=item.id,
        plate=item.plate,
        label=item.label,
        match=item.match,
        max_distance=item.max_distance,
    )


class Watchlist:
    """The current entries; `hits(plate)` is called once per emitted event revision."""

    def __init__(self, configured: Iterable[WatchlistEntry] = ()) -> None:
        self._configured: dict[str, WatchlistEntry] = {}
        self._runtime: dict[str, WatchlistEntry | None] = {}  # None: deleted at run time
        self._exact: dict[str, list[WatchlistEntry]] = {}
        self._fuzzy: dict[str, WatchlistEntry] = {}
        self._max_fuzzy = 0
        self.set_configured(configured)

    def set_configured(self, entries: Iterable[WatchlistEntry]) -> None:
        self._configured = {e.entry_id: e for e in entries}
        self._rebuild()

    def apply(self, entry_id: str, entry: WatchlistEntry | None) -> None:
        """A record of the watchlist topic: an upsert, or None / `deleted` for a removal."""
        self._runtime[entry_id] = None if entry is None or entry.deleted else entry
        self._rebuild()

    def apply_many(self, records: Iterable[tuple[str, WatchlistEntry | None]]) -> None:
        for entry_id, entry in records:
            self._runtime[entry_id] = None if entry is None or entry.deleted else entry
        self._rebuild()

    def entries(self) -> list[WatchlistEntry]:
        merged: dict[str, WatchlistEntry | None] = {**self._configured, **self._runtime}
        return [e for e in merged.values() if e is not None]

    def __len__(self) -> int:
        return len(self.entries())

    def _rebuild(self) -> None:
        exact: dict[str, list[WatchlistEntry]] = {}
        fuzzy: dict[str, WatchlistEntry] = {}
        for entry in self.entries():
            plate = normalize(entry.plate).text
            if not plate:
                continue
            if entry.match == "fuzzy" and entry.max_distance > 0:
                fuzzy[entry.entry_id] = entry
            else:
                exact.setdefault(plate, []).append(entry)
        self._exact = exact
        self._fuzzy = fuzzy
        self._fuzzy_plates = {k: normalize(e.plate).text for k, e in fuzzy.items()}
        self._max_fuzzy = max((e.max_distance for e in fuzzy.values()), default=0)

    def hits(self, plate: str) -> list[Hit]:
        """Every entry that `plate` (normalised) hits: exact entries by equality, fuzzy ones within their
        own `max_distance` (Levenshtein)."""
        out = [Hit(e, 0) for e in self._exact.get(plate, ())]
        if self._fuzzy_plates:
            for _, distance, key in process.extract(
                plate,
                self._fuzzy_plates,
                scorer=Levenshtein.distance,
                score_cutoff=self._max_fuzzy,
                limit=None,
            ):
                entry = self._fuzzy[key]
                if distance <= entry.max_distance:
                    out.append(Hit(entry, int(distance)))
        return out
