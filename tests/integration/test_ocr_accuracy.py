"""Recognition alone on the 375 real crops of plate-crops-us (OpenALPR benchmarks): the accuracy floor.

Scored strictly (O and 0 differ), after upper-casing and dropping everything but A-Z and 0-9. Measured here:
298/375 = 79.5% (stock PP-OCRv4 on whole crops: 68.3%); the floor leaves ~2 points for CPU-library drift.
"""

from __future__ import annotations

import csv
import re

import cv2
import numpy as np
import pytest

from alpr_ocr.recognizer import Recognizer
from alpr_ocr.worker import recognizer_options
from alpr_shared.datasets import openalpr_benchmarks
from alpr_shared.settings import OcrSettings

pytestmark = pytest.mark.integration

CROPS = openalpr_benchmarks() / "plate-crops-us"
FLOOR = 0.77


def test_exact_match_on_plate_crops_us() -> None:
    with (CROPS / "groundtruth.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 375
    recognizer = Recognizer.open(recognizer_options(OcrSettings()))
    try:
        exact = 0
        for row in rows:
            raw = cv2.imread(str(CROPS / row["image"]))
            assert raw is not None, row["image"]
            crop = np.asarray(raw, dtype=np.uint8)
            reading = recognizer.read(crop)
            exact += reading.text == re.sub("[^A-Z0-9]", "", row["plate"].upper())
            # Alternatives line up with the text, best first, the text's character first.
            assert [alts[0].char for alts in reading.alternatives] == list(reading.text)
    finally:
        recognizer.close()
    assert exact / len(rows) >= FLOOR, f"exact {exact}/{len(rows)}"
