"""The one way a plate crop is read: the OCR worker (`worker.read_job`) and `alpr eval` both call this.

`open_reader` opens the recogniser a name chooses (None: the pipeline's default) and `PlateReader.read`
runs the per-crop steps in front of it. Keeping them here, not in the worker's message handling, is what
lets the evaluation score exactly what the pipeline does.

Must never: load a model at import time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from alpr_ocr.recognizer import (
    BACKENDS,
    CRNN_MODEL_NAME,
    ENSEMBLE_NAME,
    MODEL_PACKAGE,
    PPOCR_MODEL_NAME,
    Image,
    Reading,
    Recognizer,
    RecognizerOptions,
    open_recognizer,
)
from alpr_ocr.rectify import RectifyOptions, rectify
from alpr_shared.settings import OcrSettings

# Recogniser names `alpr eval --recognizer` and `ocr.recognizer.backend` accept.
RECOGNIZERS: dict[str, str] = BACKENDS


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
        backend=r.backend,
        stacked_max_aspect=r.stacked_max_aspect,
    )


def rectify_options(settings: OcrSettings) -> RectifyOptions:
    r = settings.recognizer
    return RectifyOptions(enabled=r.rectify, margin=r.rectify_margin)


@dataclass
class PlateReader:
    """A recogniser and the steps every crop goes through before it (rectification)."""

    recognizer: Recognizer
    name: str = PPOCR_MODEL_NAME
    rectify: RectifyOptions = field(default_factory=lambda: RectifyOptions(enabled=False))

    @property
    def backend(self) -> str:
        return self.recognizer.backend

    @property
    def version(self) -> str:
        """What was read with, for records such as ACCURACY.md: the name and the model's provenance."""
        steps = " + rectify" if self.rectify.enabled else ""
        ppocr = f"{PPOCR_MODEL_NAME} ({MODEL_PACKAGE} {_package_version(MODEL_PACKAGE)})"
        if self.name == PPOCR_MODEL_NAME:
            return f"{ppocr}{steps}"
        meta: dict[str, str] = getattr(self.recognizer, "metadata", {})
        made = [f"{k} {meta[k]}" for k in ("seed", "steps", "date") if k in meta]
        path = getattr(self.recognizer, "path", None)
        if isinstance(path, Path) and path.is_file():
            made.insert(0, f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}")
        detail = f" ({', '.join(made)})" if made else ""
        if self.name == ENSEMBLE_NAME:
            return f"{ENSEMBLE_NAME} of {ppocr} and {CRNN_MODEL_NAME}{detail}{steps}"
        return f"{self.name}{detail}{steps}"

    def read(self, crop: Image) -> Reading:
        return self.recognizer.read(rectify(crop, self.rectify))

    def close(self) -> None:
        self.recognizer.close()


def open_reader(settings: OcrSettings, name: str | None = None) -> PlateReader:
    """Open the recogniser `name` (None: `ocr.recognizer.backend`) with the worker's options."""
    chosen = name or settings.recognizer.backend
    if chosen not in RECOGNIZERS:
        known = ", ".join(sorted(RECOGNIZERS))
        raise UnknownRecognizerError(f"unknown recognizer {chosen!r}; known: {known}")
    options = replace(recognizer_options(settings), backend=chosen)
    return PlateReader(open_recognizer(options), chosen, rectify_options(settings))
