"""Where the labelled photos live: the `data/` folder of the `shared/` directory beside the checkout
(`../shared/data/openalpr-benchmarks/…`), read in place and never copied into the repository.

`$ALPR_DATA_DIR` names that `data/` folder explicitly; otherwise it is searched for upwards from the
working directory and from this package, so a clone anywhere under the same parent finds it.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

DATA_ENV_VAR = "ALPR_DATA_DIR"


def data_root() -> Path:
    """The shared `data/` folder. Raises `FileNotFoundError` saying how to point at it."""
    explicit = os.environ.get(DATA_ENV_VAR)
    if explicit:
        root = Path(explicit)
        if not root.is_dir():
            raise FileNotFoundError(f"${DATA_ENV_VAR}={explicit} is not a directory")
        return root
    cwd = Path.cwd().resolve()
    here = Path(__file__).resolve()
    for base in (cwd, *cwd.parents, *here.parents):
        candidate = base / "shared" / "data"
        if (candidate / "openalpr-benchmarks").is_dir():
            return candidate
    raise FileNotFoundError(
        "cannot find the labelled data (shared/data/openalpr-benchmarks beside the checkout); "
        f"set ${DATA_ENV_VAR} to the folder that holds openalpr-benchmarks/"
    )


def openalpr_benchmarks() -> Path:
    """`…/data/openalpr-benchmarks` (us/, eu/, plate-crops-us/)."""
    return data_root() / "openalpr-benchmarks"


# --- the crops' train / held-out split -------------------------------------------------------------
# Defined once here so that training (`alpr models train-ocr`) and evaluation (`alpr eval`) agree on which
# crops a trained model has never seen. Whole states are held out (a grouped split): a recogniser is then
# judged on plate designs it was not fine-tuned on, the closest this data comes to "photos never seen".

CROPS_FOLDER = "plate-crops-us"
CROPS_LABELS = "groundtruth.csv"
CROPS_SPLIT_SEED = 14
"""The default seed of `crops_split`; changing it changes every recorded held-out figure."""
CROPS_HELDOUT_FRACTION = 1 / 3
"""Share of the crops held out: ~125 of 375, enough that one crop is < 1 point of accuracy."""


@dataclass(frozen=True, slots=True)
class CropLabel:
    """One row of a crop folder's `groundtruth.csv`: the image, its region (US state code) and plate."""

    image: Path
    region: str
    plate: str


class DatasetError(ValueError):
    """A dataset folder or label file that cannot be read; the message says which file and why."""


def read_crop_labels(folder: Path) -> list[CropLabel]:
    """Parse `folder/groundtruth.csv` (`image,region,plate`), in file order.

    Raises `DatasetError` naming the file and line for a missing file, a wrong header, a short row or an
    image that does not exist.
    """
    labels_path = folder / CROPS_LABELS
    if not labels_path.is_file():
        raise DatasetError(f"{labels_path}: no such label file (a crop folder needs {CROPS_LABELS})")
    rows: list[CropLabel] = []
    with labels_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:3]] != ["image", "region", "plate"]:
            raise DatasetError(f"{labels_path}:1: expected the header 'image,region,plate', got {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 3 or not row[0].strip() or not row[2].strip():
                raise DatasetError(f"{labels_path}:{line_no}: expected 'image,region,plate', got {row!r}")
            image = folder / row[0].strip()
            if not image.is_file():
                raise DatasetError(f"{labels_path}:{line_no}: image {row[0].strip()!r} does not exist")
            rows.append(CropLabel(image=image, region=row[1].strip().lower(), plate=row[2].strip()))
    if not rows:
        raise DatasetError(f"{labels_path}: no labelled images")
    return rows


def crops_split(
    seed: int = CROPS_SPLIT_SEED,
    *,
    folder: Path | None = None,
    heldout_fraction: float = CROPS_HELDOUT_FRACTION,
) -> tuple[list[CropLabel], list[CropLabel]]:
    """Split the labelled US crops into `(train, heldout)` by state, deterministically from `seed`.

    The states are shuffled with `random.Random(seed)` and whole states are held out, in that order, until
    at least `heldout_fraction` of the crops are held out; every other state is training data. No state
    appears on both sides. Each side keeps the file's order. `folder` defaults to the shared
    `openalpr-benchmarks/plate-crops-us`.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must lie in (0, 1), got {heldout_fraction}")
    labels = read_crop_labels(folder if folder is not None else openalpr_benchmarks() / CROPS_FOLDER)
    states = sorted({label.region for label in labels})
    random.Random(seed).shuffle(states)  # noqa: S311 - a reproducible split, not a secret
    per_state = Counter(label.region for label in labels)
    wanted = heldout_fraction * len(labels)
    heldout_states: set[str] = set()
    held = 0
    for state in states:
        if held >= wanted:
            break
        heldout_states.add(state)
        held += per_state[state]
    train = [label for label in labels if label.region not in heldout_states]
    heldout = [label for label in labels if label.region in heldout_states]
    return train, heldout
