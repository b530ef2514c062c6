"""The crops' train / held-out split: deterministic, by whole states, disjoint, about a third held out."""

from __future__ import annotations

from pathlib import Path

import pytest

from alpr_shared.datasets import DatasetError, crops_split, read_crop_labels


def _crop_folder(tmp_path: Path, states: dict[str, int]) -> Path:
    lines = ["image,region,plate"]
    for state, count in states.items():
        for i in range(count):
            name = f"{state}{i}.png"
            (tmp_path / name).write_bytes(b"")
            lines.append(f"{name},{state},{state.upper()}{i:04d}")
    (tmp_path / "groundtruth.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_split_is_deterministic_disjoint_and_by_state(tmp_path: Path) -> None:
    folder = _crop_folder(tmp_path, {"ca": 9, "tx": 6, "ny": 5, "wa": 4, "or": 3, "nv": 3})
    train, heldout = crops_split(7, folder=folder)
    again_train, again_heldout = crops_split(7, folder=folder)
    assert (train, heldout) == (again_train, again_heldout)
    assert len(train) + len(heldout) == 30
    assert {c.region for c in train}.isdisjoint({c.region for c in heldout})
    assert len(heldout) >= 10  # at least a third, whole states only
    assert len(heldout) < 30 - 3  # never everything: the training side keeps states too
    assert {crops_split(seed, folder=folder)[1][0].region for seed in range(8)} != {heldout[0].region}


def test_real_crops_split_holds_out_about_a_third() -> None:
    train, heldout = crops_split()
    assert len(train) + len(heldout) == 375
    assert 120 <= len(heldout) <= 150
    assert {c.region for c in train}.isdisjoint({c.region for c in heldout})


def test_missing_label_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"groundtruth\.csv: no such label file"):
        read_crop_labels(tmp_path)


def test_bad_row_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "groundtruth.csv").write_text("image,region,plate\na.png,ca,ABC123\nb.png\n")
    with pytest.raises(DatasetError, match=r"groundtruth\.csv:3: expected"):
        read_crop_labels(tmp_path)


def test_missing_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "groundtruth.csv").write_text("image,region,plate\nnope.png,ca,ABC123\n")
    with pytest.raises(DatasetError, match=r"'nope\.png' does not exist"):
        read_crop_labels(tmp_path)
