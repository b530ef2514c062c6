"""Scoring plate reads against labels. Pure functions over plain values: no models, no files.

Definitions (the report and the tests use exactly these):
- Each label is paired with at most one read of its image, and each read with at most one label: pairs
  are taken greedily in order of edit distance (then box overlap), so an exact read always pairs with
  its label. Reads with no text never pair.
- Plate recall: labels with a box that some detected plate box overlaps with IoU ≥ `RECALL_IOU`, over
  labels with a box (crop folders have none: recall is not applicable there). Box tightness: the median,
  over those labels, of the best IoU of any detected plate box (0 for a plate with no box).
- Exact accuracy: labels whose paired read equals the label, over all labels. On one-plate photos that
  is "the image is read exactly when one of its reads equals the label".
- Character accuracy: Σ max(0, len(label) − edit distance(label, paired read)) / Σ len(label); an
  unpaired label counts its full length as errors.
- Confusions: the edit operations of each paired, non-exact read: `O→0` (substitution), `+A` (an extra
  character read), `-7` (a character missed).
- O≡0 exact accuracy (secondary, never instead of the strict figure): as exact, with O and 0 the same.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from alpr_shared.evaluate.datasets import PlateLabel

RECALL_IOU = 0.5
BoxT = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class PlateResult:
    """One plate read of one image after the whole per-frame path."""

    text: str  # normalised and format-corrected; what an event would carry
    confidence: float = 0.0
    box: BoxT | None = None  # the plate box the crop came from (None for crop folders)
    raw: str = ""  # the recogniser's own text, before normalisation
    region: str = ""
    detector_score: float = 0.0
    crop_file: str = ""  # the crop the recogniser saw, in the report directory (when one is written)


@dataclass(frozen=True, slots=True)
class ImageResult:
    image: str
    labels: tuple[PlateLabel, ...]
    reads: tuple[PlateResult, ...]
    boxes: tuple[BoxT, ...] = ()  # every plate box the pipeline detected on the image
    ms: float = 0.0  # wall time of the whole per-frame path on one worker (decode included)
    error: str = ""  # the image could not be read (counted as a miss)


@dataclass(frozen=True, slots=True)
class LabelOutcome:
    label: PlateLabel
    read: PlateResult | None
    found: bool | None  # box recall at IoU ≥ 0.5; None without a label box
    best_iou: float | None  # the best overlap of any detected plate box with the label's box
    exact: bool
    chars_correct: int


@dataclass
class Summary:
    images: int = 0
    labels: int = 0
    boxed_labels: int = 0
    found: int = 0
    exact: int = 0
    exact_o0: int = 0
    chars_correct: int = 0
    chars_total: int = 0
    no_read: int = 0  # labels with no paired read at all
    errors: int = 0
    ms: list[float] = field(default_factory=list)
    box_ious: list[float] = field(default_factory=list)  # per boxed label: its best box overlap
    confusions: Counter[str] = field(default_factory=Counter)

    @property
    def plate_recall(self) -> float | None:
        return self.found / self.boxed_labels if self.boxed_labels else None

    @property
    def exact_accuracy(self) -> float:
        return self.exact / self.labels if self.labels else 0.0

    @property
    def exact_accuracy_o0(self) -> float:
        return self.exact_o0 / self.labels if self.labels else 0.0

    @property
    def char_accuracy(self) -> float:
        return self.chars_correct / self.chars_total if self.chars_total else 0.0

    @property
    def median_box_iou(self) -> float | None:
        """How tight the plate boxes are: the median best overlap with the labels (missed plates: 0)."""
        return statistics.median(self.box_ious) if self.box_ious else None

    @property
    def ms_per_image(self) -> float:
        return statistics.fmean(self.ms) if self.ms else 0.0

    def ms_quantile(self, q: float) -> float:
        if not self.ms:
            return 0.0
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def top_confusions(self, n: int = 10) -> list[tuple[str, int]]:
        return sorted(self.confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def iou(a: BoxT, b: BoxT) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pair_reads(labels: Sequence[PlateLabel], reads: Sequence[PlateResult]) -> list[PlateResult | None]:
    """For each label, its paired read (see the module docstring) or None."""
    candidates: list[tuple[int, float, int, int]] = []
    for i, label in enumerate(labels):
        for j, read in enumerate(reads):
            if not read.text:
                continue
            overlap = iou(label.box, read.box) if label.box is not None and read.box is not None else 0.0
            candidates.append((Levenshtein.distance(label.text, read.text), -overlap, i, j))
    candidates.sort()
    paired: list[PlateResult | None] = [None] * len(labels)
    used: set[int] = set()
    for _, _, i, j in candidates:
        if paired[i] is None and j not in used:
            paired[i] = reads[j]
            used.add(j)
    return paired


def confusions(truth: str, read: str) -> list[str]:
    """Edit operations turning `truth` into `read`: `T→R`, `+R` (extra), `-T` (missed)."""
    out: list[str] = []
    for op in Levenshtein.editops(truth, read):
        if op.tag == "replace":
            out.append(f"{truth[op.src_pos]}→{read[op.dest_pos]}")
        elif op.tag == "insert":
            out.append(f"+{read[op.dest_pos]}")
        else:
            out.append(f"-{truth[op.src_pos]}")
    return out


def score_image(result: ImageResult) -> list[LabelOutcome]:
    paired = pair_reads(result.labels, result.reads)
    outcomes: list[LabelOutcome] = []
    for label, read in zip(result.labels, paired, strict=True):
        found: bool | None = None
        best_iou: float | None = None
        if label.box is not None:
            best_iou = max((iou(label.box, box) for box in result.boxes), default=0.0)
            found = best_iou >= RECALL_IOU
        text = read.text if read is not None else ""
        correct = max(0, len(label.text) - Levenshtein.distance(label.text, text))
        outcomes.append(LabelOutcome(label, read, found, best_iou, text == label.text, correct))
    return outcomes


def _o0(text: str) -> str:
    return text.replace("O", "0")


def summarise(results: Sequence[ImageResult]) -> Summary:
    s = Summary()
    for result in results:
        s.images += 1
        s.errors += bool(result.error)
        if not result.error:
            s.ms.append(result.ms)
        for outcome in score_image(result):
            label = outcome.label
            s.labels += 1
            s.chars_total += len(label.text)
            s.chars_correct += outcome.chars_correct
            if outcome.found is not None:
                s.boxed_labels += 1
                s.found += outcome.found
            if outcome.best_iou is not None:
                s.box_ious.append(outcome.best_iou)
            s.exact += outcome.exact
            read = outcome.read
            if read is None:
                s.no_read += 1
                continue
            s.exact_o0 += _o0(read.text) == _o0(label.text)
            if not outcome.exact:
                s.confusions.update(confusions(label.text, read.text))
    return s
