"""Both dataset layouts of `alpr eval` parse, and broken folders or label files give clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from alpr_shared.datasets import DatasetError, crops_split
from alpr_shared.evaluate.datasets import PlateLabel, canonical_label, load_dataset, resolve


def _image(path: Path) -> None:
    cv2.imwrite(str(path), np.full((20, 40, 3), 127, np.uint8))


def _scene_folder(root: Path) -> Path:
    root.mkdir()
    _image(root / "one.jpg")
    (root / "one.txt").write_text("one.jpg\t10\t20\t30\t8\tAB-12 3\n")
    _image(root / "two.jpg")  # two plates, space-separated
    (root / "two.txt").write_text("two.jpg 1 2 3 4 XYZ1\ntwo.jpg 5 6 7 8 QRS2\n")
    _image(root / "unlabelled.jpg")
    return root


def test_scene_layout(tmp_path: Path) -> None:
    ds = load_dataset(_scene_folder(tmp_path / "scenes"))
    assert ds.layout == "scene"
    assert ds.split == "all"
    assert ds.skipped == 1
    assert [s.image.name for s in ds.samples] == ["one.jpg", "two.jpg"]
    assert ds.samples[0].labels == (PlateLabel("AB123", (10.0, 20.0, 40.0, 28.0)),)
    assert [label.text for label in ds.samples[1].labels] == ["XYZ1", "QRS2"]
    assert ds.samples[1].labels[1].box == (5.0, 6.0, 12.0, 14.0)


def test_crop_layout_and_limit(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / name)
    (tmp_path / "groundtruth.csv").write_text(
        "image,region,plate\na.png,ca,7ABC123\nb.png,ny,FGH-1234\nc.png,ny,X1\n"
    )
    ds = load_dataset(tmp_path)
    assert ds.layout == "crop"
    assert ds.split == "all"  # a user's own crop folder: all of it
    assert [(s.image.name, s.region, s.labels[0].text, s.labels[0].box) for s in ds.samples] == [
        ("a.png", "ca", "7ABC123", None),
        ("b.png", "ny", "FGH1234", None),
        ("c.png", "ny", "X1", None),
    ]
    assert len(load_dataset(tmp_path, limit=2).samples) == 2


def test_shared_crops_default_to_the_heldout_split() -> None:
    ds = load_dataset("plate-crops-us")
    _, heldout = crops_split()
    assert ds.split == "heldout"
    assert [s.image for s in ds.samples] == [c.image for c in heldout]
    assert len(load_dataset("plate-crops-us", split="all").samples) == 375


def test_shared_set_by_name() -> None:
    assert resolve("us").name == "us"
    assert len(load_dataset("eu", limit=3).samples) == 3


def test_canonical_label() -> None:
    assert canonical_label("ab-12 3") == "AB123"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("one.jpg\t10\t20\t30\n", r"one\.txt:1: expected `file x y w h PLATE`"),
        ("one.jpg\t10\tx\t30\t8\tAB1\n", r"one\.txt:1: x y w h must be numbers"),
        ("one.jpg\t10\t20\t0\t8\tAB1\n", r"one\.txt:1: the box has no area"),
        ("\n\n", r"one\.txt: empty label file"),
        ("one.jpg\t1\t2\t3\t4\tAB1\nmissing.jpg\t1\t2\t3\t4\tAB1\n", None),
    ],
)
def test_bad_scene_label_file(tmp_path: Path, content: str, message: str | None) -> None:
    _image(tmp_path / "one.jpg")
    (tmp_path / "one.txt").write_text(content)
    if message is None:  # a second line naming another image falls back to the label file's own image
        assert len(load_dataset(tmp_path).samples[0].labels) == 2
        return
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path)


def test_label_naming_a_missing_image(tmp_path: Path) -> None:
    (tmp_path / "ghost.txt").write_text("ghost.jpg\t1\t2\t3\t4\tAB1\n")
    with pytest.raises(DatasetError, match=r"ghost\.txt:1: image 'ghost\.jpg' does not exist"):
        load_dataset(tmp_path)


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"'.*nowhere' does not exist"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "file.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"is a file"):
        load_dataset(tmp_path / "file.jpg")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"no labels found; expected groundtruth\.csv"):
        load_dataset(empty)


def test_bad_crop_label_file(tmp_path: Path) -> None:
    (tmp_path / "groundtruth.csv").write_text("file,plate\na.png,AB1\n")
    with pytest.raises(DatasetError, match=r"groundtruth\.csv:1: expected the header"):
        load_dataset(tmp_path)


def test_split_on_a_scene_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"--split heldout applies to crop folders only"):
        load_dataset(_scene_folder(tmp_path / "scenes"), split="heldout")
