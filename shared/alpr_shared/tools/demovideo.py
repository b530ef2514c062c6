"""The demo video: labelled car photos shown one after another with a slow pan and zoom, so that plates
move like cars passing a camera. Tests, benchmarks, `alpr run` and the README use it, because no traffic
video is available offline.

The photos are read in place from the shared OpenALPR benchmark set (`alpr_shared.datasets`) and never
copied into the repository; the video is generated on demand, encoded by FFmpeg through PyAV (H.264 when
the build has libx264, else MPEG-4 part 2) and cached beside the output by its parameters. This module
draws nothing but the photos: no annotation, no text burnt in.

Which photos: `READABLE` lists, per data set, the photos that the current pipeline reads exactly. They
were chosen by `alpr demo-video --rank` (`rank_photos`): each photo's demo segment is rendered, the plate
detector runs on three of its frames (start, middle, end of the pan) and the plate recogniser reads the
detected box nearest the labelled one; a photo is kept when all three reads equal the label, the label is
at least 4 characters, and the plate is at least `MIN_PLATE_HEIGHT_PX` high on screen. Photos whose
reads differ between frames are left out so that the demo measures the system, not the model's weak spots
(`alpr eval` measures those).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import av
import cv2
import numpy as np
import numpy.typing as npt

from alpr_shared.datasets import openalpr_benchmarks

Dataset = Literal["us", "eu"]
Image = npt.NDArray[np.uint8]
_T = TypeVar("_T")

# Bump when the rendering changes, so cached videos made by an older version are regenerated.
RENDER_VERSION = 4
# Dark frames between two photos: the car has left the view, so the tracker cannot join two cars' tracks.
# Longer than track's time bound on a lost track (track.bytetrack.lost_track_seconds, 1 s), so the old
# track has ended before the next car appears, however few frames detect processes.
GAP_SECONDS = 1.5
# Zoom over one photo, as fractions of the widest window of the output's aspect: starting below 1 leaves
# room to pan even when the photo has the output's aspect.
ZOOM_START = 0.9
ZOOM_END = 0.7
# Horizontal travel of the plate across the frame during one photo, as a fraction of the view's width.
PAN_TRAVEL = 0.4
# The smallest plate height on screen (pixels at 720 p) that the ranking accepts: smaller reads are luck.
MIN_PLATE_HEIGHT_PX = 18

# Photos the current pipeline reads exactly on every ranked frame (see the module docstring), in the
# order `alpr demo-video --rank` printed them (typical plate sizes first). Regenerate with that command
# after a model or rendering change.
READABLE: dict[str, tuple[str, ...]] = {
    "us": (
        "wts-lg-000011.jpg",
        "wts-lg-000028.jpg",
        "car18.jpg",
        "car12.jpg",
        "wts-lg-000017.jpg",
        "car9-4.jpg",
        "wts-lg-000027.jpg",
        "us1.jpg",
        "car6.jpg",
        "wts-lg-000063.jpg",
        "car3.jpg",
        "wts-lg-000020.jpg",
        "car17.jpg",
        "316b64c0-55bf-4079-a1c0-d93f461a576f.jpg",
        "wts-lg-000042.jpg",
        "wts-lg-000010.jpg",
        "car9-5.jpg",
        "wts-lg-000056.jpg",
        "wts-lg-000060.jpg",
        "wts-lg-000016.jpg",
        "wts-lg-000040.jpg",
        "car9-7.jpg",
        "car2.jpg",
        "car14.jpg",
        "car9-0.jpg",
        "car13.jpg",
        "wts-lg-000039.jpg",
        "wts-lg-000045.jpg",
        "wts-lg-000051.jpg",
        "wts-lg-000055.jpg",
        "car8.jpg",
        "wts-lg-000029.jpg",
        "wts-lg-000031.jpg",
        "wts-lg-000035.jpg",
        "wts-lg-000059.jpg",
        "wts-lg-000038.jpg",
        "e73fd200-7ba4-4725-9d1d-2ec710864df6.jpg",
        "wts-lg-000021.jpg",
        "wts-lg-000043.jpg",
        "us3.jpg",
        "car9.jpg",
        "car11.jpg",
        "wts-lg-000022.jpg",
        "wts-lg-000033.jpg",
        "car9-1.jpg",
        "wts-lg-000032.jpg",
        "wts-lg-000036.jpg",
        "wts-lg-000067.jpg",
        "car20.jpg",
        "car9-2.jpg",
        "wts-lg-000046.jpg",
        "wts-lg-000025.jpg",
        "wts-lg-000049.jpg",
        "wts-lg-000061.jpg",
        "d4f79480-366a-40b6-ab2c-328bcba705b2.jpg",
        "f0a3b8c0-198a-471b-9ca9-345c3dd28073.jpg",
        "wts-lg-000053.jpg",
        "0b86cecf-67d1-4fc0-87c9-b36b0ee228bb.jpg",
        "4be2025c-09f7-4bb0-b1bd-8e8633e6dec1.jpg",
        "wts-lg-000034.jpg",
        "22e54a62-57a8-4a0a-88c1-4b9758f67651.jpg",
        "cfaa9dd2-a388-4e92-bb3a-ae65c28d8139.jpg",
        "us10.jpg",
        "us7.jpg",
        "car19.jpg",
        "us8.jpg",
    ),
    "eu": (
        "test_049.jpg",
        "test_081.jpg",
        "test_016.jpg",
        "test_014.jpg",
        "test_022.jpg",
        "test_041.jpg",
        "test_087.jpg",
        "test_095.jpg",
        "test_031.jpg",
        "test_082.jpg",
        "test_018.jpg",
        "test_023.jpg",
        "test_048.jpg",
        "test_063.jpg",
        "test_064.jpg",
        "test_072.jpg",
        "test_061.jpg",
        "test_020.jpg",
        "test_073.jpg",
        "test_032.jpg",
        "test_080.jpg",
        "test_089.jpg",
        "test_004.jpg",
        "test_005.jpg",
        "test_019.jpg",
        "test_055.jpg",
        "test_093.jpg",
        "test_068.jpg",
        "test_086.jpg",
        "test_077.jpg",
        "test_079.jpg",
        "test_094.jpg",
        "test_017.jpg",
        "test_028.jpg",
        "test_092.jpg",
        "eu9.jpg",
        "test_015.jpg",
        "test_053.jpg",
        "test_007.jpg",
        "test_067.jpg",
        "eu6.jpg",
        "test_054.jpg",
        "test_057.jpg",
        "test_085.jpg",
        "test_002.jpg",
        "test_012.jpg",
        "test_044.jpg",
        "test_021.jpg",
        "test_058.jpg",
        "test_078.jpg",
        "test_076.jpg",
        "eu8.jpg",
        "test_030.jpg",
        "test_069.jpg",
        "eu11.jpg",
        "test_066.jpg",
        "eu1.jpg",
        "test_026.jpg",
        "test_062.jpg",
        "test_046.jpg",
        "test_011.jpg",
        "test_074.jpg",
        "eu2.jpg",
        "test_043.jpg",
        "test_091.jpg",
        "eu3.jpg",
        "test_084.jpg",
        "test_097.jpg",
        "test_083.jpg",
        "test_009.jpg",
        "test_052.jpg",
        "eu7.jpg",
        "test_035.jpg",
        "test_010.jpg",
        "eu5.jpg",
        "test_034.jpg",
        "test_037.jpg",
        "test_039.jpg",
        "eu10.jpg",
    ),
}


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    plate: str
    box: tuple[int, int, int, int]  # x, y, w, h in photo pixels


@dataclass
class DemoVideo:
    path: Path
    plates: list[str]  # one per photo, in order of appearance
    segments: list[tuple[float, float]]  # (start, end) in seconds of each photo's appearance
    fps: int
    size: tuple[int, int]  # width, height
    codec: str
    frames: int


def load_photo_labels(dataset: str) -> list[LabelledPhoto]:
    """Every labelled photo of `dataset` (`us` or `eu`), sorted by file name."""
    if dataset not in ("us", "eu"):
        raise ValueError(f"unknown dataset {dataset!r}: expected 'us' or 'eu'")
    folder = openalpr_benchmarks() / dataset
    photos: list[LabelledPhoto] = []
    for label in sorted(folder.glob("*.txt")):
        lines = [ln for ln in label.read_text().splitlines() if ln.strip()]
        if len(lines) != 1:
            continue  # several plates in one photo: the label would not say which one is read
        parts = lines[0].split("\t")
        if len(parts) < 6:
            continue
        x, y, w, h = (int(v) for v in parts[1:5])
        photos.append(LabelledPhoto(folder / parts[0], parts[5].strip().upper(), (x, y, w, h)))
    return photos


def _first_per_plate(items: Sequence[_T], plate: Callable[[_T], str]) -> list[_T]:
    seen: set[str] = set()
    out: list[_T] = []
    for item in items:
        if plate(item) not in seen:
            seen.add(plate(item))
            out.append(item)
    return out


def choose_photos(dataset: str, count: int, seed: int = 0) -> list[LabelledPhoto]:
    """`count` photos of `dataset`: the readable ones first (in `READABLE` order, shuffled when `seed` is
    not 0), then, only if more are asked for than are known readable, the others by file name."""
    if count < 1:
        raise ValueError("count must be at least 1")
    photos = {p.path.name: p for p in load_photo_labels(dataset)}
    readable = [photos[name] for name in READABLE.get(dataset, ()) if name in photos]
    if seed:
        random.Random(seed).shuffle(readable)  # noqa: S311 - a demo's order, not a secret
    rest = [p for name, p in sorted(photos.items()) if p not in readable]
    # One photo per plate text: the same car twice would be one vehicle to the events dedup.
    unique = _first_per_plate(readable + rest, lambda p: p.plate)
    chosen = unique[:count]
    if len(chosen) < count:
        raise ValueError(f"dataset {dataset!r} has only {len(chosen)} labelled single-plate photos")
    return chosen


def _view_windows(
    photo: LabelledPhoto, shape: tuple[int, int], size: tuple[int, int], frames: int, reverse: bool = False
) -> Iterator[tuple[float, float, float, float]]:
    """The photo window (x0, y0, w, h) of each frame: the output's aspect, zooming from the widest such
    window's `ZOOM_START` to `ZOOM_END` while the plate travels `PAN_TRAVEL` of the view from left to right."""
    ph, pw = shape
    out_w, out_h = size
    aspect = out_w / out_h
    full_w, full_h = (ph * aspect, float(ph)) if pw / ph > aspect else (float(pw), pw / aspect)
    x, y, w, h = photo.box
    cx, cy = x + w / 2, y + h / 2
    for i in range(frames):
        t = i / max(1, frames - 1)
        if reverse:  # the same views backwards: zooming out while the plate travels right to left
            t = 1.0 - t
        zoom = ZOOM_START - (ZOOM_START - ZOOM_END) * t
        ww, wh = full_w * zoom, full_h * zoom
        # The plate sits (PAN_TRAVEL/2) left of the view's centre at t=0 and as far right at t=1.
        wx = cx - ww / 2 + ww * PAN_TRAVEL * (0.5 - t)
        wy = cy - wh / 2
        wx = min(max(wx, 0.0), pw - ww)
        wy = min(max(wy, 0.0), ph - wh)
        yield wx, wy, ww, wh


def render_photo(
    photo: LabelledPhoto, image: Image, size: tuple[int, int], frames: int, reverse: bool = False
) -> Iterator[Image]:
    """The frames of one photo's segment (BGR, `size` = width, height)."""
    out_w, out_h = size
    for wx, wy, ww, wh in _view_windows(photo, image.shape[:2], size, frames, reverse):
        # An affine warp samples the window at sub-pixel positions, so the pan is smooth, not stepped.
        sx, sy = out_w / ww, out_h / wh
        matrix = np.array([[sx, 0.0, -wx * sx], [0.0, sy, -wy * sy]], dtype=np.float64)
        # Bilinear (warpAffine has no area filter; INTER_AREA would silently mean the same).
        yield np.asarray(
            cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR), dtype=np.uint8
        )


def plate_box_in_frame(
    photo: LabelledPhoto,
    shape: tuple[int, int],
    size: tuple[int, int],
    frames: int,
    index: int,
    *,
    reverse: bool = False,
) -> tuple[float, float, float, float]:
    """Where the labelled plate is (x1, y1, x2, y2, output pixels) in frame `index` of its segment."""
    wx, wy, ww, wh = list(_view_windows(photo, shape, size, frames, reverse))[index]
    sx, sy = size[0] / ww, size[1] / wh
    x, y, w, h = photo.box
    return (x - wx) * sx, (y - wy) * sy, (x + w - wx) * sx, (y + h - wy) * sy


def _pan_direction(
    photo: LabelledPhoto,
    shape: tuple[int, int],
    size: tuple[int, int],
    frames: int,
    previous_end: tuple[float, float, float, float] | None,
) -> bool:
    """Whether to play this photo's pan backwards: so that its plate first appears as far as possible from
    where the previous car's plate was last seen. A tracker that still holds the previous track (its lost
    buffer outlasts the gap between cars) then cannot take the new plate for the old one."""
    if previous_end is None:
        return False
    px, py = (previous_end[0] + previous_end[2]) / 2, (previous_end[1] + previous_end[3]) / 2

    def distance(reverse: bool) -> float:
        box = plate_box_in_frame(photo, shape, size, frames, 0, reverse=reverse)
        return math.hypot((box[0] + box[2]) / 2 - px, (box[1] + box[3]) / 2 - py)

    return distance(True) > distance(False)


def _params(
    *, dataset: str, count: int, seconds: float, fps: int, size: tuple[int, int], seed: int
) -> dict[str, Any]:
    return {
        "render_version": RENDER_VERSION,
        "dataset": dataset,
        "count": count,
        "seconds_per_photo": seconds,
        "fps": fps,
        "size": list(size),
        "seed": seed,
        "readable": list(READABLE.get(dataset, ())),
    }


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _cached(out: Path, params: dict[str, Any]) -> DemoVideo | None:
    meta_path = _sidecar(out)
    if not (out.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("params") != params or meta.get("bytes") != out.stat().st_size:
        return None
    return DemoVideo(
        path=out,
        plates=list(meta["plates"]),
        segments=[(float(a), float(b)) for a, b in meta["segments"]],
        fps=int(meta["fps"]),
        size=(int(meta["size"][0]), int(meta["size"][1])),
        codec=str(meta["codec"]),
        frames=int(meta["frames"]),
    )


def _open_stream(container: Any, fps: int, size: tuple[int, int]) -> tuple[Any, str]:
    """An H.264 stream if this FFmpeg build has libx264, else MPEG-4 part 2 (every build has it)."""
    for codec, options in (("libx264", {"crf": "20", "preset": "veryfast"}), ("mpeg4", {"qscale": "3"})):
        try:
            stream = container.add_stream(codec, rate=fps, options=options)
        except (av.error.FFmpegError, ValueError):  # codec not in this build
            continue
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        return stream, codec
    raise RuntimeError("this FFmpeg build has neither libx264 nor mpeg4 to encode the demo video")


def make_demo_video(
    out: Path,
    *,
    dataset: str = "us",
    count: int = 8,
    seconds_per_photo: float = 2.0,
    fps: int = 15,
    size: tuple[int, int] = (1280, 720),
    seed: int = 0,
) -> DemoVideo:
    """Write (or reuse, when `out` was made with the same parameters) the demo video and describe it."""
    if seconds_per_photo <= 0 or fps <= 0:
        raise ValueError("seconds_per_photo and fps must be positive")
    if size[0] % 2 or size[1] % 2 or min(size) < 64:
        raise ValueError(f"size {size} must be even and at least 64 px on each side (yuv420p)")
    out = Path(out)
    params = _params(dataset=dataset, count=count, seconds=seconds_per_photo, fps=fps, size=size, seed=seed)
    cached = _cached(out, params)
    if cached is not None:
        return cached
    photos = choose_photos(dataset, count, seed)
    per_photo = max(2, round(seconds_per_photo * fps))
    gap = round(GAP_SECONDS * fps)
    blank = np.full((size[1], size[0], 3), 24, dtype=np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp{out.suffix}")
    segments: list[tuple[float, float]] = []
    reversed_pans: list[bool] = []
    frame_index = 0
    try:
        with av.open(str(tmp), mode="w") as container:
            stream, codec = _open_stream(container, fps, size)

            def write(frame: Image) -> None:
                nonlocal frame_index
                video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
                video_frame.pts = frame_index
                container.mux(stream.encode(video_frame))
                frame_index += 1

            previous_end: tuple[float, float, float, float] | None = None
            for n, photo in enumerate(photos):
                raw = cv2.imread(str(photo.path), cv2.IMREAD_COLOR)
                if raw is None:
                    raise ValueError(f"cannot read photo {photo.path}")
                image = np.asarray(raw, dtype=np.uint8)
                reverse = _pan_direction(photo, image.shape[:2], size, per_photo, previous_end)
                reversed_pans.append(reverse)
                previous_end = plate_box_in_frame(
                    photo, image.shape[:2], size, per_photo, per_photo - 1, reverse=reverse
                )
                if n:
                    for _ in range(gap):
                        write(blank)
                start = frame_index / fps
                for frame in render_photo(photo, image, size, per_photo, reverse):
                    write(frame)
                segments.append((start, frame_index / fps))
            container.mux(stream.encode(None))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    video = DemoVideo(
        path=out,
        plates=[p.plate for p in photos],
        segments=segments,
        fps=fps,
        size=size,
        codec=codec,
        frames=frame_index,
    )
    meta = {**asdict(video), "path": str(out), "params": params, "bytes": out.stat().st_size}
    meta["photos"] = [p.path.name for p in photos]
    meta["reversed_pans"] = reversed_pans
    _sidecar(out).write_text(json.dumps(meta, indent=1))
    return video


def default_cache_dir() -> Path:
    """Where `cached_demo_video` keeps its videos: `$XDG_CACHE_HOME/alpr/demo` (~/.cache/alpr/demo)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alpr" / "demo"


def cached_demo_video(
    cache_dir: Path | None = None,
    *,
    dataset: str = "us",
    count: int = 8,
    seconds_per_photo: float = 2.0,
    fps: int = 15,
    size: tuple[int, int] = (1280, 720),
    seed: int = 0,
) -> DemoVideo:
    """`make_demo_video` into `cache_dir` (default `default_cache_dir()`), one file per parameter set
    (`demo-<dataset>-<digest>.mp4`), so callers that just need "the demo video" share one encode."""
    params = _params(dataset=dataset, count=count, seconds=seconds_per_photo, fps=fps, size=size, seed=seed)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    folder = default_cache_dir() if cache_dir is None else cache_dir
    return make_demo_video(
        folder / f"demo-{dataset}-{digest}.mp4",
        dataset=dataset,
        count=count,
        seconds_per_photo=seconds_per_photo,
        fps=fps,
        size=size,
        seed=seed,
    )


# --- ranking (development tool: needs the detect and OCR services installed and the model provisioned) ---


def rank_photos(
    dataset: str, size: tuple[int, int] = (1280, 720), fps: int = 15, seconds: float = 2.0
) -> list[tuple[LabelledPhoto, int, float]]:
    """For each photo: how many of three segment frames read exactly, and the smallest on-screen plate
    height. Imports the detector and recogniser lazily (they live in the services)."""
    from contextlib import ExitStack  # noqa: PLC0415 - tool-only imports

    from alpr_detect.build import build_pipeline, model_store  # noqa: PLC0415
    from alpr_detect.models import ensure_provisioned  # noqa: PLC0415
    from alpr_ocr.recognizer import Recognizer  # noqa: PLC0415
    from alpr_ocr.shots import crop_plate  # noqa: PLC0415
    from alpr_ocr.worker import recognizer_options  # noqa: PLC0415
    from alpr_shared.schemas import Box  # noqa: PLC0415
    from alpr_shared.settings import DetectSettings, OcrSettings  # noqa: PLC0415

    detect_settings = DetectSettings(providers=["CPUExecutionProvider"])
    ocr_settings = OcrSettings()
    store = model_store(detect_settings)
    ensure_provisioned(store, detect_settings.plate_model)
    frames = max(2, round(seconds * fps))
    picks = [0, frames // 2, frames - 1]
    results: list[tuple[LabelledPhoto, int, float]] = []
    with ExitStack() as stack:
        pipeline = build_pipeline(detect_settings, store, stack)
        recognizer = Recognizer.open(recognizer_options(ocr_settings))
        stack.callback(recognizer.close)
        for photo in load_photo_labels(dataset):
            raw = cv2.imread(str(photo.path), cv2.IMREAD_COLOR)
            if raw is None:
                continue
            image = np.asarray(raw, dtype=np.uint8)
            rendered = list(render_photo(photo, image, size, frames))
            exact = 0
            min_height = float("inf")
            for index in picks:
                truth = plate_box_in_frame(photo, image.shape[:2], size, frames, index)
                min_height = min(min_height, (truth[3] - truth[1]) * 720 / size[1])
                found = pipeline.detect([rendered[index]])[0]
                if not len(found):
                    continue
                centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
                tc = np.array([(truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2])
                best = int(np.argmin(np.linalg.norm(centres - tc, axis=1)))
                box = Box(*(float(v) for v in found.boxes[best]))
                crop = crop_plate(rendered[index], box, ocr_settings.shots.crop_margin)
                if crop is not None and recognizer.read(crop).text == photo.plate:
                    exact += 1
            results.append((photo, exact, min_height))
    return results


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="alpr demo-video",
        description="Generate the demo video from the shared labelled car photos (cached by parameters).",
    )
    parser.add_argument("out", type=Path, nargs="?", help="output file, e.g. demo.mp4")
    parser.add_argument("--dataset", choices=["us", "eu"], default="us", help="photo set (default us)")
    parser.add_argument("--count", type=int, default=8, help="number of cars (default 8)")
    parser.add_argument("--seconds-per-photo", type=float, default=2.0, help="default 2.0")
    parser.add_argument("--fps", type=int, default=15, help="default 15")
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT (default 1280x720)")
    parser.add_argument("--seed", type=int, default=0, help="0 = the fixed order; other values shuffle")
    parser.add_argument(
        "--rank", action="store_true", help="run detector + OCR on every photo and print which read exactly"
    )
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected WIDTHxHEIGHT")
    if args.rank:
        ranked = rank_photos(args.dataset, (width, height), args.fps, args.seconds_per_photo)
        keep = [r for r in ranked if r[1] == 3 and len(r[0].plate) >= 4 and r[2] >= MIN_PLATE_HEIGHT_PX]
        # Typical traffic-camera plates first (about 80 px high at 720 p), one photo per plate text.
        keep.sort(key=lambda r: (abs(math.log(r[2] / 80.0)), r[0].path.name))
        keep = _first_per_plate(keep, lambda r: r[0].plate)
        for photo, exact, height_px in ranked:
            print(f"{photo.path.name}\t{photo.plate}\texact={exact}/3\tplate_h={height_px:.0f}px")
        print(f"readable: {len(keep)} of {len(ranked)}")
        print(repr(tuple(r[0].path.name for r in keep)))
        return 0
    if args.out is None:
        parser.error("OUT is required (unless --rank)")
    try:
        video = make_demo_video(
            args.out,
            dataset=args.dataset,
            count=args.count,
            seconds_per_photo=args.seconds_per_photo,
            fps=args.fps,
            size=(width, height),
            seed=args.seed,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"alpr demo-video: {exc}", file=sys.stderr)
        return 2
    duration = video.frames / video.fps
    print(
        f"{video.path}: {len(video.plates)} cars, {duration:.1f} s, {video.size[0]}x{video.size[1]} "
        f"@ {video.fps} fps, {video.codec}"
    )
    for plate, (start, end) in zip(video.plates, video.segments, strict=True):
        print(f"  {start:6.2f}–{end:6.2f} s  {plate}")
    return 0
