"""Plate detection on the real OpenALPR photos with the service's default settings: recall at IoU >= 0.5
of at least 97 % on `us` and on `eu`, and backends agreeing with the reference on the same images."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from alpr_detect.backends import trt
from alpr_detect.backends.ort import OrtBackend
from alpr_detect.build import build_pipeline
from alpr_detect.detector import DetectorConfig, YoloDetector, read_bgr
from alpr_detect.evaluate import evaluate, load_labelled_set
from alpr_detect.models import ModelStore, default_models_dir, ensure_provisioned
from alpr_shared.datasets import openalpr_benchmarks
from alpr_shared.settings import DetectSettings

DATA = openalpr_benchmarks()
RECALL_TARGET = 0.97


@pytest.fixture(scope="module")
def store() -> ModelStore:
    store = ModelStore(default_models_dir())
    ensure_provisioned(store, "plate-yolov8n")
    return store


@pytest.mark.parametrize("subset", ["us", "eu"])
def test_plate_recall_on_real_photos(store: ModelStore, subset: str) -> None:
    samples = load_labelled_set(DATA / subset)
    assert len(samples) > 100
    settings = DetectSettings(models_dir=store.root, providers=["CPUExecutionProvider"])
    with ExitStack() as stack:
        pipeline = build_pipeline(settings, store, stack)
        report = evaluate(samples, pipeline.detect, read_bgr, chunk=settings.batch_size)
    print(f"{subset}: {report.summary()}")
    assert report.recall_50 >= RECALL_TARGET, report.summary()
    assert report.false_per_image < 0.5, report.summary()


def _images(n: int) -> list[np.ndarray]:
    return [read_bgr(str(s.path)) for s in load_labelled_set(DATA / "eu")[:n]]


def test_batched_inference_matches_single_image_reference(store: ModelStore) -> None:
    """The reference is ONNX Runtime CPU one image at a time; a batch of 4 must give the same boxes."""
    path = store.require("plate-yolov8n")
    backend = OrtBackend(path, providers=["CPUExecutionProvider"], max_batch=4)
    try:
        detector = YoloDetector(backend, DetectorConfig(input_size=640))
        images = _images(4)
        batched = detector.detect(images)
        for image, got in zip(images, batched, strict=True):
            ref = detector.detect([image])[0]
            assert len(ref) == len(got) >= 1
            np.testing.assert_allclose(got.boxes, ref.boxes, atol=0.5)
            np.testing.assert_allclose(got.scores, ref.scores, atol=1e-3)
    finally:
        backend.close()


@pytest.mark.gpu
def test_tensorrt_matches_onnxruntime_reference(store: ModelStore, tmp_path: Path) -> None:
    ok, why = trt.gpu_available()
    if not ok:
        pytest.skip(f"NO GPU: TensorRT backend not exercised on this machine — {why}")
    path = store.require("plate-yolov8n")
    engine = trt.build_engine(path, tmp_path / "engines", max_batch=4, input_size=640)
    gpu = trt.TensorRtBackend(engine, max_batch=4, input_size=640)
    cpu = OrtBackend(path, providers=["CPUExecutionProvider"], max_batch=4)
    try:
        images = _images(4)
        ref = YoloDetector(cpu, DetectorConfig(input_size=640)).detect(images)
        got = YoloDetector(gpu, DetectorConfig(input_size=640)).detect(images)
        for r, g in zip(ref, got, strict=True):
            assert len(r) == len(g)
            np.testing.assert_allclose(g.boxes, r.boxes, atol=2.0)  # FP16 engine vs FP32 reference
            np.testing.assert_allclose(g.scores, r.scores, atol=0.02)
    finally:
        gpu.close()
        cpu.close()
