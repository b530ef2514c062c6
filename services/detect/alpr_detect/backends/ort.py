"""ONNX Runtime backend: CPU execution provider by default, CUDA / TensorRT execution providers when
this onnxruntime build has them and they are asked for (`providers: auto` picks the best present)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]  # onnxruntime ships no type information

from alpr_detect.backends.base import BackendError, ModelFileError

# Preference order of `providers: auto`; CPU is always last and always present.
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_SHORT = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "tensorrt",
}


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """`["auto"]` → every preferred provider this build has; otherwise the requested ones, checked."""
    available = ort.get_available_providers()
    if list(requested) == ["auto"]:
        return [p for p in AUTO_ORDER if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        raise BackendError(
            f"ONNX Runtime execution provider(s) {missing} are not in this onnxruntime build "
            f"(available: {available}); install onnxruntime-gpu for CUDA/TensorRT, or use providers: [auto]"
        )
    return list(requested)


class OrtBackend:
    def __init__(
        self,
        model_path: Path,
        *,
        providers: Sequence[str] = ("auto",),
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
        max_batch: int = 8,
        provision_hint: str = "alpr models export",
    ) -> None:
        if not model_path.is_file():
            raise ModelFileError(
                f"model file {model_path} does not exist; provision it with `{provision_hint}`"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads  # 0: ONNX Runtime picks (one per core)
        options.inter_op_num_threads = inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initialisers are noise in service logs
        chosen = resolve_providers(providers)
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)
        except Exception as exc:  # ORT raises its own untyped exceptions (InvalidProtobuf, Fail, …)
            raise ModelFileError(
                f"model file {model_path} cannot be loaded by ONNX Runtime ({type(exc).__name__}: "
                f"{str(exc)[:200]}); it is corrupt or not an ONNX model: re-provision it with `{provision_hint}`"
            ) from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelFileError(f"model {model_path} does not take one NCHW image input: {inputs}")
        self._input = inputs[0].name
        self._output = self._session.get_outputs()[0].name
        batch_dim = inputs[0].shape[0]
        self.dynamic_batch = not isinstance(batch_dim, int)
        self.max_batch = max_batch if self.dynamic_batch else int(batch_dim)
        used = self._session.get_providers()[0]
        self.provider = used
        self.name = f"onnxruntime-{_SHORT.get(used, used)}"
        self.model_path = model_path

    @property
    def input_hw(self) -> tuple[int | None, int | None]:
        shape = self._session.get_inputs()[0].shape
        h, w = shape[2], shape[3]
        return (h if isinstance(h, int) else None, w if isinstance(w, int) else None)

    def metadata(self) -> dict[str, str]:
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if batch.shape[0] > self.max_batch:
            raise BackendError(f"batch of {batch.shape[0]} exceeds this backend's max_batch {self.max_batch}")
        out = self._session.run([self._output], {self._input: batch})[0]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        # ORT sessions free their memory when dropped; drop our reference so that happens now.
        self.__dict__.pop("_session", None)
