"""Modeled accelerator rows: the scaling model reproduces its ResNet-50 calibration points,
every row is marked modeled, and merging measured rows replaces that class's modeled rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infaas_core.catalog import load_catalog
from infaas_real.merge_catalog import main as merge_main
from infaas_real.merge_catalog import read_rows
from infaas_real.profiling.modeled import ACCELERATORS_PATH, modeled_rows

ACC = {"resnet50": 0.80858, "mobilenet_v2": 0.72154, "vgg16": 0.71592}


def test_model_hits_resnet50_calibration_points() -> None:
    cfg = yaml.safe_load(ACCELERATORS_PATH.read_text())
    rows = modeled_rows(ACC, "classification-imagenet-224")
    for dev, spec in cfg["devices"].items():
        cal = spec["calibration"]
        mb = max(spec["max_batches"])
        lat = {int(r["batch"]): r["latency_p50_ms"] for r in rows
               if r["hardware"] == dev and r["model"] == "resnet50" and r["framework"] == cal["framework"]
               and r["max_batch"] == mb}  # fmt: skip
        assert lat[1] == pytest.approx(cal["batch1_ms"], rel=1e-3)
        b = int(cal["batch"])
        assert b * 1000.0 / lat[b] == pytest.approx(cal["throughput_per_s"], rel=1e-3)


def test_modeled_rows_load_and_say_modeled(tmp_path: Path) -> None:
    out = tmp_path / "m.csv"
    assert merge_main(["--modeled", "imagenet", str(out)]) == 0
    catalog = load_catalog(out)
    assert {"gpu-v100", "gpu-t4", "gpu-a10g", "inferentia"} <= set(catalog.hardware_classes)
    assert all(v.source.startswith("modeled:") for v in catalog)
    big = catalog.get("vgg16-tensorrt-fp16-gpu-t4-b64")
    small = catalog.get("mobilenet_v2-tensorrt-fp16-gpu-t4-b64")
    assert big.latency_ms(64) > small.latency_ms(64)


def test_merge_replaces_modeled_rows_of_a_measured_class(tmp_path: Path) -> None:
    base = tmp_path / "base.csv"
    merge_main(["--modeled", "imagenet", str(base)])
    rows = read_rows(base)
    measured = [dict(r, source="measured:NVIDIA-Tesla-T4:2026-11-28", latency_p50_ms="9.9", latency_p99_ms="10.5")
                for r in rows if r["hardware"] == "gpu-t4" and r["framework"] == "torch-fp16"
                and r["model"] == "resnet50"]  # fmt: skip
    gpu = tmp_path / "gpu.csv"
    gpu.write_text(base.read_text().splitlines()[0] + "\n" + "".join(
        ",".join(str(r[k]) for k in rows[0]) + "\n" for r in measured))  # fmt: skip
    out = tmp_path / "merged.csv"
    assert merge_main([str(base), str(gpu), "--out", str(out)]) == 0
    merged = read_rows(out)
    t4_torch = [r for r in merged if r["hardware"] == "gpu-t4" and r["framework"] == "torch-fp16"]
    assert t4_torch and all(r["source"].startswith("measured:") for r in t4_torch)
    assert any(r["hardware"] == "gpu-t4" and r["source"].startswith("modeled:") for r in merged)  # tensorrt kept


def test_family_factor_reproduces_published_throughput_ratio() -> None:
    """On the V100 at large batch, EfficientNet-B0 runs at about NVIDIA's published ratio to
    ResNet-50 (DeepLearningExamples, 1x V100 AMP, batch 256: 6176 / 3382 img/s = 1.83), not
    at the ~4.7x its FLOPs alone would give; with factor 1 the ratio is back to FLOPs."""
    acc = {"resnet50": 0.80858, "efficientnet_b0": 0.77692}
    rows = modeled_rows(acc, "classification-imagenet-224")

    def thr(arch: str, rs: list[dict[str, object]]) -> float:
        (r,) = [r for r in rs if r["model"] == arch and r["hardware"] == "gpu-v100" and r["framework"] == "tensorrt-fp16"
                and r["max_batch"] == 64 and r["batch"] == 64]  # fmt: skip
        return 64 * 1000.0 / float(r["latency_p50_ms"])  # type: ignore[arg-type]

    ratio = thr("efficientnet_b0", rows) / thr("resnet50", rows)
    assert 1.5 < ratio < 6176 / 3382 + 0.01  # below the published batch-256 ratio (overhead at 64)
    b0 = next(r for r in rows if r["model"] == "efficientnet_b0")
    assert "family-factor=0.172(dle-v100-amp-6176ips)" in str(b0["source"])
    r50 = next(r for r in rows if r["model"] == "resnet50")
    assert "family-factor=1(calibration-model)" in str(r50["source"])


def test_unknown_architecture_gets_the_most_conservative_documented_factor() -> None:
    from infaas_real.profiling.modeled import family_factor

    cfg = yaml.safe_load(ACCELERATORS_PATH.read_text())
    factors = [float(e["factor"]) for e in cfg["family_efficiency"]["architectures"].values()]
    fam, basis = family_factor(cfg, "shufflenet_v2_x1_0")
    assert fam == min(factors) and basis.startswith("no-published-figure-most-conservative")


def test_amdahl_fit_is_monotone_and_clamped() -> None:
    from infaas_real.profiling.modeled import amdahl_serial_fraction, cpu_thread_rows

    assert amdahl_serial_fraction(100.0, 60.0) == pytest.approx(0.2)
    assert amdahl_serial_fraction(100.0, 130.0) == 1.0  # disturbed 2-thread run: no speed-up
    assert amdahl_serial_fraction(100.0, 40.0) == 0.0  # super-linear: clamped
    base = {"model": "m", "task": "t", "framework": "onnx-fp32", "hardware": "cpu", "max_batch": 2,
            "load_latency_ms": 1.0, "memory_mb": 1.0, "accuracy": 0.5, "source": "measured:x:2026-11-28"}  # fmt: skip
    rows = [
        {**base, "variant": "m-onnx-fp32-cpu1-b2", "cores": 1, "batch": 1, "latency_p50_ms": 100.0, "latency_p99_ms": 110.0},
        {**base, "variant": "m-onnx-fp32-cpu1-b2", "cores": 1, "batch": 2, "latency_p50_ms": 200.0, "latency_p99_ms": 220.0},
        {**base, "variant": "m-onnx-fp32-cpu2-b2", "cores": 2, "batch": 1, "latency_p50_ms": 60.0, "latency_p99_ms": 66.0},
        {**base, "variant": "m-onnx-fp32-cpu2-b2", "cores": 2, "batch": 2, "latency_p50_ms": 120.0, "latency_p99_ms": 132.0},
    ]  # fmt: skip
    out = {(r["cores"], r["batch"]): r for r in cpu_thread_rows(rows)}
    assert out[(4, 1)]["latency_p50_ms"] == pytest.approx(100 * (0.2 + 0.8 / 4))
    assert out[(8, 1)]["latency_p50_ms"] == pytest.approx(100 * (0.2 + 0.8 / 8))
    assert out[(4, 1)]["variant"] == "m-onnx-fp32-cpu4-b2" and out[(8, 2)]["variant"] == "m-onnx-fp32-cpu8-b2"
    assert out[(8, 1)]["source"].startswith("modeled:cpu-threads-amdahl(s=0.2000;fit-on-2-batches")
