"""TensorRT fp16 variants: an engine built from the variant's ONNX graph.

Only used on a CUDA machine where the ``tensorrt`` package imports; elsewhere
:func:`tensorrt_available` says why not and the profiler skips ``tensorrt-fp16`` with that
message. The engine has one optimisation profile covering batch 1..max_batch; I/O goes
through torch CUDA tensors so no extra CUDA binding package is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.errors import BackendError
from infaas_real.profiling.artifacts import INPUT_NAME, OUTPUT_NAME


def tensorrt_available() -> str | None:
    """``None`` when TensorRT can run here, else the reason it cannot."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"the tensorrt package does not import ({exc})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


class TensorRTRunner:
    """Builds (once per process) and runs an fp16 TensorRT engine for one variant."""

    def __init__(self, onnx_path: Path, *, name: str, input_shape: tuple[int, ...], max_batch: int) -> None:
        reason = tensorrt_available()
        if reason is not None:
            raise BackendError(f"{name}: TensorRT unavailable: {reason}")
        import tensorrt as trt
        import torch

        self.name = name
        self.input_shape = input_shape
        self.max_batch = max_batch
        self._torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"{name}: TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        opt = max(1, max_batch // 2)
        profile.set_shape(INPUT_NAME, (1, *input_shape), (opt, *input_shape), (max_batch, *input_shape))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"{name}: TensorRT engine build failed")
        self._engine: Any = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        self._context: Any = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        n = batch.shape[0]
        if not 1 <= n <= self.max_batch or tuple(batch.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name}: bad input shape {batch.shape}")
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
        self._context.set_input_shape(INPUT_NAME, tuple(x.shape))
        out_shape = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
        y = torch.empty(out_shape, dtype=torch.float32, device="cuda")
        self._context.set_tensor_address(INPUT_NAME, x.data_ptr())
        self._context.set_tensor_address(OUTPUT_NAME, y.data_ptr())
        with torch.cuda.stream(self._stream):
            self._context.execute_async_v3(self._stream.cuda_stream)
        self._stream.synchronize()
        return y.cpu().numpy()

    def close(self) -> None:
        self._context = None
        self._engine = None
