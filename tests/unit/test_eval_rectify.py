"""Crop rectification before recognition: the row of characters is found, levelled and cut out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alpr_ocr.rectify import RectifyOptions, find_band, rectify


def _plate(angle: float = 0.0) -> np.ndarray:
    """A white plate: a small state name on top, six large characters, a slogan below; rotated."""
    plate = np.full((120, 300, 3), 235, np.uint8)
    cv2.putText(plate, "CALIFORNIA", (95, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 40, 160), 1, cv2.LINE_AA)
    cv2.putText(plate, "7ABC123", (22, 85), cv2.FONT_HERSHEY_SIMPLEX, 1.9, (20, 20, 20), 5, cv2.LINE_AA)
    cv2.putText(
        plate, "dmv.ca.gov", (110, 110), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (40, 40, 160), 1, cv2.LINE_AA
    )
    if angle:
        matrix = cv2.getRotationMatrix2D((150, 60), angle, 1.0)
        # cv2's stubs widen the dtype of the result; it stays uint8
        plate = cv2.warpAffine(plate, matrix, (300, 120), borderMode=cv2.BORDER_REPLICATE)  # type: ignore[assignment]
    return plate


def test_finds_the_row_of_characters() -> None:
    band = find_band(_plate())
    assert band is not None
    assert band.chars >= 6
    assert abs(band.angle) < 1.0
    centre = band.slope * 150 + band.intercept
    assert 55 < centre < 75  # the big characters' centre line, not the small text
    assert 40 < band.bottom - band.top < 60  # their height (about 45 px at this font scale)


@pytest.mark.parametrize("angle", [-8.0, 6.0])
def test_measures_the_skew_and_levels_it(angle: float) -> None:
    band = find_band(_plate(angle))
    assert band is not None
    # warpAffine's positive angle turns counter-clockwise: the row then climbs to the right (slope < 0)
    assert band.angle == pytest.approx(-angle, abs=1.5)
    out = rectify(_plate(angle))
    again = find_band(out)
    assert again is not None and abs(again.angle) < 1.5


def test_cuts_away_the_text_above_and_below() -> None:
    plate = _plate()
    out = rectify(plate, RectifyOptions(margin=0.25))
    assert out.shape[1] == plate.shape[1]  # never cut sideways
    assert 50 <= out.shape[0] <= 80  # the band (~45 px) plus margins, not the 120 px plate
    # the red state name and slogan are gone: almost no reddish pixels left
    reddish = (out[:, :, 2] > 120) & (out[:, :, 0] < 90)
    assert reddish.sum() < 5


def test_leaves_crops_without_a_row_of_characters_alone() -> None:
    blank = np.full((40, 120, 3), 128, np.uint8)
    assert rectify(blank) is blank
    assert find_band(blank) is None
    plate = _plate()
    assert rectify(plate, RectifyOptions(enabled=False)) is plate
    assert rectify(np.zeros((3, 3, 3), np.uint8)).shape == (3, 3, 3)
