"""Finding the shared labelled data beside the checkout, or where $ALPR_DATA_DIR points."""

from __future__ import annotations

from pathlib import Path

import pytest

from alpr_shared import datasets


def test_explicit_data_dir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "openalpr-benchmarks").mkdir()
    monkeypatch.setenv("ALPR_DATA_DIR", str(tmp_path))
    assert datasets.openalpr_benchmarks() == tmp_path / "openalpr-benchmarks"


def test_bad_explicit_data_dir_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPR_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"\$ALPR_DATA_DIR="):
        datasets.data_root()


def test_found_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPR_DATA_DIR", raising=False)
    root = datasets.data_root()
    assert (root / "openalpr-benchmarks" / "us").is_dir()
