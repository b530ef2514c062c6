"""Labelled folders `alpr eval` reads, in the two layouts of the OpenALPR benchmarks.

- Scene folder: `NAME.jpg` (or .jpeg/.png) with `NAME.txt`, one line per plate: `file x y w h PLATE`
  (tab- or space-separated; the box in pixels). Several lines = several plates on one photo.
- Crop folder: `groundtruth.csv` with `image,region,plate`; every image is one plate, already cut out.

A label's text is compared after `canonical_label` (upper case, spaces and dashes removed). Errors name
the file and the line, so a user can fix a broken label file without reading code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alpr_shared.datasets import (
    CROPS_FOLDER,
    CROPS_LABELS,
    DatasetError,
    crops_split,
    openalpr_benchmarks,
    read_crop_labels,
)

Layout = Literal["scene", "crop"]
Split = Literal["auto", "heldout", "train", "all"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

__all__ = ["Dataset", "DatasetError", "PlateLabel", "Sample", "canonical_label", "load_dataset", "resolve"]


@dataclass(frozen=True, slots=True)
class PlateLabel:
    text: str  # canonical (see `canonical_label`)
    box: tuple[float, float, float, float] | None = None  # x1 y1 x2 y2 in pixels; None for crops


@dataclass(frozen=True, slots=True)
class Sample:
    image: Path
    labels: tuple[PlateLabel, ...]
    region: str = ""  # a crop folder's region column (US state); informative only


@dataclass(frozen=True, slots=True)
class Dataset:
    path: Path
    layout: Layout
    samples: list[Sample]
    split: str  # what part of the folder this is: "all", "heldout" or "train"
    skipped: int = 0  # images in a scene folder without a label file


def canonical_label(text: str) -> str:
    """A label as reads are compared with it: upper case, spaces and dashes removed."""
    return "".join(ch for ch in text.upper() if ch not in " -\t")


def resolve(name: str | Path) -> Path:
    """A dataset argument: a folder path, or the name of a folder of the shared OpenALPR benchmarks
    (`us`, `eu`, `plate-crops-us`)."""
    path = Path(name)
    if path.exists():
        if not path.is_dir():
            raise DatasetError(f"{path} is a file; a dataset is a folder of labelled images")
        return path
    if len(path.parts) == 1:
        try:
            shared = openalpr_benchmarks() / path.name
        except FileNotFoundError:
            shared = None
        if shared is not None and shared.is_dir():
            return shared
    raise DatasetError(
        f"dataset {str(name)!r} does not exist (give a folder, or one of the shared sets: us, eu, {CROPS_FOLDER})"
    )


def detect_layout(folder: Path) -> Layout:
    if (folder / CROPS_LABELS).is_file():
        return "crop"
    if any(p.suffix == ".txt" for p in folder.iterdir()):
        return "scene"
    raise DatasetError(
        f"{folder}: no labels found; expected {CROPS_LABELS} (a crop folder) or NAME.txt label files "
        "beside the images (a scene folder: `file x y w h PLATE` per line)"
    )


def _parse_scene_line(label_file: Path, line_no: int, line: str) -> tuple[str, PlateLabel]:
    parts = line.split("\t") if "\t" in line else line.split()
    parts = [p.strip() for p in parts]
    if len(parts) < 6:
        raise DatasetError(f"{label_file}:{line_no}: expected `file x y w h PLATE`, got {line.strip()!r}")
    try:
        x, y, w, h = (float(v) for v in parts[1:5])
    except ValueError:
        raise DatasetError(
            f"{label_file}:{line_no}: x y w h must be numbers, got {' '.join(parts[1:5])!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise DatasetError(f"{label_file}:{line_no}: the box has no area (w={w:g}, h={h:g})")
    text = canonical_label("".join(parts[5:]))
    if not text:
        raise DatasetError(f"{label_file}:{line_no}: empty plate text")
    return parts[0], PlateLabel(text, (x, y, x + w, y + h))


def read_scene_folder(folder: Path) -> tuple[list[Sample], int]:
    """Every labelled image of a scene folder, sorted by name; also the count of unlabelled images."""
    by_image: dict[Path, list[PlateLabel]] = {}
    for label_file in sorted(folder.glob("*.txt")):
        try:
            text = label_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{label_file}: not a UTF-8 text label file ({exc.reason})") from None
        lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if not lines:
            raise DatasetError(f"{label_file}: empty label file (expected `file x y w h PLATE` lines)")
        for line_no, line in lines:
            name, label = _parse_scene_line(label_file, line_no, line)
            image = folder / name
            if not image.is_file():
                # Tolerate a label naming the image without its folder or with another suffix.
                candidates = [label_file.with_suffix(s) for s in IMAGE_SUFFIXES]
                found = next((c for c in candidates if c.is_file()), None)
                if found is None:
                    raise DatasetError(f"{label_file}:{line_no}: image {name!r} does not exist")
                image = found
            by_image.setdefault(image, []).append(label)
    images = {p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    skipped = len(images - set(by_image))
    samples = [Sample(image, tuple(labels)) for image, labels in sorted(by_image.items())]
    if not samples:
        raise DatasetError(f"{folder}: no labelled images")
    return samples, skipped


def load_dataset(name: str | Path, *, split: Split = "auto", limit: int | None = None) -> Dataset:
    """Parse a labelled folder. `split` picks part of the shared US crops (held out from training by
    default: `alpr_shared.datasets.crops_split`); `limit` keeps the first N samples."""
    folder = resolve(name)
    layout = detect_layout(folder)
    skipped = 0
    if layout == "scene":
        if split not in ("auto", "all"):
            raise DatasetError(f"--split {split} applies to crop folders only; {folder} is a scene folder")
        samples, skipped = read_scene_folder(folder)
        chosen = "all"
    else:
        chosen = split
        if split == "auto":
            chosen = "heldout" if folder.name == CROPS_FOLDER else "all"
        if chosen == "all":
            rows = read_crop_labels(folder)
        else:
            train, heldout = crops_split(folder=folder)
            rows = heldout if chosen == "heldout" else train
        samples = [
            Sample(row.image, (PlateLabel(canonical_label(row.plate)),), region=row.region) for row in rows
        ]
    if limit is not None:
        if limit < 1:
            raise DatasetError(f"--limit must be at least 1, got {limit}")
        samples = samples[:limit]
    return Dataset(folder, layout, samples, chosen, skipped)


def labels_of(samples: Sequence[Sample]) -> int:
    return sum(len(s.labels) for s in samples)
