"""One labelled image through the pipeline's own per-frame code, with no sockets or shared memory.

The path is the one a plate seen on one frame takes through the services, calling their functions:
- detect: `DetectionPipeline.detect` built by `alpr_detect.build.build_pipeline` from `detect:` settings
  (letterbox, ONNX inference, NMS, box refinement);
- track: only plate boxes that may open a track (`track.bytetrack.new_track_thresh`) go on;
- ocr coordinator: `shots.make_shot` copies and scores the crop (margin `ocr.shots.crop_margin`);
- ocr worker: `reading.PlateReader.read` (the worker's `read_job` calls the same method);
- voting: `voting.vote` over that one read, weighted by the shot's score, as `tracks.Throttle` does;
- events: the `min_confidence` refusal, then `builder.check_read` (normalisation, region-format
  correction for `--region`, `correction_min_ratio`).

Crop folders skip detection: the whole image is the shot, read by the same recognition path.

Owns the models it opens (ONNX sessions, closed by `close`). Not thread-safe: one per worker process.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from alpr_detect.build import build_pipeline, model_store
from alpr_detect.detector import Image, read_bgr
from alpr_detect.pipeline import DetectionPipeline
from alpr_events.builder import check_read
from alpr_events.plates import PlateFormats
from alpr_ocr.reading import PlateReader, open_reader
from alpr_ocr.shots import Shot, make_shot
from alpr_ocr.voting import Ballot, vote
from alpr_shared.evaluate.metrics import BoxT, PlateResult
from alpr_shared.schemas import Box
from alpr_shared.settings import AlprSettings


@dataclass(frozen=True, slots=True)
class FrameOptions:
    regions: tuple[str, ...] = ()  # expected plate regions for format correction; () = every known one
    recognizer: str | None = None  # a recogniser name (`alpr_ocr.reading.RECOGNIZERS`); None = the default


@dataclass
class FrameOutput:
    reads: list[PlateResult]
    boxes: list[BoxT]  # every plate box detect sends on (recall is measured on these)
    crops: list[Image | None] = field(default_factory=list)  # per read: the crop the recogniser saw
    ms: float = 0.0


class FramePipeline:
    def __init__(
        self,
        settings: AlprSettings,
        *,
        options: FrameOptions,
        detector: DetectionPipeline | None,
        reader: PlateReader,
        formats: PlateFormats,
        stack: contextlib.ExitStack,
    ) -> None:
        self.settings = settings
        self.options = options
        self.detector = detector
        self.reader = reader
        self.formats = formats
        self.regions = formats.resolve(options.regions)
        self._stack = stack

    @classmethod
    def open(cls, settings: AlprSettings, options: FrameOptions, *, detect: bool = True) -> FramePipeline:
        """Open the models (the detector only when `detect`: crop folders need none)."""
        stack = contextlib.ExitStack()
        try:
            formats = PlateFormats.load(settings.events.formats_file)
            formats.resolve(options.regions)  # an unknown region fails before any model loads
            detector = None
            if detect:
                detector = build_pipeline(settings.detect, model_store(settings.detect), stack)
            reader = open_reader(settings.ocr, options.recognizer)
            stack.callback(reader.close)
            return cls(
                settings, options=options, detector=detector, reader=reader, formats=formats, stack=stack
            )
        except BaseException:
            stack.close()
            raise

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> FramePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the per-frame path ---------------------------------------------------------------------------

    def _read_shot(self, shot: Shot, box: BoxT | None) -> PlateResult:
        reading = self.reader.read(shot.crop)
        voted = vote([Ballot(reading.text, reading.confidence, reading.alternatives, weight=shot.score)])
        events = self.settings.events
        if voted is None or voted.confidence < events.min_confidence:  # events refuses low confidence
            return PlateResult("", 0.0, box, reading.text, "", shot.detector_score)
        checked = check_read(
            self.formats,
            self.regions,
            voted.text,
            voted.confidence,
            voted.alternatives,
            max_changes=events.correction_max_changes,
            confusable_weight=events.confusable_weight,
            min_ratio=events.correction_min_ratio,
            min_length=events.min_plate_length,
        )
        if isinstance(checked, str):  # events drops it: no plate
            return PlateResult("", 0.0, box, reading.text, "", shot.detector_score)
        return PlateResult(
            checked.check.plate,
            round(checked.confidence, 4),
            box,
            reading.text,
            checked.check.region,
            shot.detector_score,
        )

    def read_scene(self, image: Image) -> FrameOutput:
        if self.detector is None:
            raise RuntimeError("this FramePipeline was opened without a detector")
        (dets,) = self.detector.detect([image])
        start_thresh = self.settings.track.bytetrack.new_track_thresh
        out = FrameOutput([], [])
        for i in range(len(dets)):
            if dets.label_of(i) != "plate":
                continue
            x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
            box: BoxT = (x1, y1, x2, y2)
            out.boxes.append(box)
            if float(dets.scores[i]) < start_thresh:
                continue  # found, but too faint to open a track on its own: never read
            shot = make_shot(
                image,
                Box(x1, y1, x2, y2),
                detector_score=float(dets.scores[i]),
                captured_at_ns=0,
                settings=self.settings.ocr.shots,
            )
            if shot is None:
                continue
            out.reads.append(self._read_shot(shot, box))
            out.crops.append(shot.crop)
        return out

    def read_crop(self, image: Image) -> FrameOutput:
        """A ready-made plate crop: the whole image is the shot (full weight), read as the worker reads."""
        h, w = image.shape[:2]
        shot = Shot(np.ascontiguousarray(image), 1.0, 0, Box(0, 0, w, h), 1.0)
        return FrameOutput([self._read_shot(shot, None)], [], [shot.crop])

    def run(self, path: Path, *, crop: bool) -> FrameOutput:
        """Decode and read one image file, timed end to end (decode included)."""
        start = time.perf_counter()
        image = read_bgr(str(path))
        out = self.read_crop(image) if crop else self.read_scene(image)
        out.ms = (time.perf_counter() - start) * 1000.0
        return out


def encode_crop(crop: Image, max_side: int = 320) -> bytes:
    h, w = crop.shape[:2]
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        crop = cv2.resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))))  # type: ignore[assignment]
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return bytes(buf) if ok else b""
