"""Running a dataset through `FramePipeline`, in this process or in a pool of worker processes.

Each worker process opens the models once (pool initializer) and reads whole images; `ms` is the wall
time of one image's per-frame path on one worker, so ms/image stays honest whatever `--workers` is. With
several workers, ONNX Runtime gets the cores divided among them (`intra_op_threads`) instead of every
worker spinning one thread per core.

Progress goes to stderr: a redrawn bar on a terminal, a line every 10 % otherwise (CI logs).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import cv2

from alpr_shared.evaluate.datasets import Dataset, Sample
from alpr_shared.evaluate.frame import FrameOptions, FramePipeline, encode_crop
from alpr_shared.evaluate.metrics import ImageResult, PlateResult
from alpr_shared.settings import AlprSettings


@dataclass(frozen=True, slots=True)
class Job:
    index: int
    sample: Sample
    crop: bool  # a crop folder: skip detection


@dataclass(frozen=True, slots=True)
class Done:
    index: int
    result: ImageResult
    crops: list[bytes]  # JPEG per read (only when a report is wanted)


class Worker:
    """One process's pipeline; `handle` turns a job into a result (errors become a counted miss)."""

    def __init__(self, pipeline: FramePipeline, keep_crops: bool) -> None:
        self.pipeline = pipeline
        self.keep_crops = keep_crops

    def handle(self, job: Job) -> Done:
        sample = job.sample
        try:
            out = self.pipeline.run(sample.image, crop=job.crop)
        except (FileNotFoundError, cv2.error) as exc:
            result = ImageResult(str(sample.image), sample.labels, (), error=str(exc))
            return Done(job.index, result, [])
        crops: list[bytes] = []
        if self.keep_crops:
            crops = [encode_crop(c) if c is not None else b"" for c in out.crops]
        result = ImageResult(str(sample.image), sample.labels, tuple(out.reads), tuple(out.boxes), out.ms)
        return Done(job.index, result, crops)


def worker_settings(settings: AlprSettings, workers: int) -> AlprSettings:
    """Settings for one of `workers` processes: ONNX Runtime threads divided among them (an eval process
    has the machine to itself, unlike detect in the pipeline, whose default is half the cores)."""
    if workers <= 1 and settings.detect.intra_op_threads:
        return settings
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    detect = settings.detect.model_copy(update={"intra_op_threads": threads})
    return settings.model_copy(update={"detect": detect})


# --- the pool's per-process state ---------------------------------------------------------------------

_worker: Worker | None = None


def _init(settings: AlprSettings, options: FrameOptions, detect: bool, keep_crops: bool) -> None:
    global _worker  # noqa: PLW0603 - one pipeline per pool process, opened once by the initializer
    pipeline = FramePipeline.open(settings, options, detect=detect)
    _worker = Worker(pipeline, keep_crops)


def _handle(job: Job) -> Done:
    if _worker is None:
        raise RuntimeError("evaluation worker not initialised")
    return _worker.handle(job)


class Progress:
    def __init__(self, total: int, stream: TextIO, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled and total > 0
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self._last_decile = -1

    def update(self, done: int, exact: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        text = f"{done}/{self.total} images, {exact} exact, {rate:.1f} img/s, eta {eta:.0f} s"
        if self.tty:
            width = 30
            filled = round(width * done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\x1b[K")
            if done == self.total:
                self.stream.write("\n")
            self.stream.flush()
            return
        decile = done * 10 // self.total
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(f"eval: {text}\n")
            self.stream.flush()


def _exact_reads(result: ImageResult) -> int:
    texts = [r.text for r in result.reads]
    return sum(1 for label in result.labels if label.text in texts)


def run_dataset(
    dataset: Dataset,
    settings: AlprSettings,
    options: FrameOptions,
    *,
    workers: int = 1,
    keep_crops: bool = False,
    progress: bool = True,
    stream: TextIO | None = None,
    on_done: Callable[[Done], None] | None = None,
) -> list[Done]:
    """Every sample through the per-frame path; results in dataset order."""
    crop = dataset.layout == "crop"
    jobs = [Job(i, s, crop) for i, s in enumerate(dataset.samples)]
    bar = Progress(len(jobs), stream or sys.stderr, progress)
    done: list[Done] = []
    exact = 0
    for item in _results(jobs, settings, options, workers=workers, keep_crops=keep_crops, detect=not crop):
        done.append(item)
        exact += _exact_reads(item.result)
        if on_done is not None:
            on_done(item)
        bar.update(len(done), exact)
    done.sort(key=lambda d: d.index)
    return done


def _results(
    jobs: Sequence[Job],
    settings: AlprSettings,
    options: FrameOptions,
    *,
    workers: int,
    keep_crops: bool,
    detect: bool,
) -> Iterator[Done]:
    if workers <= 1:
        with FramePipeline.open(settings, options, detect=detect) as pipeline:
            worker = Worker(pipeline, keep_crops)
            for job in jobs:
                yield worker.handle(job)
        return
    per_worker = worker_settings(settings, workers)
    # spawn, not fork: ONNX Runtime's thread pools do not survive a fork.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init,
        initargs=(per_worker, options, detect, keep_crops),
    ) as pool:
        futures = [pool.submit(_handle, job) for job in jobs]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def write_crops(done: Sequence[Done], directory: Path) -> list[ImageResult]:
    """Write each read's crop as `directory/crops/IMAGE-K.jpg` and return results naming those files."""
    crops_dir = directory / "crops"
    crops_dir.mkdir(parents=True, exist_ok=True)
    out: list[ImageResult] = []
    for item in done:
        reads: list[PlateResult] = []
        for k, read in enumerate(item.result.reads):
            name = ""
            if k < len(item.crops) and item.crops[k]:
                name = f"crops/{item.index:05d}-{k}.jpg"
                (directory / name).write_bytes(item.crops[k])
            reads.append(
                PlateResult(
                    read.text, read.confidence, read.box, read.raw, read.region, read.detector_score, name
                )
            )
        r = item.result
        out.append(ImageResult(r.image, r.labels, tuple(reads), r.boxes, r.ms, r.error))
    return out
