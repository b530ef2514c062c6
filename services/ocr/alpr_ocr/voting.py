"""Voting: the reads of one plate track combined, per character position, into one text.

Length first: the plate's length is the one most reads agree on, each read counting its `weight` (how good
the crop it came from was) and not its confidence. A CTC read that drops a faint edge character leaves no
low-confidence trace (it is often *more* confident than the full read), so confidence-weighted length votes
favour deletions. Reads less than half as confident as the best one are guesses (the blurred first frames
of an approaching plate) and do not vote on the length, however many they are. Then reads are aligned to an anchor (the most confident read of that length) by edit
distance, so a read with an extra or a missing character still votes on the positions it shares; each read
contributes its per-position alternatives weighted by `weight` x its confidence. Pure functions: no I/O,
no state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from alpr_shared.schemas import CharCandidate

# A read less confident than this share of the track's most confident read does not vote on the length.
LENGTH_EVIDENCE_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Ballot:
    """One read of one crop, as voting sees it."""

    text: str
    confidence: float
    alternatives: list[list[CharCandidate]] = field(default_factory=list)
    weight: float = 1.0  # evidence weight of the crop read (the track gives its shot score; 1: equal)


@dataclass(frozen=True, slots=True)
class Vote:
    text: str
    confidence: float
    alternatives: list[list[CharCandidate]]
    reads: int  # non-empty reads that took part
    agreeing: int  # reads whose own text equals the voted text


def align(anchor: str, other: str) -> list[int | None]:
    """For each character of `other`, the anchor position it maps to (match or substitution), or None
    (an insertion relative to the anchor). Levenshtein alignment; ties prefer substitution."""
    n, m = len(anchor), len(other)
    dist = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        dist[i][0] = i
    for j in range(m + 1):
        dist[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = 0 if anchor[i - 1] == other[j - 1] else 1
            dist[i][j] = min(dist[i - 1][j - 1] + cost, dist[i - 1][j] + 1, dist[i][j - 1] + 1)
    mapping: list[int | None] = [None] * m
    i, j = n, m
    while i > 0 and j > 0:
        cost = 0 if anchor[i - 1] == other[j - 1] else 1
        if dist[i][j] == dist[i - 1][j - 1] + cost:
            mapping[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif dist[i][j] == dist[i][j - 1] + 1:
            j -= 1  # other has an extra character
        else:
            i -= 1  # other misses an anchor character
    return mapping


def _candidates(ballot: Ballot, index: int) -> list[CharCandidate]:
    if index < len(ballot.alternatives) and ballot.alternatives[index]:
        return ballot.alternatives[index]
    return [CharCandidate(ballot.text[index], 1.0)]


def vote(ballots: Sequence[Ballot], top_k: int = 3) -> Vote | None:
    """The combined read of a track, or None if no read produced text."""
    usable = sorted(
        (b for b in ballots if b.text and b.confidence > 0 and b.weight > 0),
        key=lambda b: (-b.confidence, b.text),
    )
    if not usable:
        return None
    by_length: dict[int, tuple[float, float]] = {}
    floor = usable[0].confidence * LENGTH_EVIDENCE_SHARE
    for b in usable:
        if b.confidence < floor:
            continue  # a guess, not evidence of how many characters the plate has
        count, mass = by_length.get(len(b.text), (0.0, 0.0))
        by_length[len(b.text)] = (count + b.weight, mass + b.weight * b.confidence)
    length = max(by_length, key=lambda n: (*by_length[n], -abs(n - len(usable[0].text))))
    anchor = next(b for b in usable if len(b.text) == length)
    total_weight = sum(b.weight * b.confidence for b in usable)
    tallies: list[dict[str, float]] = [{} for _ in range(length)]
    for b in usable:
        for k, pos in enumerate(align(anchor.text, b.text)):
            if pos is None:
                continue
            for cand in _candidates(b, k):
                gain = b.weight * b.confidence * cand.confidence
                tallies[pos][cand.char] = tallies[pos].get(cand.char, 0.0) + gain
    chars: list[str] = []
    alternatives: list[list[CharCandidate]] = []
    confidences: list[float] = []
    for pos, counted in enumerate(tallies):
        tally = counted or {anchor.text[pos]: anchor.confidence}
        ranked = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        chars.append(ranked[0][0])
        alternatives.append([CharCandidate(c, round(min(1.0, w / total_weight), 4)) for c, w in ranked])
        confidences.append(min(1.0, ranked[0][1] / total_weight))
    text = "".join(chars)
    confidence = sum(confidences) / len(confidences)
    agreeing = sum(1 for b in usable if b.text == text)
    return Vote(text, confidence, alternatives, len(usable), agreeing)
