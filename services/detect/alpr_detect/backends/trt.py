"""Native TensorRT backend: an FP16 engine built from our ONNX file, cached per GPU and TensorRT version.

Needs `tensorrt` (10.x) and `pycuda` (the `gpu` extra) and an NVIDIA GPU. Nothing is imported until a
backend is built, so machines without a GPU import this module fine; building one there raises
`BackendError` saying why. `build_engine` is what `alpr models build-engine` runs.

The engine has one optimisation profile: batch 1..max_batch at the configured square input size
(the ONNX file's batch, height and width axes are dynamic; TensorRT fixes H and W here for speed).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from alpr_detect.backends.base import BackendError, ModelFileError


def _import_gpu_stack() -> tuple[Any, Any]:
    try:
        trt = importlib.import_module("tensorrt")
        cuda = importlib.import_module("pycuda.driver")
    except ImportError as exc:
        raise BackendError(
            f"the tensorrt backend needs the `gpu` extra (tensorrt, pycuda): {exc}. "
            "Install it on a machine with an NVIDIA GPU, or use detect.backend: onnxruntime"
        ) from exc
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError without a GPU driver
        raise BackendError(f"CUDA is not usable here ({exc}); no NVIDIA GPU or driver") from exc
    if count == 0:
        raise BackendError("no NVIDIA GPU found; use detect.backend: onnxruntime")
    return trt, cuda


def gpu_available() -> tuple[bool, str]:
    """(True, GPU name) where the TensorRT backend can run, else (False, the reason)."""
    try:
        _, cuda = _import_gpu_stack()
    except BackendError as exc:
        return False, str(exc)
    return True, str(cuda.Device(0).name())


def engine_path(
    engines_dir: Path, *, model_file: Path, gpu_name: str, trt_version: str, max_batch: int, size: int
) -> Path:
    """Engines are specific to the GPU model and the TensorRT version: both are in the name."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    return engines_dir / f"{model_file.stem}.{gpu}.trt{trt_version}.b{max_batch}.s{size}.fp16.engine"


def build_engine(
    onnx_path: Path, engines_dir: Path, *, max_batch: int, input_size: int, workspace_mb: int = 1024
) -> Path:
    """Build (or reuse) the FP16 engine of an ONNX model for this GPU; returns its path."""
    trt, cuda = _import_gpu_stack()
    if not onnx_path.is_file():
        raise ModelFileError(f"model file {onnx_path} does not exist; provision it with `alpr models export`")
    gpu_name = str(cuda.Device(0).name())
    out = engine_path(
        engines_dir,
        model_file=onnx_path,
        gpu_name=gpu_name,
        trt_version=trt.__version__,
        max_batch=max_batch,
        size=input_size,
    )
    if out.is_file():
        return out
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    s = input_size
    profile.set_shape(name, (1, 3, s, s), (max_batch, 3, s, s), (max_batch, 3, s, s))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(out)
    return out


class TensorRtBackend:
    """Runs a serialized engine on GPU 0 with pinned host buffers and one CUDA stream."""

    def __init__(self, engine_file: Path, *, max_batch: int, input_size: int) -> None:
        trt, cuda = _import_gpu_stack()
        if not engine_file.is_file():
            raise ModelFileError(
                f"engine {engine_file} does not exist; build it with `alpr models build-engine`"
            )
        self._cuda = cuda
        self._ctx = cuda.Device(0).make_context()
        try:
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = runtime.deserialize_cuda_engine(engine_file.read_bytes())
            if self._engine is None:
                raise ModelFileError(
                    f"engine {engine_file} cannot be loaded (other GPU or TensorRT version?)"
                )
            self._context = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._input = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
            self._output = next(
                n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT
            )
            self._stream = cuda.Stream()
            self.max_batch = max_batch
            self.input_size = input_size
            s = input_size
            self._context.set_input_shape(self._input, (max_batch, 3, s, s))
            out_shape = tuple(self._context.get_tensor_shape(self._output))
            self._host_in = cuda.pagelocked_empty((max_batch, 3, s, s), np.float32)
            self._host_out = cuda.pagelocked_empty(out_shape, np.float32)
            self._dev_in = cuda.mem_alloc(self._host_in.nbytes)
            self._dev_out = cuda.mem_alloc(self._host_out.nbytes)
        finally:
            self._ctx.pop()
        self.name = "tensorrt"

    def infer(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        n = batch.shape[0]
        if n > self.max_batch:
            raise BackendError(f"batch of {n} exceeds the engine's max batch {self.max_batch}")
        if batch.shape[2:] != (self.input_size, self.input_size):
            raise BackendError(
                f"engine takes {self.input_size}x{self.input_size} input, got {batch.shape[2:]}"
            )
        cuda = self._cuda
        self._ctx.push()
        try:
            s = self.input_size
            self._context.set_input_shape(self._input, (n, 3, s, s))
            self._host_in[:n] = batch
            cuda.memcpy_htod_async(self._dev_in, self._host_in, self._stream)
            self._context.set_tensor_address(self._input, int(self._dev_in))
            self._context.set_tensor_address(self._output, int(self._dev_out))
            if not self._context.execute_async_v3(self._stream.handle):
                raise BackendError("TensorRT execution failed")
            cuda.memcpy_dtoh_async(self._host_out, self._dev_out, self._stream)
            self._stream.synchronize()
            return np.array(self._host_out[:n], dtype=np.float32)
        finally:
            self._ctx.pop()

    def close(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is None:
            return
        ctx.push()
        try:
            self._dev_in.free()
            self._dev_out.free()
            del self._context, self._engine
        finally:
            ctx.pop()
            ctx.detach()
            self._ctx = None
