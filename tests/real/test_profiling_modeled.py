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
