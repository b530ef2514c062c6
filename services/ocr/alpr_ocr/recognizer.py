"""Plate text recognition on ONNX Runtime: PaddleOCR PP-OCRv4 recognition decoded for plates (`Recognizer`,
backend `ppocr-v4`) or the project's own CRNN (`CrnnRecognizer`, backend `plate-crnn`, trained by
`alpr models train-ocr`; its pre- and post-processing at the end of this module are shared with training).

Owns: one ONNX Runtime session (opened by `Recognizer.open`, closed by `close`) and the per-crop strategies
(contrast normalisation, border trimming, two-row split, a second scale when the first read is weak).

The model ships inside the `rapidocr_onnxruntime` wheel; it is located through the installed package and
never downloaded. Its character set is Chinese + English (6 623 symbols); CTC decoding here folds it into
the plate alphabet: per time step, the probability of each plate character (upper and lower case summed),
of the CTC blank, and of "anything else" (a symbol that is not a plate character — state names, frames,
stickers). Time steps won by "anything else" are dropped instead of being forced onto a plate character.

Must never: import onnxruntime or load a model at import time, or see anything but a BGR/grey `uint8` crop.
"""

from __future__ import annotations

import importlib.util
import math
import string
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from alpr_shared.schemas import CharCandidate

PLATE_ALPHABET = string.ascii_uppercase + string.digits
MODEL_PACKAGE = "rapidocr_onnxruntime"
MODEL_FILE = "models/ch_PP-OCRv4_rec_infer.onnx"
INPUT_HEIGHT = 48  # PP-OCRv4 recognition is trained on 48-pixel-high lines
PPOCR_MODEL_NAME = "ppocr-v4"
# Recognisers by name: `RecognizerOptions.backend` (settings `ocr.recognizer.backend`) picks one.
ENSEMBLE_NAME = "ensemble"
BACKENDS: dict[str, str] = {
    "plate-crnn": "the project's CRNN trained on synthetic + US plates (alpr models train-ocr), ONNX Runtime",
    "ppocr-v4": "PaddleOCR PP-OCRv4 recognition (inside the rapidocr_onnxruntime wheel), plate-alphabet decoding",
    ENSEMBLE_NAME: "ppocr-v4 and plate-crnn both read every crop; the more confident read wins, and where both "
    "reads have the same length each character is chosen from the two models' averaged probabilities",
}

Image = npt.NDArray[np.uint8]


class RecognizerError(RuntimeError):
    """The recognition model could not be found or loaded."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One read of one crop: text over the plate alphabet, a confidence in [0, 1] and, per character
    position, the best candidates (best first; the first is the character of `text`)."""

    text: str
    confidence: float
    alternatives: list[list[CharCandidate]] = field(default_factory=list)
    strategy: str = "plain"

    @property
    def empty(self) -> bool:
        return not self.text


@dataclass(frozen=True, slots=True)
class RecognizerOptions:
    """How crops are read; the service builds this from `ocr.recognizer` settings."""

    intra_op_threads: int = 1
    # Alternatives kept per character position (best first), for format-guided correction downstream.
    top_k: int = 3
    # A character whose probability is below this is dropped from `alternatives` (noise).
    min_alternative: float = 0.01
    # Strategies tried in order; a later one is kept only if its confidence is higher.
    contrast: bool = True
    # Below this mean character confidence, the crop is read again at a second scale.
    weak_confidence: float = 0.95
    second_scale: float = 1.5
    # Crops whose width/height is below this are read as two rows (stacked plates).
    two_row_aspect: float = 1.3
    # Width of the network input relative to the crop's aspect: >1 stretches horizontally, giving
    # CTC more time steps (doubled letters such as `AAAC` survive; measured on plate-crops-us).
    width_stretch: float = 1.25
    max_input_width: int = 640
    # Which recogniser (a key of BACKENDS).
    backend: str = "ppocr-v4"
    # plate-crnn: crops narrower than this width/height are also read as two stacked rows.
    stacked_max_aspect: float = 1.8
    # plate-crnn: border (share of the width each side, half that above and below) added to a crop by
    # repeating its edge pixels: a character touching the crop's edge is otherwise dropped (chosen on
    # the training crops and rendered plates: +12/150 on tight synthetic crops, -4/150 on loose ones).
    edge_pad: float = 0.06


def model_path() -> Path:
    """The PP-OCRv4 recognition ONNX file inside the installed `rapidocr_onnxruntime` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RecognizerError(
            f"the OCR model ships inside the {MODEL_PACKAGE!r} package, which is not installed; "
            f"run `pip install {MODEL_PACKAGE}` (the project's dependencies include it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise RecognizerError(f"{MODEL_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


class _Alphabet:
    """Column indices of the plate alphabet in the model's output (upper and lower case)."""

    def __init__(self, characters: list[str]) -> None:
        # Output column 0 is the CTC blank; columns 1..n are the dictionary; the last one is a space.
        index = {ch: i + 1 for i, ch in enumerate(characters)}
        self.upper = np.array([index[ch] for ch in PLATE_ALPHABET], dtype=np.int64)
        lower: list[int] = []
        for ch in PLATE_ALPHABET:
            low = ch.lower()
            lower.append(index[low] if low != ch and low in index else -1)
        self.lower = np.array(lower, dtype=np.int64)


def ctc_decode(
    probs: npt.NDArray[np.float32],
    upper: npt.NDArray[np.int64],
    lower: npt.NDArray[np.int64],
    *,
    top_k: int = 3,
    min_alternative: float = 0.01,
) -> tuple[str, float, list[list[CharCandidate]]]:
    """Greedy CTC over (blank, other, plate alphabet) per time step of a (T, C) softmax output.

    Returns text, confidence (mean of the characters' probabilities, 0 for no text) and, per character,
    the top candidates over the plate alphabet (probabilities normalised within the alphabet at the
    character's most confident time step, scaled by that step's share of plate characters)."""
    plate = probs[:, upper].copy()
    has_lower = lower >= 0
    plate[:, has_lower] += probs[:, lower[has_lower]]
    blank = probs[:, 0]
    other = np.clip(1.0 - blank - plate.sum(axis=1), 0.0, 1.0)
    scores = np.concatenate([blank[:, None], other[:, None], plate], axis=1)
    best = scores.argmax(axis=1)
    text: list[str] = []
    confidences: list[float] = []
    alternatives: list[list[CharCandidate]] = []
    previous = -1
    run_best_step = -1
    for step, cls in enumerate(best.tolist()):
        if cls != previous:
            if cls >= 2:
                text.append(PLATE_ALPHABET[cls - 2])
                confidences.append(float(scores[step, cls]))
                alternatives.append([])
                run_best_step = step
            previous = cls
        elif cls >= 2 and scores[step, cls] > confidences[-1]:
            confidences[-1] = float(scores[step, cls])
            run_best_step = step
        if cls >= 2 and run_best_step == step:
            row = plate[step]
            order = np.argsort(-row)[:top_k]
            alternatives[-1] = [
                CharCandidate(PLATE_ALPHABET[int(i)], round(float(row[i]), 4))
                for i in order
                if row[i] >= min_alternative or int(i) == cls - 2
            ]
    confidence = float(np.mean(confidences)) if confidences else 0.0
    return "".join(text), confidence, alternatives


def to_bgr(crop: Image) -> Image:
    if crop.ndim == 2:
        return cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)  # type: ignore[return-value]
    if crop.shape[2] == 1:
        return cv2.cvtColor(crop[:, :, 0], cv2.COLOR_GRAY2BGR)  # type: ignore[return-value]
    if crop.shape[2] == 4:
        return cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)  # type: ignore[return-value]
    return crop


def normalise_contrast(crop: Image) -> Image:
    """Stretch the luminance to the full range (CLAHE): dim, hazy or back-lit plates."""
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(2, 4))
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)  # type: ignore[return-value]


def deskew(crop: Image, max_angle: float = 15.0) -> Image:
    """Rotate the plate so its dominant near-horizontal edges are level (Hough lines on the edges)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    edges = cv2.Canny(grey, 50, 150)
    h, w = grey.shape
    lines = cv2.HoughLinesP(
        edges, 1, np.pi / 180, threshold=max(10, w // 4), minLineLength=w // 2, maxLineGap=4
    )
    if lines is None:
        return crop
    angles: list[float] = []
    for x1, y1, x2, y2 in lines[:, 0, :]:
        if x2 == x1:
            continue
        angle = math.degrees(math.atan2(float(y2 - y1), float(x2 - x1)))
        if abs(angle) <= max_angle:
            angles.append(angle)
    if not angles:
        return crop
    angle = float(np.median(angles))
    if abs(angle) < 1.0:
        return crop
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(crop, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[return-value]


class Recognizer:
    """PP-OCRv4 recognition for plate crops. Not thread-safe: one per worker thread."""

    def __init__(self, session: Any, characters: list[str], options: RecognizerOptions) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._alphabet = _Alphabet(characters)
        self.options = options
        self.backend = "onnxruntime-cpu"

    @classmethod
    def open(cls, options: RecognizerOptions | None = None, path: Path | None = None) -> Recognizer:
        import onnxruntime as ort  # type: ignore[import-untyped]  # noqa: PLC0415 - heavy; only the worker needs it

        options = options or RecognizerOptions()
        if cls is Recognizer and options.backend != PPOCR_MODEL_NAME:
            return open_recognizer(options, path)
        path = path or model_path()
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise RecognizerError(f"cannot load the OCR model {path}: {exc}") from exc
        characters = session.get_modelmeta().custom_metadata_map.get("character", "").splitlines()
        if not characters:
            raise RecognizerError(f"{path} carries no character dictionary in its metadata")
        return cls(session, characters, options)

    def close(self) -> None:
        self._session = None

    # --- one pass -------------------------------------------------------------------------------------

    def _prepare(self, crop: Image, scale: float = 1.0) -> npt.NDArray[np.float32]:
        h, w = crop.shape[:2]
        ratio = w / max(1, h) * self.options.width_stretch * scale
        width = int(min(self.options.max_input_width, max(16, math.ceil(INPUT_HEIGHT * ratio))))
        resized = cv2.resize(crop, (width, INPUT_HEIGHT), interpolation=cv2.INTER_CUBIC)
        blob = resized.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        return blob[None]

    def _run(self, crop: Image, scale: float = 1.0) -> tuple[str, float, list[list[CharCandidate]]]:
        if self._session is None:
            raise RecognizerError("recognizer is closed")
        (probs,) = self._session.run(None, {self._input: self._prepare(crop, scale)})
        return ctc_decode(
            probs[0],
            self._alphabet.upper,
            self._alphabet.lower,
            top_k=self.options.top_k,
            min_alternative=self.options.min_alternative,
        )

    # --- strategies -----------------------------------------------------------------------------------

    def read(self, crop: Image) -> Reading:
        """Read one plate crop (BGR or grey `uint8`) with the configured strategies; the best wins."""
        if crop.size == 0 or min(crop.shape[:2]) < 4:
            return Reading("", 0.0, [], "too-small")
        crop = to_bgr(np.ascontiguousarray(crop))
        h, w = crop.shape[:2]
        if w / h < self.options.two_row_aspect:
            return self._read_two_rows(crop)
        best = Reading(*self._run(crop), strategy="plain")
        if best.confidence < self.options.weak_confidence and self.options.contrast:
            candidate = Reading(*self._run(normalise_contrast(crop)), strategy="contrast")
            best = _better(best, candidate)
        if best.confidence < self.options.weak_confidence:
            candidate = Reading(*self._run(crop, self.options.second_scale), strategy="scale")
            best = _better(best, candidate)
        return best

    def _read_two_rows(self, crop: Image) -> Reading:
        h = crop.shape[0]
        whole = Reading(*self._run(crop), strategy="plain")
        top = self._run(crop[: h // 2])
        bottom = self._run(crop[h // 2 :])
        parts = [p for p in (top, bottom) if p[0]]
        if not parts:
            return whole
        text = "".join(p[0] for p in parts)
        chars = sum(len(p[0]) for p in parts)
        confidence = sum(p[1] * len(p[0]) for p in parts) / chars
        rows = Reading(text, confidence, [a for p in parts for a in p[2]], strategy="two-rows")
        return _better(whole, rows)

    def read_timed(self, crop: Image) -> tuple[Reading, float]:
        start = time.perf_counter()
        reading = self.read(crop)
        return reading, (time.perf_counter() - start) * 1000.0


def _better(a: Reading, b: Reading) -> Reading:
    return b if b.confidence > a.confidence and b.text else a


# --- the project's own plate recogniser (CRNN + CTC, trained by `alpr models train-ocr`) --------------------
# Pure pre- and post-processing live here, so that training (alpr_ocr.training) and run time share exactly
# one definition of the network's input and of its decoding.

CRNN_MODEL_NAME = "plate-crnn"
CRNN_MODEL_FILE = "models/plate-crnn.onnx"  # inside this package: small (< 5 MB), checked by the manifest
CRNN_HEIGHT = 48
CRNN_WIDTH = 160
CRNN_CLASSES = 1 + len(PLATE_ALPHABET)  # CTC blank first, then A–Z 0–9
_CRNN_INDEX = np.arange(1, CRNN_CLASSES, dtype=np.int64)
_CRNN_NO_LOWER = np.full(len(PLATE_ALPHABET), -1, dtype=np.int64)


def to_grey(crop: Image) -> Image:
    if crop.ndim == 2:
        return crop
    if crop.shape[2] == 1:
        return crop[:, :, 0]
    if crop.shape[2] == 4:
        return cv2.cvtColor(crop, cv2.COLOR_BGRA2GRAY)  # type: ignore[return-value]
    return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)  # type: ignore[return-value]


def row_cut(grey: Image) -> int:
    """The row between the two text lines of a stacked plate: the least-inked row of the middle band.

    Ink is whatever differs most from the plate's background (the median level), so dark-on-light and
    light-on-dark plates are treated alike."""
    h = int(grey.shape[0])
    if h < 8:
        return h // 2
    g = grey.astype(np.float32)
    ink = np.abs(g - float(np.median(g)))
    profile = ink.mean(axis=1)
    k = max(1, h // 48)  # light smoothing: the gap between rows is only a few pixels
    smooth = np.convolve(profile, np.ones(2 * k + 1, np.float32) / (2 * k + 1), mode="same")
    lo, hi = int(h * 0.3), int(h * 0.7)
    return lo + int(np.argmin(smooth[lo:hi]))


def crnn_input(crop: Image, rows: int = 1) -> npt.NDArray[np.float32]:
    """The network input for one crop: (1, 48, 160) float32, grey, zero mean and unit variance.

    `rows=2` reads a stacked plate: the crop is cut at `row_cut` and the two rows are laid side by side
    (top row left), each stretched to half the width, so that the model reads one line top-row first."""
    grey = to_grey(crop)
    if rows == 2:
        cut = row_cut(grey)
        half = CRNN_WIDTH // 2
        top = cv2.resize(grey[: max(1, cut)], (half, CRNN_HEIGHT), interpolation=cv2.INTER_AREA)
        bottom = cv2.resize(grey[cut:], (half, CRNN_HEIGHT), interpolation=cv2.INTER_AREA)
        line = np.hstack([top, bottom])
    else:
        interp = cv2.INTER_AREA if grey.shape[0] > CRNN_HEIGHT else cv2.INTER_LINEAR
        line = cv2.resize(grey, (CRNN_WIDTH, CRNN_HEIGHT), interpolation=interp)
    x = line.astype(np.float32)
    x = (x - float(x.mean())) / max(float(x.std()), 8.0)
    return x[None]


def crnn_decode(
    probs: npt.NDArray[np.float32], *, top_k: int = 3, min_alternative: float = 0.01
) -> tuple[str, float, list[list[CharCandidate]]]:
    """Greedy CTC decoding of the CRNN's (T, 37) softmax output (blank, A–Z, 0–9)."""
    return ctc_decode(probs, _CRNN_INDEX, _CRNN_NO_LOWER, top_k=top_k, min_alternative=min_alternative)


def crnn_model_path() -> Path:
    """The trained CRNN shipped inside this package (see models.yaml, entry `plate-crnn`)."""
    path = Path(__file__).with_name("models") / "plate-crnn.onnx"
    if not path.is_file():
        raise RecognizerError(
            f"the trained plate recogniser {path} is missing; reinstall alpr-platform or rebuild it with "
            "`alpr models train-ocr --install`"
        )
    return path


class CrnnRecognizer(Recognizer):
    """The project's CRNN (`plate-crnn`, trained by `alpr models train-ocr`) on ONNX Runtime.

    One pass per crop; a crop narrower than `options.stacked_max_aspect` is also read as a stacked
    (two-row) plate — rows cut apart and laid side by side, as the model was trained — and the more
    confident read wins. Not thread-safe: one per worker thread."""

    def __init__(self, session: Any, options: RecognizerOptions, path: Path) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self.options = options
        self.backend = "onnxruntime-cpu"
        self.path = path
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)

    @classmethod
    def open(cls, options: RecognizerOptions | None = None, path: Path | None = None) -> CrnnRecognizer:
        import onnxruntime as ort  # noqa: PLC0415 - heavy; only the worker needs it

        options = options or RecognizerOptions(backend=CRNN_MODEL_NAME)
        path = path or crnn_model_path()
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise RecognizerError(f"cannot load the OCR model {path}: {exc}") from exc
        shape = session.get_inputs()[0].shape
        if list(shape[1:]) != [1, CRNN_HEIGHT, CRNN_WIDTH]:
            raise RecognizerError(f"{path} takes input {shape}, not (N, 1, {CRNN_HEIGHT}, {CRNN_WIDTH})")
        alphabet = session.get_modelmeta().custom_metadata_map.get("alphabet", PLATE_ALPHABET)
        if alphabet != PLATE_ALPHABET:
            raise RecognizerError(f"{path} was trained for the alphabet {alphabet!r}, not {PLATE_ALPHABET!r}")
        return cls(session, options, path)

    def close(self) -> None:
        self._session = None

    def probabilities(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(N, 1, 48, 160) inputs → (N, T, 37) probabilities."""
        if self._session is None:
            raise RecognizerError("recognizer is closed")
        (probs,) = self._session.run(None, {self._input: batch})
        return probs  # type: ignore[no-any-return]

    def read(self, crop: Image) -> Reading:
        if crop.size == 0 or min(crop.shape[:2]) < 4:
            return Reading("", 0.0, [], "too-small")
        crop = np.ascontiguousarray(crop)
        h, w = crop.shape[:2]
        line = crop
        if self.options.edge_pad > 0:
            px, py = int(w * self.options.edge_pad), int(h * self.options.edge_pad / 2)
            line = cv2.copyMakeBorder(crop, py, py, px, px, cv2.BORDER_REPLICATE)  # type: ignore[assignment]
        inputs = [crnn_input(line, rows=1)]
        stacked = w / h < self.options.stacked_max_aspect
        if stacked:
            inputs.append(crnn_input(crop, rows=2))
        probs = self.probabilities(np.stack(inputs))
        kw = {"top_k": self.options.top_k, "min_alternative": self.options.min_alternative}
        best = Reading(*crnn_decode(probs[0], **kw), strategy="plain")  # type: ignore[arg-type]
        if stacked:
            best = _better(best, Reading(*crnn_decode(probs[1], **kw), strategy="two-rows"))  # type: ignore[arg-type]
        return best


def open_recognizer(options: RecognizerOptions | None = None, path: Path | None = None) -> Recognizer:
    """The recogniser `options.backend` names (`ppocr-v4`, `plate-crnn` or `ensemble`; `path` is for the
    single-model backends)."""
    options = options or RecognizerOptions()
    if options.backend == ENSEMBLE_NAME:
        return EnsembleRecognizer.open(options)
    if options.backend == CRNN_MODEL_NAME:
        return CrnnRecognizer.open(options, path)
    if options.backend == PPOCR_MODEL_NAME:
        return Recognizer.open(options, path)
    raise RecognizerError(f"unknown recognizer backend {options.backend!r}; known: {', '.join(BACKENDS)}")


# --- both recognisers on every crop ------------------------------------------------------------------------


class EnsembleRecognizer(Recognizer):
    """PP-OCRv4 and the project's CRNN read every crop (`ensemble`); `combine` makes one read of the two.

    They fail on different plates (on the held-out crops each misses ~27 of 130, both only 12): PP-OCRv4
    reads distractor text and mixes O/0, the CRNN misreads small or unusual fonts. The CRNN costs ~3 ms a
    crop beside PP-OCRv4's ~12. Not thread-safe: one per worker thread."""

    def __init__(self, members: list[Recognizer], options: RecognizerOptions) -> None:
        self.members = members
        self.options = options
        self.backend = members[0].backend

    @classmethod
    def open(cls, options: RecognizerOptions | None = None, path: Path | None = None) -> EnsembleRecognizer:
        options = options or RecognizerOptions(backend=ENSEMBLE_NAME)
        members: list[Recognizer] = []
        try:
            for name in (PPOCR_MODEL_NAME, CRNN_MODEL_NAME):
                members.append(open_recognizer(replace(options, backend=name)))
        except BaseException:
            for member in members:
                member.close()
            raise
        return cls(members, options)

    @property
    def metadata(self) -> dict[str, str]:
        """The CRNN's provenance (PP-OCRv4's is its package version)."""
        return dict(getattr(self.members[1], "metadata", {}))

    @property
    def path(self) -> Path | None:
        found = getattr(self.members[1], "path", None)
        return found if isinstance(found, Path) else None

    def close(self) -> None:
        for member in self.members:
            member.close()

    def read(self, crop: Image) -> Reading:
        return combine([member.read(crop) for member in self.members], self.options.top_k)


def combine(reads: list[Reading], top_k: int = 3) -> Reading:
    """One read from several recognisers' reads of the same crop.

    Reads of the same length with per-character alternatives are fused position by position: each
    character's probability is the mean over the reads (0 where a read did not list it), the best one
    is taken, and the confidence is the mean of the chosen characters' probabilities. Otherwise the
    most confident non-empty read wins as it is."""
    usable = [r for r in reads if r.text]
    if not usable:
        return reads[0] if reads else Reading("", 0.0, [], "ensemble")
    best = max(usable, key=lambda r: r.confidence)
    n = len(best.text)
    aligned = [r for r in usable if len(r.text) == n and len(r.alternatives) == n]
    if len(aligned) < 2 or len(aligned) != len(usable):
        return Reading(best.text, best.confidence, best.alternatives, f"ensemble:{best.strategy}")
    text: list[str] = []
    alternatives: list[list[CharCandidate]] = []
    for i in range(n):
        scores: dict[str, float] = {}
        for r in aligned:
            for cand in r.alternatives[i]:
                scores[cand.char] = scores.get(cand.char, 0.0) + cand.confidence / len(aligned)
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])[: max(1, top_k)]
        text.append(ranked[0][0])
        alternatives.append([CharCandidate(c, p) for c, p in ranked])
    confidence = sum(a[0].confidence for a in alternatives) / n
    return Reading("".join(text), confidence, alternatives, "ensemble:fused")
