"""The plate CRNN's input, output and CTC decoding as pure functions, and the training helpers."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from alpr_ocr.recognizer import (
    CRNN_CLASSES,
    CRNN_HEIGHT,
    CRNN_WIDTH,
    PLATE_ALPHABET,
    RecognizerError,
    RecognizerOptions,
    crnn_decode,
    crnn_input,
    open_recognizer,
)
from alpr_ocr.training import train


def _probs(sequence: str, *, confidence: float = 0.9) -> np.ndarray:
    """A (T, 37) softmax output whose argmax path is `sequence` (`_` = blank)."""
    probs = np.full((len(sequence), CRNN_CLASSES), (1 - confidence) / (CRNN_CLASSES - 1), np.float32)
    for t, ch in enumerate(sequence):
        probs[t, 0 if ch == "_" else PLATE_ALPHABET.index(ch) + 1] = confidence
    return probs


def test_ctc_collapses_repeats_and_keeps_doubled_letters_split_by_blanks() -> None:
    text, confidence, alternatives = crnn_decode(_probs("__AA_A_BB__7"))
    assert text == "AAB7"
    assert confidence == pytest.approx(0.9, abs=1e-6)
    assert [a[0].char for a in alternatives] == list("AAB7")
    assert all(len(a) <= 3 for a in alternatives)


def test_ctc_of_blanks_only_is_empty_with_zero_confidence() -> None:
    assert crnn_decode(_probs("_____")) == ("", 0.0, [])


def test_ctc_alternatives_rank_the_runner_up() -> None:
    probs = _probs("_0_")
    probs[1] = 0.0
    probs[1, PLATE_ALPHABET.index("0") + 1] = 0.6
    probs[1, PLATE_ALPHABET.index("O") + 1] = 0.35
    probs[1, 0] = 0.05
    text, _, alternatives = crnn_decode(probs, top_k=2)
    assert text == "0"
    assert [(c.char, round(c.confidence, 2)) for c in alternatives[0]] == [("0", 0.6), ("O", 0.35)]


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_input_is_one_standardised_grey_line(channels: int | None) -> None:
    rng = np.random.default_rng(0)
    shape = (37, 90) if channels is None else (37, 90, channels)
    crop = rng.integers(0, 255, shape, dtype=np.uint8)
    x = crnn_input(crop)
    assert x.shape == (1, CRNN_HEIGHT, CRNN_WIDTH) and x.dtype == np.float32
    assert abs(float(x.mean())) < 1e-3
    assert float(x.std()) == pytest.approx(1.0, rel=0.05)


def test_stacked_rows_are_laid_side_by_side_top_row_left() -> None:
    crop = np.full((60, 80), 200, np.uint8)
    crop[5:25, 10:70] = 20  # top row: dark
    crop[35:55, 10:70] = 120  # bottom row: grey
    x = crnn_input(crop, rows=2)[0]
    left, right = x[:, : CRNN_WIDTH // 2], x[:, CRNN_WIDTH // 2 :]
    assert left.min() < right.min(), "the darker top row is on the left"
    assert x.shape == (CRNN_HEIGHT, CRNN_WIDTH)


def test_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(RecognizerError, match="plate-crnn"):
        open_recognizer(RecognizerOptions(backend="tesseract"))


def test_labels_are_normalised_and_encoded_past_the_blank() -> None:
    assert train.normalise_label("ab-12 c") == "AB12C"
    assert train.encode("A0") == [1, PLATE_ALPHABET.index("0") + 1]
    assert train.levenshtein("ABC123", "AB123") == 1
    assert train.levenshtein("", "AB") == 2


def test_batches_are_a_function_of_the_seed() -> None:
    a = next(train.batches(3, 4))
    b = next(train.batches(3, 4))
    c = next(train.batches(4, 4))
    assert a[0].shape == (4, 1, CRNN_HEIGHT, CRNN_WIDTH)
    assert a[1] == b[1] and np.array_equal(a[0], b[0])
    assert a[1] != c[1]


def test_real_crops_are_augmented_not_relabelled() -> None:
    crop = train.RealCrop(np.full((50, 100, 3), 128, np.uint8), "ABC123")
    stream = train.batches(1, 8, [crop], real_share=1.0)
    _, labels = next(stream)
    assert labels == ["ABC123"] * 8
    out = train.augment_real(crop.image, random.Random(2))
    assert out.dtype == np.uint8 and out.ndim == 3


def test_manifest_entry_replaces_only_its_block(tmp_path: Path) -> None:
    manifest = tmp_path / "models.yaml"
    manifest.write_text("models:\n  other:\n    task: plate\n", encoding="utf-8")
    out = tmp_path / "run"
    out.mkdir()
    for version in ("1", "2"):
        (out / "manifest-entry.yaml").write_text(
            f"{train.MANIFEST_BEGIN}\n  plate-crnn:\n    version: {version}\n{train.MANIFEST_END}\n",
            encoding="utf-8",
        )
        train.install_manifest(out, manifest)
    text = manifest.read_text(encoding="utf-8")
    assert text.count("\n  plate-crnn:\n") == 1 and "version: 2" in text and "other:" in text


def test_model_shapes() -> None:
    torch = pytest.importorskip("torch", reason="torch (CPU) is a training-time tool: the `export` extra")
    from alpr_ocr.training.model import TIME_STEPS, PlateCRNN, parameter_count  # noqa: PLC0415 - needs torch

    model = PlateCRNN().eval()
    with torch.no_grad():
        out = model(torch.zeros(3, 1, CRNN_HEIGHT, CRNN_WIDTH))
    assert tuple(out.shape) == (3, TIME_STEPS, CRNN_CLASSES)
    assert 200_000 < parameter_count(model) < 1_000_000
