"""The ensemble recogniser: how two reads of one crop become one (pure), and both models on a real crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alpr_ocr.recognizer import (
    ENSEMBLE_NAME,
    EnsembleRecognizer,
    Reading,
    RecognizerOptions,
    combine,
    open_recognizer,
)
from alpr_shared.schemas import CharCandidate


def _read(text: str, *positions: list[tuple[str, float]]) -> Reading:
    alternatives = [[CharCandidate(c, p) for c, p in pos] for pos in positions]
    confidence = sum(pos[0][1] for pos in positions) / len(positions) if positions else 0.0
    return Reading(text, confidence, alternatives)


def test_reads_of_the_same_length_are_fused_character_by_character() -> None:
    # PP-OCRv4 is sure of the 0, the CRNN less sure of its O but it ranks 0 low: the mean decides.
    a = _read("AB0", [("A", 0.99)], [("B", 0.9), ("8", 0.1)], [("0", 0.6), ("O", 0.4)])
    b = _read("A8O", [("A", 0.95)], [("8", 0.55), ("B", 0.45)], [("O", 0.9), ("0", 0.1)])
    fused = combine([a, b])
    assert fused.text == "ABO"  # B: (0.9 + 0.45) / 2 > 8: (0.1 + 0.55) / 2; O: 0.65 > 0: 0.35
    assert [alt[0].char for alt in fused.alternatives] == ["A", "B", "O"]
    assert fused.alternatives[1][1].char == "8"
    assert fused.confidence == pytest.approx((0.97 + 0.675 + 0.65) / 3)
    assert fused.strategy == "ensemble:fused"


def test_a_character_only_one_read_lists_counts_as_zero_in_the_other() -> None:
    a = _read("A1", [("A", 0.9)], [("1", 0.8)])
    b = _read("AI", [("A", 0.9)], [("I", 0.7)])
    fused = combine([a, b])
    assert fused.text == "A1"
    assert fused.alternatives[1] == [CharCandidate("1", 0.4), CharCandidate("I", 0.35)]


def test_reads_of_different_lengths_give_the_most_confident_one_whole() -> None:
    long = _read("XABC123", *([[("X", 0.5)]] + [[(c, 0.9)] for c in "ABC123"]))
    short = _read("ABC123", *[[(c, 0.95)] for c in "ABC123"])
    assert combine([long, short]).text == "ABC123"
    assert combine([long, short]).strategy.startswith("ensemble:")
    assert combine([_read("ABC12", *[[(c, 0.3)] for c in "ABC12"]), long]).text == "XABC123"


def test_empty_reads_never_win() -> None:
    empty = Reading("", 0.0, [], "too-small")
    some = _read("AB1", [("A", 0.2)], [("B", 0.2)], [("1", 0.2)])
    assert combine([empty, some]).text == "AB1"
    assert combine([empty, empty]).text == ""
    assert combine([]).text == ""


def test_both_models_read_a_rendered_plate() -> None:
    plate = np.full((60, 240, 3), 235, np.uint8)
    cv2.rectangle(plate, (2, 2), (237, 57), (20, 20, 20), 2)
    cv2.putText(plate, "KX4821", (14, 46), cv2.FONT_HERSHEY_SIMPLEX, 1.45, (15, 15, 15), 4, cv2.LINE_AA)
    recognizer = open_recognizer(RecognizerOptions(backend=ENSEMBLE_NAME))
    try:
        assert isinstance(recognizer, EnsembleRecognizer)
        assert len(recognizer.members) == 2
        reading = recognizer.read(plate)
        assert reading.text == "KX4821"
        assert reading.strategy.startswith("ensemble:")
        assert "seed" in recognizer.metadata  # the CRNN's provenance, for `alpr eval`'s record
    finally:
        recognizer.close()
