"""From plate reads to one event per vehicle passage. Pure: no sockets, no disk, no clock of its own
(every call passes `now_ns`), so replaying the same reads gives the same events.

What it owns: the open events of the dedup window (per camera, or per site), which track belongs to
which event, and which watchlist entries an event already alerted on. Its whole state round-trips
through `OpenEventState`, which the service stores in the outbox database in the same transaction as
the records it produced, so a restarted service continues revisions instead of starting over.

Rules:
- A read of a known track updates that track's event.
- A read of a new track joins an open event of the same scope whose plate is within
  `dedup_max_distance` edits (rapidfuzz Levenshtein) and whose last sighting is within the window;
  otherwise it opens a new event, id = uuid5(site, camera, track, first seen), so a replay gets the
  same id.
- An event is emitted when it opens, when a better read changes it (format-valid beats invalid, else
  confidence higher by `revision_min_gain`), and when a track ends with something new to say. Each
  emission has the next `revision`; nothing else ever produces a second event for the passage.
- Watchlist hits are checked on every emission; each (event, entry) alerts once.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from alpr_events.crops import cap_jpeg
from alpr_events.plates import Normalized, PlateCheck, PlateFormats, normalize
from alpr_events.watchlist import Watchlist
from alpr_shared.schemas import CharCandidate, PlateEvent, PlateRead, WatchlistAlert

# Namespace of event and alert ids (uuid5): fixed forever, or replays would get new ids.
EVENT_NAMESPACE = uuid.UUID("6f1c5e52-4c8b-4d0f-9a35-2f3d7f0e9b1a")
MAX_PLATE_LENGTH = 16
# Evicted events whose last revision is remembered (for late reads); ~100 bytes each.
CLOSED_MEMORY = 65_536


@dataclass(frozen=True, slots=True)
class CameraInfo:
    camera_id: str
    site_id: str
    name: str
    regions: tuple[str, ...]
    latitude: float | None = None
    longitude: float | None = None
    direction: str | None = None


@dataclass(frozen=True, slots=True)
class BuilderConfig:
    dedup_window_s: float = 300.0
    dedup_scope: Literal["camera", "site"] = "camera"
    dedup_max_distance: int = 1
    revision_min_gain: float = 0.02
    min_confidence: float = 0.0
    correction_max_changes: int = 2
    confusable_weight: float = 0.5
    correction_min_ratio: float = 0.6  # see events.correction_min_ratio
    min_plate_length: int = 1  # see events.min_plate_length
    plate_jpeg_max_bytes: int = 16_384
    vehicle_jpeg_max_bytes: int = 65_536


class OpenEventState(msgspec.Struct, kw_only=True):
    """One open event as stored in the outbox database (msgpack)."""

    event: PlateEvent  # the current state; `event.revision` is the last emitted revision
    scope: str
    tracks: dict[str, int]  # "camera/track" → OCR reads of that track
    alerted: list[str] = msgspec.field(default_factory=list)
    ended: list[str] = msgspec.field(default_factory=list)  # tracks whose final read arrived
    emitted: bool = True  # False: changed since the last emission (emitted on the track's end)


@dataclass
class Outcome:
    """What one read produced. `dropped` names the reason when the read was refused."""

    event: PlateEvent | None = None
    alerts: list[WatchlistAlert] = field(default_factory=list)
    state: OpenEventState | None = None  # to store (None when dropped)
    evicted: list[str] = field(default_factory=list)  # event ids that left the window: delete their state
    dropped: str | None = None
    corrected: bool = False
    merged: bool = False  # joined an event of another track
    crops: list[str] = field(default_factory=list)  # "recoded" / "dropped" crop outcomes, for metrics


def event_id_for(site_id: str, camera_id: str, track_id: int, first_seen_ns: int) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{site_id}/{camera_id}/{track_id}/{first_seen_ns}"))


def alert_id_for(event_id: str, entry_id: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"alert/{event_id}/{entry_id}"))


def _track_key(camera_id: str, track_id: int) -> str:
    return f"{camera_id}/{track_id}"


@dataclass(frozen=True, slots=True)
class CheckedRead:
    """A read's text after normalisation and region-format correction, with its adjusted confidence."""

    norm: Normalized
    check: PlateCheck
    confidence: float


def check_read(
    formats: PlateFormats,
    regions: tuple[str, ...],
    text: str,
    confidence: float,
    alternatives: Sequence[Sequence[CharCandidate]],
    *,
    max_changes: int,
    confusable_weight: float,
    min_ratio: float = 0.0,
    min_length: int = 1,
) -> CheckedRead | str:
    """Normalise one OCR read and check it against the regions' formats (correcting it when a format is
    in reach): the plate an event would carry, or the reason the read is dropped (`empty_text`,
    `malformed`, `too_short`). Pure; `alpr eval` scores exactly this."""
    norm = normalize(text, [[(c.char, c.confidence) for c in pos] for pos in alternatives])
    if not norm.text:
        return "empty_text"
    if len(norm.text) > MAX_PLATE_LENGTH:
        return "malformed"
    if len(norm.text) < min_length:
        return "too_short"
    check = formats.check(
        norm, regions, max_changes=max_changes, confusable_weight=confusable_weight, min_ratio=min_ratio
    )
    return CheckedRead(norm, check, min(1.0, confidence * check.confidence_factor))


class EventBuilder:
    def __init__(
        self,
        config: BuilderConfig,
        formats: PlateFormats,
        cameras: dict[str, CameraInfo],
        watchlist: Watchlist,
    ) -> None:
        self.config = config
        self.formats = formats
        self.cameras = cameras
        self.watchlist = watchlist
        self._window_ns = int(config.dedup_window_s * 1e9)
        self._open: dict[str, OpenEventState] = {}
        # Per scope: event ids in order of their last update (oldest first), for eviction and matching.
        self._by_scope: dict[str, OrderedDict[str, str]] = {}
        self._by_track: dict[str, str] = {}
        self._newest_ns: dict[str, int] = {}
        # Last revision of recently evicted events: a late read that re-opens one (same deterministic id)
        # continues its revisions instead of emitting revision 1 twice.
        self._closed: OrderedDict[str, int] = OrderedDict()

    # --- state ------------------------------------------------------------------------------------------

    def restore(self, states: Iterable[OpenEventState]) -> None:
        """Load open events saved by an earlier run (oldest last_seen first is best, not required)."""
        for state in sorted(states, key=lambda s: s.event.last_seen_ns):
            self._index(state)

    def open_events(self) -> int:
        return len(self._open)

    def _index(self, state: OpenEventState) -> None:
        event_id = state.event.event_id
        self._open[event_id] = state
        scope = self._by_scope.setdefault(state.scope, OrderedDict())
        scope[event_id] = state.event.plate
        scope.move_to_end(event_id)
        for key in state.tracks:
            self._by_track[key] = event_id
        self._newest_ns[state.scope] = max(self._newest_ns.get(state.scope, 0), state.event.last_seen_ns)

    def _evict(self, scope_key: str) -> list[str]:
        newest = self._newest_ns.get(scope_key, 0)
        scope = self._by_scope.get(scope_key)
        evicted: list[str] = []
        if not scope:
            return evicted
        while scope:
            event_id = next(iter(scope))
            state = self._open[event_id]
            if newest - state.event.last_seen_ns <= self._window_ns:
                break
            del scope[event_id]
            del self._open[event_id]
            self._closed[event_id] = state.event.revision
            if len(self._closed) > CLOSED_MEMORY:
                self._closed.popitem(last=False)
            for key in state.tracks:
                if self._by_track.get(key) == event_id:
                    del self._by_track[key]
            evicted.append(event_id)
        return evicted

    # --- reads ------------------------------------------------------------------------------------------

    def _refuse(self, read: PlateRead) -> str | None:
        if read.camera_id not in self.cameras:
            return "unknown_camera"
        if not (math.isfinite(read.confidence) and 0.0 <= read.confidence <= 1.0):
            return "malformed"
        if read.last_seen_ns and read.first_seen_ns and read.last_seen_ns < read.first_seen_ns:
            return "malformed"
        if read.first_seen_ns < 0 or read.last_seen_ns < 0 or read.track_id < 0:
            return "malformed"
        if read.confidence < self.config.min_confidence:
            return "low_confidence"
        return None

    def process(self, read: PlateRead, now_ns: int) -> Outcome:
        """Apply one read; returns the event revision to publish (if any), alerts, and the state to store."""
        reason = self._refuse(read)
        if reason is not None:
            return Outcome(dropped=reason)
        camera = self.cameras[read.camera_id]
        checked = check_read(
            self.formats,
            camera.regions,
            read.text,
            read.confidence,
            read.alternatives,
            max_changes=self.config.correction_max_changes,
            confusable_weight=self.config.confusable_weight,
            min_ratio=self.config.correction_min_ratio,
            min_length=self.config.min_plate_length,
        )
        if isinstance(checked, str):
            return Outcome(dropped=checked)
        check, confidence = checked.check, checked.confidence
        first_seen = read.first_seen_ns or now_ns
        last_seen = max(read.last_seen_ns or first_seen, first_seen)
        scope_key = camera.camera_id if self.config.dedup_scope == "camera" else f"site:{camera.site_id}"
        self._newest_ns[scope_key] = max(self._newest_ns.get(scope_key, 0), last_seen)
        outcome = Outcome(corrected=check.corrected)
        outcome.evicted = self._evict(scope_key)

        track_key = _track_key(read.camera_id, read.track_id)
        event_id = self._by_track.get(track_key)
        if event_id is None:
            event_id = self._fuzzy_match(scope_key, check.plate, first_seen)
            outcome.merged = event_id is not None
        if event_id is None:
            state = self._new_event(
                read,
                camera=camera,
                check=check,
                confidence=confidence,
                first_seen=first_seen,
                last_seen=last_seen,
                scope_key=scope_key,
                now_ns=now_ns,
                outcome=outcome,
            )
            emit = True
        else:
            state = self._open[event_id]
            emit = self._update(
                state,
                read,
                check=check,
                confidence=confidence,
                last_seen=last_seen,
                track_key=track_key,
                outcome=outcome,
            )
        self._index(state)
        if emit:
            state.event = msgspec.structs.replace(
                state.event, revision=state.event.revision + 1, emitted_at_ns=now_ns
            )
            outcome.alerts = self._alerts(state)
            if outcome.alerts:
                state.event = msgspec.structs.replace(
                    state.event,
                    watchlist=sorted({*state.event.watchlist, *(a.label for a in outcome.alerts)}),
                )
            state.emitted = True
            outcome.event = state.event
        outcome.state = state
        return outcome

    def _fuzzy_match(self, scope_key: str, plate: str, first_seen: int) -> str | None:
        scope = self._by_scope.get(scope_key)
        if not scope:
            return None
        found = process.extractOne(
            plate, scope, scorer=Levenshtein.distance, score_cutoff=self.config.dedup_max_distance
        )
        if found is None:
            return None
        event_id = str(found[2])
        # The window is about the gap between sightings, in either direction (reads may arrive late).
        event = self._open[event_id].event
        if (
            first_seen - event.last_seen_ns > self._window_ns
            or event.first_seen_ns - first_seen > self._window_ns
        ):
            return None
        return event_id

    def _crops(self, read: PlateRead, outcome: Outcome) -> tuple[bytes | None, bytes | None]:
        plate_jpeg, what = cap_jpeg(read.plate_jpeg, self.config.plate_jpeg_max_bytes)
        if what in ("recoded", "dropped"):
            outcome.crops.append(f"plate_{what}")
        vehicle_jpeg, what = cap_jpeg(read.vehicle_jpeg, self.config.vehicle_jpeg_max_bytes)
        if what in ("recoded", "dropped"):
            outcome.crops.append(f"vehicle_{what}")
        return plate_jpeg, vehicle_jpeg

    def _new_event(
        self,
        read: PlateRead,
        *,
        camera: CameraInfo,
        check: PlateCheck,
        confidence: float,
        first_seen: int,
        last_seen: int,
        scope_key: str,
        now_ns: int,
        outcome: Outcome,
    ) -> OpenEventState:
        plate_jpeg, vehicle_jpeg = self._crops(read, outcome)
        event_id = event_id_for(camera.site_id, camera.camera_id, read.track_id, first_seen)
        event = PlateEvent(
            event_id=event_id,
            revision=self._closed.pop(event_id, 0),
            camera_id=camera.camera_id,
            site_id=camera.site_id,
            plate=check.plate,
            plate_raw=read.text,
            region=check.region,
            format_valid=check.format_valid,
            confidence=confidence,
            first_seen_ns=first_seen,
            last_seen_ns=last_seen,
            track_id=read.track_id,
            direction=read.direction,
            vehicle_class=read.vehicle_class,
            plate_jpeg=plate_jpeg,
            corrected=check.corrected,
            final=read.final,
            reads=max(read.reads, 1),
            tracks=1,
            best_shot_ns=read.best_shot_ns,
            emitted_at_ns=now_ns,
            camera_name=camera.name,
            latitude=camera.latitude,
            longitude=camera.longitude,
            camera_direction=camera.direction,
            plate_box=read.plate_box,
            vehicle_box=read.vehicle_box,
            vehicle_jpeg=vehicle_jpeg,
            crossed_line=read.crossed_line,
        )
        key = _track_key(read.camera_id, read.track_id)
        return OpenEventState(
            event=event, scope=scope_key, tracks={key: max(read.reads, 1)}, ended=[key] if read.final else []
        )

    def _update(
        self,
        state: OpenEventState,
        read: PlateRead,
        *,
        check: PlateCheck,
        confidence: float,
        last_seen: int,
        track_key: str,
        outcome: Outcome,
    ) -> bool:
        """Fold a read into an open event; True when the change deserves a new revision."""
        old = state.event
        state.tracks[track_key] = max(state.tracks.get(track_key, 0), read.reads, 1)
        if read.final and track_key not in state.ended:
            state.ended.append(track_key)
        changes: dict[str, object] = {
            "last_seen_ns": max(old.last_seen_ns, last_seen),
            "reads": sum(state.tracks.values()),
            "tracks": len(state.tracks),
            # Final once every merged track ended; a replayed earlier read does not re-open a track.
            "final": all(key in state.ended for key in state.tracks),
            "crossed_line": old.crossed_line or read.crossed_line,
        }
        better = (check.format_valid and not old.format_valid) or (
            check.format_valid == old.format_valid
            and confidence >= old.confidence + self.config.revision_min_gain
        )
        if better:
            plate_jpeg, vehicle_jpeg = self._crops(read, outcome)
            changes.update(
                plate=check.plate,
                plate_raw=read.text,
                region=check.region,
                format_valid=check.format_valid,
                corrected=check.corrected,
                confidence=confidence,
                best_shot_ns=read.best_shot_ns,
                plate_box=read.plate_box,
                plate_jpeg=plate_jpeg or old.plate_jpeg,
                vehicle_box=read.vehicle_box or old.vehicle_box,
                vehicle_jpeg=vehicle_jpeg or old.vehicle_jpeg,
                vehicle_class=read.vehicle_class or old.vehicle_class,
                direction=read.direction or old.direction,
            )
        new = msgspec.structs.replace(old, **changes)
        state.event = new
        if better:
            return True
        if new != old:
            state.emitted = False  # changed since the last emission (carried by the next one)
        # A track's end is worth a revision only if the event changed since the last one.
        return read.final and not state.emitted

    def _alerts(self, state: OpenEventState) -> list[WatchlistAlert]:
        event = state.event
        out: list[WatchlistAlert] = []
        for hit in self.watchlist.hits(event.plate):
            if hit.entry.entry_id in state.alerted:
                continue
            state.alerted.append(hit.entry.entry_id)
            out.append(
                WatchlistAlert(
                    alert_id=alert_id_for(event.event_id, hit.entry.entry_id),
                    event_id=event.event_id,
                    entry_id=hit.entry.entry_id,
                    label=hit.entry.label,
                    watched_plate=hit.entry.plate,
                    plate=event.plate,
                    distance=hit.distance,
                    camera_id=event.camera_id,
                    site_id=event.site_id,
                    seen_ns=event.last_seen_ns,
                    confidence=event.confidence,
                    camera_name=event.camera_name,
                    latitude=event.latitude,
                    longitude=event.longitude,
                )
            )
        return out
