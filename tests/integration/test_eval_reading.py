"""The one reading path the OCR worker and `alpr eval` share: the recogniser the settings name, with
rectification in front of it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alpr_ocr.reading import PlateReader, UnknownRecognizerError, open_reader
from alpr_ocr.rectify import RectifyOptions
from alpr_shared.settings import OcrSettings


def _plate() -> np.ndarray:
    plate = np.full((110, 300, 3), 235, np.uint8)
    cv2.putText(plate, "CALIFORNIA", (90, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (40, 40, 160), 1, cv2.LINE_AA)
    cv2.putText(plate, "7ABC123", (22, 82), cv2.FONT_HERSHEY_SIMPLEX, 1.9, (20, 20, 20), 5, cv2.LINE_AA)
    return plate


def test_default_reader_follows_the_settings() -> None:
    reader = open_reader(OcrSettings())
    try:
        assert isinstance(reader, PlateReader)
        assert reader.name == OcrSettings().recognizer.backend
        assert reader.rectify.enabled
        assert "rectify" in reader.version
        assert reader.read(_plate()).text == "7ABC123"
    finally:
        reader.close()


def test_rectification_can_be_switched_off() -> None:
    settings = OcrSettings.model_validate({"recognizer": {"rectify": False}})
    reader = open_reader(settings, "ppocr-v4")
    try:
        assert reader.rectify == RectifyOptions(enabled=False, margin=settings.recognizer.rectify_margin)
        assert "rectify" not in reader.version
    finally:
        reader.close()


def test_unknown_recognizer_names_the_known_ones() -> None:
    with pytest.raises(UnknownRecognizerError, match=r"unknown recognizer 'nope'; known: .*ppocr-v4"):
        open_reader(OcrSettings(), "nope")
