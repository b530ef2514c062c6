"""What every inference backend offers the detector."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class BackendError(RuntimeError):
    """A backend cannot be created or cannot run (missing runtime, no GPU, bad engine)."""


class ModelFileError(BackendError):
    """A model file is missing or unreadable; the message names the command that provisions it."""


class Backend(Protocol):
    """A loaded model. `infer` takes (N, 3, H, W) float32 in [0, 1], RGB, and returns the raw output
    (N, 4 + classes, anchors). One owner opens it and calls `close()`."""

    name: str  # metric label and FrameDetections.backend, e.g. "onnxruntime-cpu", "tensorrt"
    max_batch: int  # largest batch one call accepts

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...

    def close(self) -> None: ...
