"""Pure logic of the OCR coordinator: shot scoring, throttling decisions, voting, job distribution."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alpr_ocr.dispatch import Dispatcher, DispatchOptions
from alpr_ocr.shots import Shot, make_shot, score_shot
from alpr_ocr.tracks import PlateTrack, Throttle
from alpr_ocr.voting import Ballot, align, vote
from alpr_shared.schemas import Box, CharCandidate, OcrJob, OcrResult, OcrWorkerReady, TrackMessage
from alpr_shared.settings import OcrShotSettings, OcrThrottleSettings

SHOTS = OcrShotSettings()


def _score(box: Box, sharp: float = 400.0, conf: float = 0.9) -> float:
    return score_shot(
        box=box, frame_width=640, frame_height=360, detector_score=conf, sharp=sharp, settings=SHOTS
    )


def test_bigger_sharper_uncut_shots_score_higher() -> None:
    small, big = Box(100, 100, 140, 115), Box(100, 100, 220, 140)
    assert _score(big) > _score(small)
    assert _score(big, sharp=400) > _score(big, sharp=20)
    assert _score(big, conf=0.9) > _score(big, conf=0.2)
    assert _score(Box(0, 100, 120, 140)) < _score(big)  # cut by the left edge
    assert _score(Box(100, 100, 130, 160)) < _score(big)  # taller than wide: skewed or partial
    assert _score(Box(100, 100, 140, 105)) == 0.0  # below min_height_px: never read


def test_make_shot_copies_only_the_plate_region() -> None:
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[100:140, 100:220] = 255
    shot = make_shot(frame, Box(100, 100, 220, 140), detector_score=0.9, captured_at_ns=5, settings=SHOTS)
    assert shot is not None
    assert shot.crop.base is None or shot.crop.base is not frame  # a copy, not a view into the ring
    assert 40 <= shot.crop.shape[0] <= 48 and 120 <= shot.crop.shape[1] <= 128
    frame[:] = 0
    assert shot.crop.max() == 255


def _message(stationary: bool = False) -> TrackMessage:
    return TrackMessage(
        camera_id="c", track_id=1, phase="updated", frame=None, captured_at_ns=0, plate_box=None,
        plate_score=0.9, stationary=stationary,
    )  # fmt: skip


def _shot(score: float, seq: int) -> Shot:
    return Shot(np.zeros((4, 8, 3), np.uint8), score, seq, Box(0, 0, 8, 4), 0.9, seq)


def _track() -> PlateTrack:
    return PlateTrack("c", 1, 0, _message(), 0.0)


def test_throttle_reads_best_shots_only_and_at_most_k_times() -> None:
    throttle = Throttle(
        OcrThrottleSettings(
            max_reads=3, frames_before_first_read=3, improve_ratio=1.15, reread_gap_frames=100_000
        ),
        SHOTS,
    )  # the re-read rule is off here: only clearly better shots are read
    track = _track()
    reads: list[float] = []
    for seq in range(200):  # slowly improving shots, as a vehicle approaches
        throttle.add_shot(track, _shot(min(1.0, 0.4 + seq * 0.003), seq))
        chosen = throttle.next_read(track)
        if chosen is not None:
            throttle.started(track, chosen, f"j{seq}")
            reads.append(chosen.score)
            throttle.finished(track, Ballot(f"T{seq}", 0.5))  # disagreeing reads: never settles
    assert len(reads) == 3
    assert all(b >= a * 1.15 for a, b in itertools.pairwise(reads))
    # At the end, the best shot is read once more because it is better than the last one read.
    final = throttle.final_read(track)
    assert final is not None and final.score > reads[-1]


def test_throttle_rereads_equally_good_shots_spaced_apart() -> None:
    """A plate whose shots all score alike (saturated score) is still read on different crops, spaced
    `reread_gap_frames` apart, and never on a shot worse than the last one read."""
    throttle = Throttle(
        OcrThrottleSettings(max_reads=4, frames_before_first_read=5, improve_ratio=1.1, reread_gap_frames=10),
        SHOTS,
    )
    track = _track()
    read_seqs: list[int] = []
    for seq in range(60):
        score = 0.9 if seq % 7 else 0.5  # every 7th shot is a bad one
        throttle.add_shot(track, _shot(score, seq))
        chosen = throttle.next_read(track)
        if chosen is not None:
            throttle.started(track, chosen, f"j{seq}")
            read_seqs.append(chosen.seq)
            throttle.finished(track, Ballot(f"T{seq}", 0.5))  # disagreeing reads: never settles
    assert len(read_seqs) == 4
    assert all(b - a >= 10 for a, b in itertools.pairwise(read_seqs))
    assert all(seq % 7 for seq in read_seqs[1:])  # re-reads are of shots as good as the last one read


def test_throttle_weights_each_read_by_its_shot_score() -> None:
    throttle = Throttle(OcrThrottleSettings(frames_before_first_read=1), SHOTS)
    track = _track()
    throttle.add_shot(track, _shot(0.8, 0))
    chosen = throttle.next_read(track)
    assert chosen is not None
    throttle.started(track, chosen, "j0")
    throttle.finished(track, Ballot("ABC123", 0.9))
    assert track.reads[0].ballot.weight == 0.8


def test_throttle_stops_once_confident_and_stable() -> None:
    throttle = Throttle(OcrThrottleSettings(max_reads=5, frames_before_first_read=1, stable_reads=2), SHOTS)
    track = _track()
    calls = 0
    for seq in range(100):
        throttle.add_shot(track, _shot(0.4 * 1.2**seq if seq < 10 else 1.0, seq))
        chosen = throttle.next_read(track)
        if chosen is not None:
            calls += 1
            throttle.started(track, chosen, f"j{seq}")
            throttle.finished(track, Ballot("ABC123", 0.97))
    assert calls == 2 and track.settled
    assert throttle.final_read(track) is None


def test_stationary_tracks_are_sampled() -> None:
    throttle = Throttle(OcrThrottleSettings(stationary_interval_s=5.0), SHOTS)
    track = _track()
    taken = [throttle.wants_frame(track, _message(stationary=True), t / 30) for t in range(30 * 60)]
    assert sum(taken) == 12  # one per 5 s over a minute at 30 fps, instead of 1800


def _ballot(text: str, conf: float = 0.9) -> Ballot:
    return Ballot(text, conf, [[CharCandidate(c, 0.9)] for c in text])


def test_vote_aligns_reads_of_different_lengths() -> None:
    result = vote([_ballot("ABC123"), _ballot("ABC128", 0.5), _ballot("XABC123", 0.6), _ballot("ABC23", 0.4)])
    assert result is not None
    assert result.text == "ABC123"
    assert result.agreeing == 1 and result.reads == 4
    assert [alt[0].char for alt in result.alternatives] == list("ABC123")
    assert any(c.char == "8" for c in result.alternatives[5])  # the runner-up survives as an alternative


def test_vote_picks_the_length_most_reads_agree_on_not_the_most_confident() -> None:
    """A read that drops a faint edge character is often the more confident one: the length is decided
    by how many reads (weighted by crop quality) have it, not by their confidence."""
    full = [Ballot("2A9043J", 0.9, weight=0.5), Ballot("2A9043J", 0.9, weight=0.5)]
    result = vote([*full, Ballot("2A9043", 0.99, weight=0.95)])  # weight 1.0 against 0.95
    assert result is not None and result.text == "2A9043J"
    # On a tie in count, the confidence mass decides.
    tie = vote([_ballot("2A9043J", 0.5), _ballot("2A9043", 0.99)])
    assert tie is not None and tie.text == "2A9043"


def test_vote_ignores_guesses_when_choosing_the_length() -> None:
    """Early reads of a blurred plate are one-character guesses; however many, they do not outvote the
    length of a read more than twice as confident."""
    guesses = [_ballot(c, 0.3) for c in "5C9LNE"]
    result = vote([*guesses, _ballot("4141119", 0.93)])
    assert result is not None and result.text == "4141119"


def test_vote_weights_reads_by_crop_quality() -> None:
    good = Ballot("ABC123", 0.9, [[CharCandidate(c, 0.9)] for c in "ABC123"], weight=0.9)
    poor = [Ballot("ABC128", 0.9, [[CharCandidate(c, 0.9)] for c in "ABC128"], weight=0.3) for _ in range(2)]
    result = vote([good, *poor])
    assert result is not None and result.text == "ABC123"
    ignored = vote([Ballot("ZZZ", 0.99, weight=0.0), _ballot("ABC123", 0.5)])
    assert ignored is not None and ignored.text == "ABC123" and ignored.reads == 1


def test_align_maps_extra_and_missing_characters() -> None:
    assert align("ABC123", "XABC123") == [None, 0, 1, 2, 3, 4, 5]
    assert align("ABC123", "ABC23") == [0, 1, 2, 4, 5]


plates = st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=2, max_size=8)


@settings(max_examples=60, deadline=None)
@given(plates, st.lists(st.floats(0.3, 1.0), min_size=1, max_size=5), st.randoms())
def test_vote_of_identical_reads_is_that_read_in_any_order(
    text: str, confs: list[float], rnd: object
) -> None:
    ballots = [_ballot(text, c) for c in confs]
    rnd.shuffle(ballots)  # type: ignore[attr-defined]
    result = vote(ballots)
    assert result is not None and result.text == text and result.agreeing == len(ballots)


@settings(max_examples=60, deadline=None)
@given(plates, plates)
def test_a_confident_majority_outvotes_one_other_read(majority: str, other: str) -> None:
    result = vote([_ballot(majority, 0.9), _ballot(majority, 0.9), _ballot(other, 0.5)])
    assert result is not None and result.text == majority


def _job(n: int) -> OcrJob:
    return OcrJob(job_id=f"j{n}", camera_id="c", track_id=n, crop=b"", crop_height=0, crop_width=0)


def _result(n: int, worker: str) -> OcrResult:
    return OcrResult(job_id=f"j{n}", camera_id="c", track_id=n, text="X", confidence=1.0, worker_id=worker)


def test_dispatch_balances_by_credit_and_resends_on_timeout() -> None:
    d = Dispatcher(DispatchOptions(job_timeout_s=1.0, max_attempts=2, worker_expiry_s=10))
    d.on_ready(b"a", OcrWorkerReady(worker_id="a"), 0.0)
    d.on_ready(b"b", OcrWorkerReady(worker_id="b"), 0.0)
    for n in range(3):
        d.submit(_job(n))
    first = d.assign(0.0)
    assert sorted(w for w, _ in first) == [b"a", b"b"]  # one each: nobody gets a second before answering
    assert d.depth == 1
    a_job = next(j for w, j in first if w == b"a")
    b_job = next(j for w, j in first if w == b"b")
    assert d.on_result(b"b", _result(int(b_job.job_id[1:]), "b"), 0.3) is not None
    assert d.assign(0.3) == [(b"b", _job(2))]
    assert d.on_result(b"b", _result(2, "b"), 1.2) is not None
    # Worker a never answers: its job goes back with attempt 2, to b (free, and not the one that failed).
    requeued, given_up = d.expire(1.5)
    assert [j.attempt for j in requeued] == [2] and not given_up
    (again,) = d.assign(1.6)
    assert again[0] == b"b" and again[1].job_id == a_job.job_id and again[1].attempt == 2
    assert d.on_result(b"b", _result(int(a_job.job_id[1:]), "b"), 1.7) is not None
    # The slow worker's late answer is a duplicate: the read is delivered once.
    assert d.on_result(b"a", _result(int(a_job.job_id[1:]), "a"), 1.8) is None
    assert d.counters.duplicates == 1


def test_dispatch_gives_up_after_max_attempts_and_forgets_silent_workers() -> None:
    d = Dispatcher(DispatchOptions(job_timeout_s=1.0, max_attempts=1, worker_expiry_s=5))
    d.on_ready(b"a", OcrWorkerReady(worker_id="a"), 0.0)
    d.submit(_job(1))
    d.assign(0.0)
    _, given_up = d.expire(2.0)
    assert [j.job_id for j in given_up] == ["j1"]
    d.expire(6.0)
    assert not d.workers
    d.on_ready(b"c", OcrWorkerReady(worker_id="c", capacity=2), 6.0)
    d.submit(_job(2))
    d.submit(_job(3))
    assert len(d.assign(6.0)) == 2
    requeued = d.on_ready(b"c", OcrWorkerReady(worker_id="c", capacity=0), 6.1)  # goodbye
    assert sorted(j.job_id for j in requeued) == ["j2", "j3"] and d.depth == 2
