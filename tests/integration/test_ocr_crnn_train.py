"""`alpr models train-ocr` end to end, in miniature: a few steps from a seed, ONNX export, record and manifest
entry, and the same seed giving the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alpr_detect.models_cmd import main as models_main
from alpr_ocr.recognizer import CRNN_MODEL_NAME, CrnnRecognizer, RecognizerOptions, crnn_input
from alpr_ocr.training import train

pytest.importorskip("torch", reason="torch (CPU) is a training-time tool: the `export` extra")


def _run(out: Path) -> None:
    argv = [
        "train-ocr",
        "--seed",
        "5",
        "--steps",
        "2",
        "--finetune-steps",
        "1",
        "--batch",
        "4",
        "--validation",
        "8",
    ]
    assert models_main([*argv, "--no-eval", "--out", str(out)]) == 0


def test_tiny_training_run_exports_records_and_reproduces(tmp_path: Path) -> None:
    _run(tmp_path / "a")
    _run(tmp_path / "b")
    record = json.loads((tmp_path / "a" / "record.json").read_text())
    assert record["seed"] == 5
    assert record["steps"]["synthetic"] == 2 and record["steps"]["finetune"] == 1
    assert "training crops of plate-crops-us" in record["data"]
    assert record["cut_short"] is False
    entry = (tmp_path / "a" / "manifest-entry.yaml").read_text()
    assert f'sha256: "{record["sha256"]}"' in entry and "seed: 5" in entry

    x = np.stack([crnn_input(np.full((40, 90), v, np.uint8)) for v in (30, 200)])
    x[0, 0, 10:30, 20:140] = 3.0
    outputs = []
    for run in ("a", "b"):
        rec = CrnnRecognizer.open(
            RecognizerOptions(backend=CRNN_MODEL_NAME), tmp_path / run / "plate-crnn.onnx"
        )
        try:
            assert rec.metadata["seed"] == "5"
            outputs.append(rec.probabilities(x))
        finally:
            rec.close()
    assert outputs[0].shape == (2, 40, 37)
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        train.main(["--steps", "-1"])
    assert exc.value.code == 2
    assert "must be positive" in capsys.readouterr().err
