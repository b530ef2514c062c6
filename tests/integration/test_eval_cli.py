"""`alpr eval` end to end with the real models, on tiny folders built from the shared photos in tmp:
a plate read right, a wrong read (a deliberately wrong label), a miss (a blank photo) and a photo with
two plates. The printed JSON must equal a direct computation from the per-image reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein

from alpr_detect.detector import read_bgr
from alpr_detect.models import ModelStore, default_models_dir, ensure_provisioned
from alpr_shared.datasets import openalpr_benchmarks
from alpr_shared.evaluate import cli
from alpr_shared.evaluate.datasets import load_dataset
from alpr_shared.evaluate.frame import FrameOptions
from alpr_shared.evaluate.metrics import ImageResult
from alpr_shared.evaluate.runner import run_dataset
from alpr_shared.settings import load_settings

DATA = openalpr_benchmarks()


@pytest.fixture(scope="module", autouse=True)
def _detector() -> None:
    ensure_provisioned(ModelStore(default_models_dir()), "plate-yolov8n")


def _label(name: str) -> list[str]:
    return (DATA / "eu" / name).with_suffix(".txt").read_text().split()


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    root = tmp_path / "scenes"
    root.mkdir()
    shutil.copy(DATA / "eu" / "eu10.jpg", root / "right.jpg")
    _, *box, plate = _label("eu10.jpg")
    (root / "right.txt").write_text("\t".join(["right.jpg", *box, plate]) + "\n")
    shutil.copy(DATA / "eu" / "eu11.jpg", root / "wrong.jpg")
    _, *box, plate = _label("eu11.jpg")
    (root / "wrong.txt").write_text("\t".join(["wrong.jpg", *box, plate[:-1] + "1"]) + "\n")
    cv2.imwrite(str(root / "blank.jpg"), np.full((480, 640, 3), 120, np.uint8))
    (root / "blank.txt").write_text("blank.jpg\t100\t100\t120\t30\tMISS123\n")
    left = read_bgr(str(DATA / "eu" / "eu3.jpg"))
    right = read_bgr(str(DATA / "eu" / "eu5.jpg"))
    height = max(left.shape[0], right.shape[0])
    pad = [cv2.copyMakeBorder(im, 0, height - im.shape[0], 0, 0, cv2.BORDER_CONSTANT) for im in (left, right)]
    cv2.imwrite(str(root / "two.jpg"), cv2.hconcat(pad))
    _, x, y, w, h, p1 = _label("eu3.jpg")
    _, x2, y2, w2, h2, p2 = _label("eu5.jpg")
    shifted = str(int(x2) + left.shape[1])
    (root / "two.txt").write_text(
        f"two.jpg\t{x}\t{y}\t{w}\t{h}\t{p1}\ntwo.jpg\t{shifted}\t{y2}\t{w2}\t{h2}\t{p2}\n"
    )
    return root


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def _direct(results: list[ImageResult]) -> dict[str, float | None]:
    """The issue's definitions, computed plainly from the reads."""
    labels = found = exact = correct = total = 0
    boxed = 0
    for r in results:
        texts = [p.text for p in r.reads if p.text]
        for label in r.labels:
            labels += 1
            total += len(label.text)
            if label.box is not None:
                boxed += 1
                found += any(_iou(label.box, b) >= 0.5 for b in r.boxes)
            if label.text in texts:
                exact += 1
                texts.remove(label.text)
                correct += len(label.text)
            elif texts:
                best = min(texts, key=lambda t: Levenshtein.distance(label.text, t))
                correct += max(0, len(label.text) - Levenshtein.distance(label.text, best))
    return {
        "images": len(results),
        "plate_recall": round(found / boxed, 4) if boxed else None,
        "exact_accuracy": round(exact / labels, 4),
        "char_accuracy": round(correct / total, 4),
    }


def _json_line(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out.strip().splitlines()
    result: dict[str, object] = json.loads(out[-1])
    return result


def test_scene_folder_metrics_equal_a_direct_computation(
    scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = run_dataset(load_dataset(scenes), load_settings(None), FrameOptions(), progress=False)
    results = [d.result for d in done]
    by_name = {Path(r.image).name: r for r in results}
    assert not any(p.text for p in by_name["blank.jpg"].reads)  # the miss
    assert by_name["wrong.jpg"].reads  # read, but not as labelled
    direct = _direct(results)
    assert (direct["exact_accuracy"] or 0.0) < 1.0

    report = tmp_path / "report"
    assert cli.main([str(scenes), "--json", "--quiet", "--report", str(report)]) == 0
    summary = _json_line(capsys)
    for key, value in direct.items():
        assert summary[key] == value, key
    assert summary["plates"] == 5
    assert isinstance(summary["ms_per_image"], float) and summary["ms_per_image"] > 0
    page = (report / "index.html").read_text()
    assert "MISS123" in page and "plate not detected" in page
    wrong_label = _label("eu11.jpg")[-1][:-1] + "1"
    assert wrong_label in page
    assert list((report / "crops").glob("*.jpg"))

    # a pool of two workers reads the same
    assert cli.main([str(scenes), "--json", "--quiet", "--workers", "2"]) == 0
    pooled = _json_line(capsys)
    for key in ("images", "plate_recall", "exact_accuracy", "char_accuracy", "top_confusions"):
        assert pooled[key] == summary[key], key


def test_crop_folder_skips_detection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crops = DATA / "plate-crops-us"
    rows = (crops / "groundtruth.csv").read_text().splitlines()[1:5]
    lines = ["image,region,plate"]
    for row in rows:
        image, region, plate = row.split(",")
        shutil.copy(crops / image, tmp_path / image)
        lines.append(f"{image},{region},{plate}")
    (tmp_path / "groundtruth.csv").write_text("\n".join(lines) + "\n")
    assert cli.main([str(tmp_path), "--json", "-q", "--region", "us"]) == 0
    summary = _json_line(capsys)
    assert summary["images"] == 4
    assert summary["plate_recall"] is None
    assert summary["detector"] == "none (crops)"
    done = run_dataset(
        load_dataset(tmp_path), load_settings(None), FrameOptions(regions=("us",)), progress=False
    )
    direct = _direct([d.result for d in done])
    assert summary["exact_accuracy"] == direct["exact_accuracy"]
    assert summary["char_accuracy"] == direct["char_accuracy"]


def test_clear_errors_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.txt").write_text("x.jpg 1 2\n")
    assert cli.main([str(tmp_path / "bad")]) == 2
    assert "x.txt:1: expected `file x y w h PLATE`" in capsys.readouterr().err
    assert cli.main(["us", "--region", "atlantis"]) == 2
    assert "unknown plate region 'atlantis'" in capsys.readouterr().err
    assert cli.main(["us", "--recognizer", "nope"]) == 2
    assert "unknown recognizer 'nope'; known:" in capsys.readouterr().err
    monkeypatch.setenv("ALPR_DETECT__MODELS_DIR", str(tmp_path / "no-models"))
    assert cli.main(["us", "--limit", "1", "-q"]) == 1
    assert "alpr models" in capsys.readouterr().err  # names the command that provisions the model


def test_min_exact_fails_a_low_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cv2.imwrite(str(tmp_path / "blank.jpg"), np.full((240, 320, 3), 90, np.uint8))
    (tmp_path / "blank.txt").write_text("blank.jpg\t10\t10\t100\t25\tABC123\n")
    assert cli.main([str(tmp_path), "-q", "--min-exact", "0.5"]) == 1
    assert "exact accuracy 0.0% is below --min-exact 50.0%" in capsys.readouterr().err
    assert cli.main([str(tmp_path), "-q", "--min-exact", "0"]) == 0
