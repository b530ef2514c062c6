"""The synthetic plate renderer: every image carries exactly the label it claims.

The round trip goes through the renderer's own layout: each label glyph's box is cut out of the rendered
plate and compared with every character of the alphabet drawn in the same font at the same size — the
character the label claims must be the best match — and the label must be the layout text's characters,
row by row."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from alpr_ocr.recognizer import PLATE_ALPHABET, row_cut
from alpr_ocr.training import synth


def _ink(plate: synth.RenderedPlate, box: tuple[int, int, int, int]) -> np.ndarray:
    """Ink share per pixel of a box: 0 at the background colour, 1 at the ink colour."""
    x0, y0, x1, y1 = box
    region = plate.image[y0:y1, x0:x1].astype(np.float32)
    bg, ink = np.array(plate.background, np.float32), np.array(plate.ink, np.float32)
    axis = ink - bg
    share = ((region - bg) @ axis) / float(axis @ axis)
    return np.clip(share, 0, 1)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-6))


@pytest.mark.parametrize("layout", [x.name for x in synth.LAYOUTS])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_glyph_reads_back_as_the_label_character(layout: str, seed: int) -> None:
    rng = random.Random(seed)
    plate = synth.render_plate(rng, synth.layout_named(layout), distractors=False)
    assert plate.label == synth.label_of(plate.text)
    assert len(plate.label) >= 4
    for glyph in plate.glyphs:
        x0, y0, x1, y1 = glyph.box
        drawn = _ink(plate, glyph.box)
        scores = {}
        for ch in PLATE_ALPHABET:
            glyph_ink = plate.font.mask(ch, y1 - y0).astype(np.float32) / 255.0
            # Compare at the drawn glyph's width (a squeezed row narrows every glyph alike).
            reference = cv2.resize(glyph_ink, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
            scores[ch] = _similarity(drawn, np.asarray(reference))
        best = max(scores.values())
        assert scores[glyph.char] > 0.9, (plate.text, glyph, scores[glyph.char])
        assert scores[glyph.char] >= best - 1e-6, (
            plate.text,
            glyph.char,
            max(scores, key=scores.__getitem__),
        )


@pytest.mark.parametrize("seed", range(12))
def test_layout_order_and_distractors_stay_out_of_the_label(seed: int) -> None:
    rng = random.Random(100 + seed)
    plate = synth.render_plate(rng)  # distractors on: state names, slogans, stickers, EU band, border
    rows = plate.text.split("|")
    assert plate.label == "".join(synth.label_of(r) for r in rows)
    assert [g.row for g in plate.glyphs] == sorted(g.row for g in plate.glyphs)
    h, w = plate.image.shape[:2]
    for a, b in zip(plate.glyphs, plate.glyphs[1:], strict=False):
        if a.row == b.row:
            assert a.box[2] <= b.box[0], "glyphs of a row run left to right without overlapping"
        else:
            assert a.box[3] <= b.box[1], "the second row lies below the first"
    for g in plate.glyphs:
        assert 0 <= g.box[0] < g.box[2] <= w and 0 <= g.box[1] < g.box[3] <= h
        assert _ink(plate, g.box).max() > 0.5, "every label glyph has ink"


def test_two_row_plates_cut_between_their_rows() -> None:
    for seed in range(8):
        plate = synth.render_plate(random.Random(seed), synth.layout_named("us-2row"), distractors=False)
        top = max(g.box[3] for g in plate.glyphs if g.row == 0)
        bottom = min(g.box[1] for g in plate.glyphs if g.row == 1)
        grey = plate.image.mean(axis=2).astype(np.uint8)
        assert top - 2 <= row_cut(grey) <= bottom + 2, (plate.text, top, bottom, row_cut(grey))


def test_text_outside_the_alphabet_is_refused() -> None:
    with pytest.raises(ValueError, match="outside A-Z"):
        synth.render_plate(random.Random(0), synth.layout_named("us"), "AB.123")
    with pytest.raises(KeyError, match="unknown plate layout"):
        synth.layout_named("mars")


def test_given_text_is_rendered_and_labelled() -> None:
    plate = synth.render_plate(random.Random(5), synth.layout_named("eu"), "AB-123-CD")
    assert plate.label == "AB123CD"
    assert [g.char for g in plate.glyphs] == list("AB123CD")


def test_samples_are_camera_like_and_reproducible() -> None:
    a = [synth.sample(random.Random(9)) for _ in range(2)]
    assert a[0].label == a[1].label
    assert np.array_equal(a[0].image, a[1].image)
    rng = random.Random(11)
    labels = set()
    for _ in range(30):
        s = synth.sample(rng)
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
        assert min(s.image.shape[:2]) >= 10
        assert s.label and set(s.label) <= set(PLATE_ALPHABET)
        assert s.rows in (1, 2)
        labels.add(s.label)
    assert len(labels) == 30


def test_fonts_are_found_offline() -> None:
    # Debian's fonts-dejavu-core or matplotlib's copy; the renderer falls back to Hershey fonts otherwise.
    assert synth.font_paths(), "no DejaVu font found: install fonts-dejavu-core"
    font = synth.GlyphFont(None, synth.HERSHEY_FONTS[0], 0.8, 0)
    mask = font.mask("8", 40)
    assert mask.shape[0] == 40 and mask.max() > 200
