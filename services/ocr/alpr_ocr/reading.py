"""The one way a plate crop is read: the OCR worker (`worker.read_job`) and `alpr eval` both call this.

`open_reader` opens the recogniser a name chooses (None: the pipeline's default) and `PlateReader.read`
runs the per-crop steps in front of it. Keeping them here, not in the worker's message handling, is what
lets the evaluation score exactly what the pipeline does.

Must never: load a model at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from alpr_ocr.recognizer import MODEL_PACKAGE, Image, Reading, Recognizer, RecognizerOptions
from alpr_shared.settings import OcrSettings

DEFAULT_RECOGNIZER = "ppocr-v4"
RECOGNIZERS: dict[str, str] = {
    "ppocr-v4": "PaddleOCR PP-OCRv4 recognition (inside the rapidocr_onnxruntime wheel), plate-alphabet decoding",
}


def _package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


class UnknownRecognizerError(ValueError):
    """A recogniser name that is not known; the message lists the known ones."""


def recognizer_options(settings: OcrSettings) -> RecognizerOptions:
    r = settings.recognizer
    return RecognizerOptions(
        intra_op_threads=r.intra_op_threads,
        top_k=r.top_k,
        contrast=r.contrast,
        weak_confidence=r.weak_confidence,
        second_scale=r.second_scale,
        two_row_aspect=r.two_row_aspect,
        width_stretch=r.width_stretch,
    )


@dataclass
class PlateReader:
    """A recogniser and the steps every crop goes through before it."""

    recognizer: Recognizer
    name: str = DEFAULT_RECOGNIZER

    @property
    def backend(self) -> str:
        return self.recognizer.backend

    @property
    def version(self) -> str:
        """What was read with, for records such as ACCURACY.md: the name and the model's provenance."""
        if self.name == "ppocr-v4":
            return f"{self.name} ({MODEL_PACKAGE} {_package_version(MODEL_PACKAGE)})"
        return self.name

    def read(self, crop: Image) -> Reading:
        return self.recognizer.read(crop)

    def close(self) -> None:
        self.recognizer.close()


def open_reader(settings: OcrSettings, name: str | None = None) -> PlateReader:
    """Open the recogniser `name` (None: the default) with the worker's options from `settings`."""
    chosen = name or DEFAULT_RECOGNIZER
    if chosen not in RECOGNIZERS:
        known = ", ".join(sorted(RECOGNIZERS))
        raise UnknownRecognizerError(f"unknown recognizer {chosen!r}; known: {known}")
    return PlateReader(Recognizer.open(recognizer_options(settings)), chosen)
