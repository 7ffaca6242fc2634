"""Runtime rules: load_runner builds a variant's artifact from its zoo when it is not cached,
answers float32 batches with class scores, honours max_batch, and refuses accelerators
without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

from infaas_core.errors import BackendError
from infaas_core.model import Variant, make_variant
from infaas_real.runtime import load_runner
from infaas_real.zoo import get_zoo


def _variant(model: str, framework: str, hardware: str = "cpu", max_batch: int = 32) -> Variant:
    where = "cpu1" if hardware == "cpu" else hardware
    return make_variant(
        name=f"{model}-{framework}-{where}-b{max_batch}", model=model, task="classification-digits",
        framework=framework, hardware=hardware, cores=1, max_batch=max_batch, load_latency_ms=1.0,
        memory_mb=1.0, accuracy=0.9, source="modeled:test", points={1: (1.0, 1.0)},
    )  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("framework", ["torch-fp32", "onnx-fp32", "onnx-int8"])
def test_runner_classifies_digits_test_split(cache: Path, framework: str) -> None:
    x, y = get_zoo("digits").eval_data()
    runner = load_runner(_variant("mlp_small", framework), cache_dir=cache)
    assert runner.input_shape == (64,) and runner.max_batch == 32
    scores = np.concatenate([runner.run(x[i : i + 32]) for i in range(0, len(x), 32)])
    runner.close()
    assert scores.shape == (len(x), 10) and scores.dtype == np.float32
    assert np.mean(scores.argmax(1) == y) > 0.93


def test_artifacts_are_cached_by_content_hash(cache: Path) -> None:
    load_runner(_variant("mlp_small", "onnx-fp32"), cache_dir=cache).close()
    dirs = sorted((cache / "artifacts" / "digits" / "mlp_small").iterdir())
    load_runner(_variant("mlp_small", "onnx-fp32"), cache_dir=cache).close()
    assert sorted((cache / "artifacts" / "digits" / "mlp_small").iterdir()) == dirs
    assert all("-" in d.name and not d.name.count(".tmp") for d in dirs)


def test_runner_refuses_batches_past_max_batch(cache: Path) -> None:
    runner = load_runner(_variant("mlp_small", "onnx-fp32", max_batch=4), cache_dir=cache)
    with pytest.raises(ValueError, match="max_batch"):
        runner.run(np.zeros((5, 64), np.float32))
    with pytest.raises(ValueError, match="shape"):
        runner.run(np.zeros((2, 63), np.float32))


def test_accelerator_variant_needs_cuda(cache: Path) -> None:
    with pytest.raises(BackendError, match="cuda"):
        load_runner(_variant("mlp_small", "torch-fp16", hardware="gpu-t4"), cache_dir=cache)


@pytest.mark.gpu
def test_fp16_runner_on_gpu_matches_fp32_top1(cache: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    x, _ = get_zoo("digits").eval_data()
    ref = load_runner(_variant("cnn_small", "torch-fp32"), cache_dir=cache)
    gpu = load_runner(_variant("cnn_small", "torch-fp16", hardware="gpu-h200"), cache_dir=cache, device="cuda")
    agree = np.mean(ref.run(x[:32]).argmax(1) == gpu.run(x[:32]).argmax(1))
    assert agree > 0.95
