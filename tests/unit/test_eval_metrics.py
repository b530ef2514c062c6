"""`alpr eval`'s scoring on a tiny hand-checked set: a clean read, a miss, a wrong read, a multi-plate
photo with a false read, and an O/0 mix-up. Every figure below was counted by hand."""

from __future__ import annotations

import pytest

from alpr_shared.evaluate.datasets import PlateLabel
from alpr_shared.evaluate.metrics import (
    ImageResult,
    PlateResult,
    confusions,
    iou,
    pair_reads,
    score_image,
    summarise,
)

A_BOX = (10.0, 10.0, 110.0, 40.0)
D1 = (0.0, 0.0, 100.0, 30.0)
D2 = (300.0, 0.0, 400.0, 30.0)

HAND_SET = [
    # read exactly; the read's box overlaps the label's at IoU (96*26)/(100*30) = 0.832
    ImageResult(
        "a.jpg",
        (PlateLabel("ABC123", A_BOX),),
        (PlateResult("ABC123", 0.9, (12.0, 12.0, 108.0, 38.0)),),
        ((12.0, 12.0, 108.0, 38.0),),
        ms=100.0,
    ),
    # a miss: nothing detected, nothing read
    ImageResult("b.jpg", (PlateLabel("XYZ789", D1),), (), (), ms=50.0),
    # a wrong read: O read as 0 and an extra I; box found
    ImageResult(
        "c.jpg",
        (PlateLabel("O0B8", (0.0, 0.0, 50.0, 20.0)),),
        (PlateResult("00B8I", 0.5, (0.0, 0.0, 50.0, 20.0)),),
        ((0.0, 0.0, 50.0, 20.0),),
        ms=150.0,
    ),
    # two plates and a false read far away; the second label's box is also found
    ImageResult(
        "d.jpg",
        (PlateLabel("AAA111", D1), PlateLabel("BBB222", D2)),
        (
            PlateResult("BBB222", 0.8, D2),
            PlateResult("AAA117", 0.7, D1),
            PlateResult("ZZZ", 0.3, (900.0, 900.0, 950.0, 920.0)),
        ),
        (D2, D1, (900.0, 900.0, 950.0, 920.0)),
        ms=200.0,
    ),
    # O read as 0: wrong strictly, right when O and 0 are one
    ImageResult("e.jpg", (PlateLabel("OAK100", D1),), (PlateResult("0AK100", 0.6, D1),), (D1,), ms=100.0),
]


def test_hand_checked_set() -> None:
    s = summarise(HAND_SET)
    assert s.images == 5
    assert s.labels == 6
    assert (s.found, s.boxed_labels) == (5, 6)  # all but the miss
    assert s.plate_recall == pytest.approx(5 / 6)
    # best overlaps: a 0.832, b 0 (missed), c 1, d 1 and 1, e 1 → median of [0, 0.832, 1, 1, 1, 1]
    assert s.median_box_iou == pytest.approx(1.0)
    assert sorted(s.box_ious)[:2] == [0.0, pytest.approx(96 * 26 / (100 * 30))]
    assert s.exact == 2  # ABC123, BBB222
    assert s.exact_accuracy == pytest.approx(2 / 6)
    assert s.exact_o0 == 3  # + OAK100
    # chars: 6 + 0 + (4 - 2) + 6 + (6 - 1) + (6 - 1) = 24 of 6 + 6 + 4 + 6 + 6 + 6 = 34
    assert (s.chars_correct, s.chars_total) == (24, 34)
    assert s.char_accuracy == pytest.approx(24 / 34)
    assert s.no_read == 1
    assert s.ms_per_image == pytest.approx(120.0)
    assert s.top_confusions() == [("O→0", 2), ("+I", 1), ("1→7", 1)]


def test_direct_computation_on_one_plate_images() -> None:
    """On one-plate photos, exact = "one of the image's reads equals the label" (the issue's wording)."""
    single = [r for r in HAND_SET if len(r.labels) == 1]
    direct = sum(1 for r in single if any(read.text == r.labels[0].text for read in r.reads))
    assert summarise(single).exact == direct == 1


def test_each_read_pairs_with_one_label() -> None:
    labels = [PlateLabel("AB12"), PlateLabel("AB12")]
    reads = [PlateResult("AB12")]
    assert pair_reads(labels, reads) == [reads[0], None]
    assert [o.exact for o in score_image(ImageResult("x", tuple(labels), tuple(reads)))] == [True, False]


def test_empty_reads_never_pair_and_unreadable_images_count_as_misses() -> None:
    result = ImageResult("x", (PlateLabel("AB12"),), (PlateResult(""),), error="cannot read image x")
    s = summarise([result])
    assert (s.exact, s.no_read, s.errors, s.ms) == (0, 1, 1, [])
    assert s.plate_recall is None  # no label box: recall does not apply


def test_confusions_and_iou() -> None:
    assert confusions("FUW999", "AFUW999") == ["+A"]
    assert confusions("AB8", "A8") == ["-B"]
    assert confusions("O12", "012") == ["O→0"]
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
