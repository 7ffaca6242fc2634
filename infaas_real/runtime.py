"""Run a model-variant: materialise its artifact and answer batches.

``load_runner(variant)`` finds (or builds, from the variant's zoo) the artifact the variant
loads — the fp32 weights for ``torch-*``, the ONNX graph for ``onnx-fp32``, the int8 graph
for ``onnx-int8`` — and returns a :class:`Runner` whose ``run(batch)`` maps a float32 batch
of shape ``(n, *input_shape)`` to float32 class scores ``(n, classes)``.

Threads: a CPU variant uses ``variant.cores`` intra-op threads (onnxruntime
``intra_op_num_threads``; torch ``set_num_threads``, which is process-wide — fine, since the
executor runs one replica per process). Accelerator variants (``gpu-*``) run torch on CUDA
in fp16/bf16 and need ``device="cuda"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from infaas_core.errors import BackendError, ConfigError
from infaas_core.model import CPU, Variant
from infaas_real.profiling.artifacts import (
    FRAMEWORK_KIND,
    INPUT_NAME,
    ArtifactStore,
)
from infaas_real.zoo import get_zoo, zoo_for_task
from infaas_real.zoo.base import Zoo

CPU_FRAMEWORKS = ("torch-fp32", "onnx-fp32", "onnx-int8")
GPU_FRAMEWORKS = ("torch-fp16", "torch-bf16", "tensorrt-fp16")


class Runner(Protocol):
    """A loaded variant: ``run`` a float32 batch -> float32 scores."""

    input_shape: tuple[int, ...]
    max_batch: int

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def _check_batch(batch: np.ndarray, input_shape: tuple[int, ...], max_batch: int, name: str) -> np.ndarray:
    if batch.ndim != len(input_shape) + 1 or tuple(batch.shape[1:]) != input_shape:
        raise ValueError(f"{name}: input shape {batch.shape}, expected (n, {', '.join(map(str, input_shape))})")
    if not 1 <= batch.shape[0] <= max_batch:
        raise ValueError(f"{name}: batch of {batch.shape[0]} outside 1..max_batch={max_batch}")
    return np.ascontiguousarray(batch, dtype=np.float32)


class TorchRunner:
    """Eager torch on CPU (fp32) or CUDA (fp16 / bf16)."""

    def __init__(self, module: Any, *, name: str, input_shape: tuple[int, ...], max_batch: int,
                 threads: int, device: str = "cpu", dtype: str = "fp32") -> None:  # fmt: skip
        import torch

        self.name = name
        self.input_shape = input_shape
        self.max_batch = max_batch
        self._torch = torch
        self._device = torch.device(device)
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
        if self._device.type == "cpu":
            torch.set_num_threads(threads)
        self._module: Any = module.to(self._device, self._dtype).eval()

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = _check_batch(batch, self.input_shape, self.max_batch, self.name)
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self._device, self._dtype, non_blocking=True)
            out = self._module(t)
            return out.float().cpu().numpy()

    def close(self) -> None:
        self._module = None
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()


class OrtRunner:
    """An ONNX graph on onnxruntime's CPU execution provider."""

    def __init__(self, path: Path, *, name: str, input_shape: tuple[int, ...], max_batch: int,
                 threads: int) -> None:  # fmt: skip
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.name = name
        self.input_shape = input_shape
        self.max_batch = max_batch
        self._session: Any = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = _check_batch(batch, self.input_shape, self.max_batch, self.name)
        out = self._session.run(None, {INPUT_NAME: x})[0]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self._session = None


def open_runner(store: ArtifactStore, zoo: Zoo, variant: Variant, device: str = "cpu") -> Runner:
    """A runner for ``variant`` from ``store`` (building missing artifacts)."""
    model = zoo.model(variant.model)
    if variant.framework not in FRAMEWORK_KIND:
        raise ConfigError("variant.framework", f"unknown framework '{variant.framework}'; known: {sorted(FRAMEWORK_KIND)}")
    common: dict[str, Any] = {"name": variant.name, "input_shape": tuple(zoo.input_shape),
                              "max_batch": variant.max_batch}  # fmt: skip
    if variant.hardware == CPU:
        if variant.framework == "torch-fp32":
            return TorchRunner(store.load_module(model), threads=variant.cores, **common)
        if variant.framework in ("onnx-fp32", "onnx-int8"):
            art = store.get(model, FRAMEWORK_KIND[variant.framework])
            return OrtRunner(art.path, threads=variant.cores, **common)
        raise ConfigError("variant.framework", f"{variant.framework} does not run on cpu")
    # an accelerator variant
    if not device.startswith("cuda"):
        raise BackendError(f"variant {variant.name} runs on {variant.hardware}; load it with device='cuda'")
    import torch

    if not torch.cuda.is_available():
        raise BackendError(f"variant {variant.name} needs a CUDA GPU and none is available")
    if variant.framework in ("torch-fp16", "torch-bf16"):
        dtype = variant.framework.split("-")[1]
        return TorchRunner(store.load_module(model), threads=1, device=device, dtype=dtype, **common)
    if variant.framework == "tensorrt-fp16":
        from infaas_real.profiling.tensorrt import TensorRTRunner

        art = store.get(model, FRAMEWORK_KIND[variant.framework])
        return TensorRTRunner(art.path, **common)
    raise ConfigError("variant.framework", f"{variant.framework} does not run on {variant.hardware}")


def load_runner(variant: Variant, *, cache_dir: Path | None = None, device: str = "cpu",
                zoo_options: Mapping[str, Any] | None = None) -> Runner:  # fmt: skip
    """Materialise ``variant``'s artifact (from the cache, or built from its zoo) and load it.

    ``zoo_options`` configure the zoo exactly as the profile run did (e.g. user weights for
    imagenet); the default zoo config is used otherwise. ``device`` is ``cpu`` or ``cuda[:n]``
    (accelerator variants only).
    """
    zoo = get_zoo(zoo_for_task(variant.task), **dict(zoo_options or {}))
    store = ArtifactStore(zoo, cache_dir)
    return open_runner(store, zoo, variant, device)


__all__ = ["CPU_FRAMEWORKS", "GPU_FRAMEWORKS", "OrtRunner", "Runner", "TorchRunner", "load_runner", "open_runner"]
