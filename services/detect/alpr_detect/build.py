"""Building the detection pipeline from settings (called from the service's main and `alpr models`)."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from alpr_detect.backends.base import Backend, BackendError
from alpr_detect.backends.ort import OrtBackend
from alpr_detect.detector import DetectorConfig, YoloDetector
from alpr_detect.models import ModelSpec, ModelStore, default_models_dir
from alpr_detect.pipeline import DetectionPipeline, RefineConfig
from alpr_detect.refine import SecondPass
from alpr_shared.schemas import ObjectClass
from alpr_shared.settings import DetectSettings


def intra_op_threads(configured: int, cores: int | None = None) -> int:
    """ONNX Runtime's threads inside one operator: as configured, or for 0 half the cores (at least one).
    Detect shares the edge box with decoding, tracking and OCR: with a thread per core (ONNX Runtime's own
    default) its threads fought the other stages and the whole pipeline ran at 0.6x the frame rate it
    reaches with one thread on 2 cores (BENCHMARKS.md, pipeline)."""
    if configured:
        return configured
    return max(1, (cores if cores is not None else (os.cpu_count() or 2)) // 2)


def model_store(settings: DetectSettings) -> ModelStore:
    return ModelStore(default_models_dir(settings.models_dir))


def open_backend(
    settings: DetectSettings, store: ModelStore, model: str, *, input_size: int, max_batch: int
) -> Backend:
    """Open one model on the configured backend; `ModelMissingError` if it is not provisioned."""
    spec = store.spec(model)
    path = store.require(model)
    if settings.backend == "tensorrt":
        from alpr_detect.backends import trt  # noqa: PLC0415 - GPU stack only when asked for

        engines = store.engines_dir()
        ok, why = trt.gpu_available()
        if not ok:
            raise BackendError(f"detect.backend is tensorrt but {why}")
        engine = trt.build_engine(path, engines, max_batch=max_batch, input_size=input_size)
        return trt.TensorRtBackend(engine, max_batch=max_batch, input_size=input_size)
    return OrtBackend(
        path,
        providers=settings.providers,
        intra_op_threads=intra_op_threads(settings.intra_op_threads),
        inter_op_threads=settings.inter_op_threads,
        max_batch=max_batch,
        provision_hint=spec.provision_command,
    )


def _vehicle_config(spec: ModelSpec, settings: DetectSettings) -> DetectorConfig:
    labels: tuple[ObjectClass, ...] = ("car", "truck", "bus", "motorcycle")
    size = max(spec.coco_classes) + 1 if spec.coco_classes else 80
    class_map = [-1] * max(size, 80)
    for coco_id, name in spec.coco_classes.items():
        if name in labels:
            class_map[coco_id] = labels.index(name)
    return DetectorConfig(
        input_size=int(spec.export.get("imgsz", 640)),
        conf_threshold=0.25,
        iou_threshold=settings.iou_threshold,
        max_detections=settings.max_detections,
        labels=labels,
        class_map=tuple(class_map),
    )


def build_pipeline(settings: DetectSettings, store: ModelStore, stack: ExitStack) -> DetectionPipeline:
    """Open every model the settings name (each backend closed by `stack`) and wire the pipeline."""
    batch = settings.batch_size
    plate_backend = open_backend(
        settings, store, settings.plate_model, input_size=settings.input_size, max_batch=batch
    )
    stack.callback(plate_backend.close)
    plates = YoloDetector(
        plate_backend,
        DetectorConfig(
            input_size=settings.input_size,
            conf_threshold=settings.conf_threshold,
            iou_threshold=settings.iou_threshold,
            max_detections=settings.max_detections,
        ),
    )
    second_pass = None
    if settings.refine == "second-pass":
        crop_backend: Backend = plate_backend
        if settings.backend == "tensorrt":
            # A TensorRT engine has one input size; the crop pass gets its own engine.
            crop_backend = open_backend(
                settings,
                store,
                settings.plate_model,
                input_size=settings.refine_crop_size,
                max_batch=max(batch, 8),
            )
            stack.callback(crop_backend.close)
        second_pass = SecondPass(
            YoloDetector(
                crop_backend,
                DetectorConfig(
                    input_size=settings.refine_crop_size,
                    conf_threshold=0.05,  # a plate was already found here; keep its faint re-detection
                    iou_threshold=settings.iou_threshold,
                    max_detections=5,
                ),
            ),
            context=settings.refine_context,
        )
    vehicles = None
    if settings.vehicle_model is not None:
        spec = store.spec(settings.vehicle_model)
        config = _vehicle_config(spec, settings)
        vehicle_backend = open_backend(
            settings, store, spec.name, input_size=config.input_size, max_batch=batch
        )
        stack.callback(vehicle_backend.close)
        vehicles = YoloDetector(vehicle_backend, config)
    refine = RefineConfig(settings.refine, settings.refine_width, settings.refine_height)
    return DetectionPipeline(plates, refine=refine, second_pass=second_pass, vehicles=vehicles)


def models_dir_of(settings: DetectSettings) -> Path:
    return default_models_dir(settings.models_dir)
