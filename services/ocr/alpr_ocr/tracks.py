"""Per-track OCR throttling: which shot of a plate track to read, and when to stop reading it.

Owns: the state of each open plate track in the coordinator (its best few shots, the reads done and in
flight, the vote so far) and the decisions made on it. Pure logic with the clock passed in: no sockets, no
frames, no models — the coordinator (`service.py`) feeds it and acts on what it returns.

Rules (every threshold is a setting in `ocr.throttle`):
- a track is read once it has been seen `frames_before_first_read` times, on its best shot so far;
- afterwards when a shot scores `improve_ratio` x better than the last shot read, or when the best shot is
  no worse than it and arrived `reread_gap_frames` frames after it (a different crop of an equally good
  view: its errors are independent of the last read's, so voting can cancel them; an approaching plate's
  late shots score alike, so "better" alone would leave them unread) — at most `max_reads` times, one read
  in flight at a time;
- each read votes with its shot's score as weight (a read of a blurred, small crop is weaker evidence);
- it stops early once `stable_reads` reads agree on the whole text (length included) and the vote is
  `confident`;
- when it ends, its best shot is read once more if that shot was never read (the final read);
- a stationary (parked) vehicle's shots are considered at most once per `stationary_interval_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from alpr_ocr.shots import Shot
from alpr_ocr.voting import Ballot, Vote, vote
from alpr_shared.schemas import TrackMessage
from alpr_shared.settings import OcrShotSettings, OcrThrottleSettings

TrackKey = tuple[str, int]


@dataclass
class TrackRead:
    ballot: Ballot
    shot: Shot


@dataclass
class PlateTrack:
    camera_id: str
    track_id: int
    first_seen_ns: int
    last_message: TrackMessage
    last_activity_s: float
    shots: list[Shot] = field(default_factory=list)  # best first, at most keep_shots
    frames_seen: int = 0
    reads_requested: int = 0
    reads: list[TrackRead] = field(default_factory=list)
    last_read_score: float = 0.0
    last_read_seq: int = -1  # arrival order of the last shot sent for reading
    in_flight: str | None = None  # job id
    in_flight_shot: Shot | None = None
    ended: bool = False
    settled: bool = False  # confident and stable: no more reads
    last_considered_s: float = -1e18
    current: Vote | None = None
    published: tuple[str, float, int] | None = None
    final_sent: bool = False

    @property
    def key(self) -> TrackKey:
        return (self.camera_id, self.track_id)

    @property
    def best_shot(self) -> Shot | None:
        return self.shots[0] if self.shots else None

    def best_read(self) -> TrackRead | None:
        usable = [r for r in self.reads if r.ballot.text]
        return max(usable, key=lambda r: (r.ballot.confidence, r.shot.score)) if usable else None


class Throttle:
    """The decisions on one coordinator's tracks (see the module docstring)."""

    def __init__(self, throttle: OcrThrottleSettings, shots: OcrShotSettings) -> None:
        self.settings = throttle
        self.shot_settings = shots

    def wants_frame(self, track: PlateTrack, message: TrackMessage, now_s: float) -> bool:
        """Whether this `updated` message is worth copying a crop for (parked vehicles are sampled)."""
        if track.settled or track.ended:
            return False
        if message.stationary and now_s - track.last_considered_s < self.settings.stationary_interval_s:
            return False
        track.last_considered_s = now_s
        return True

    def add_shot(self, track: PlateTrack, shot: Shot) -> None:
        track.frames_seen += 1
        track.shots.append(shot)
        track.shots.sort(key=lambda s: (-s.score, -s.seq))
        del track.shots[self.shot_settings.keep_shots :]

    def next_read(self, track: PlateTrack) -> Shot | None:
        """The shot to read now, or None (while the track lives)."""
        s = self.settings
        best = track.best_shot
        if (
            best is None
            or track.settled
            or track.in_flight is not None
            or track.reads_requested >= s.max_reads
            or best.score < s.min_score
        ):
            return None
        if track.reads_requested == 0:
            return best if track.frames_seen >= s.frames_before_first_read else None
        if best.score >= track.last_read_score * s.improve_ratio:
            return best
        fresh = best.seq - track.last_read_seq >= s.reread_gap_frames
        return best if fresh and best.score >= track.last_read_score else None

    def final_read(self, track: PlateTrack) -> Shot | None:
        """On `ended`: the best shot if it was never read (and reading it may still help), else None."""
        best = track.best_shot
        if best is None or track.settled or track.in_flight is not None:
            return None
        if track.reads_requested == 0 or best.score > track.last_read_score:
            return best
        return None

    def started(self, track: PlateTrack, shot: Shot, job_id: str) -> None:
        track.reads_requested += 1
        track.last_read_score = max(track.last_read_score, shot.score)
        track.last_read_seq = max(track.last_read_seq, shot.seq)
        track.in_flight = job_id
        track.in_flight_shot = shot

    def finished(self, track: PlateTrack, ballot: Ballot | None) -> None:
        """A read came back (or was given up: `ballot` None). Updates the vote and the settled flag."""
        shot = track.in_flight_shot
        track.in_flight = None
        track.in_flight_shot = None
        if ballot is None or shot is None:
            return
        track.reads.append(TrackRead(replace(ballot, weight=shot.score), shot))
        track.current = vote([r.ballot for r in track.reads])
        current = track.current
        if (
            current is not None
            and current.agreeing >= self.settings.stable_reads
            and current.confidence >= self.settings.confident
        ):
            track.settled = True

    def changed_since_published(self, track: PlateTrack) -> bool:
        current = track.current
        if current is None:
            return False
        return track.published != (current.text, round(current.confidence, 4), len(track.reads))
