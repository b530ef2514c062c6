"""Inference backends. Each takes a float32 NCHW batch and returns the model's raw output tensor;
`yolo.decode_one` adapts that into `Detections`. Nothing here is imported or loaded at import time of
the service: `open_backend` builds one when the service starts."""

from __future__ import annotations

from alpr_detect.backends.base import Backend, BackendError, ModelFileError

__all__ = ["Backend", "BackendError", "ModelFileError"]
