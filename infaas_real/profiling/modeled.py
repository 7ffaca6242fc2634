"""Modeled profile rows for accelerator classes this project cannot measure here.

A documented scaling model (``flops-roofline-v1``), calibrated per device on ResNet-50:

    latency_p50_ms(b) = overhead_ms + max(κ_fw · b · F / (η · P),  W / BW)

- ``F``: FLOPs of one forward at batch 1 (``catalogs/imagenet-arch-stats.json``, counted
  with torch's FlopCounterMode); ``W``: fp16 weight bytes (2 × parameters);
- ``P``: the device's published peak fp16/bf16 TFLOPS; ``BW``: its memory bandwidth;
- ``η`` (efficiency) and ``overhead_ms`` are solved from two published ResNet-50 figures per
  device — batch-1 latency and throughput at a large batch (``catalogs/accelerators.yaml``);
- ``κ_fw``: compute-time factor of a framework relative to the calibrated one (torch eager
  fp16 vs TensorRT);
- ``latency_p99_ms = p50 × p99_over_p50``; ``load_latency_ms = start_ms(framework) + fp32
  artifact bytes / disk rate``; ``memory_mb = runtime_mb + fp16 weights + batch-max
  activations`` (activations ≈ 4 bytes × FLOPs/1000 per item, a coarse rule).

Every row says ``source=modeled:<model_version>-calibrated-<calibration model>-published``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infaas_core.errors import ConfigError
from infaas_real.profiling.artifacts import REPO_ROOT
from infaas_real.profiling.run import variant_name

ACCELERATORS_PATH = REPO_ROOT / "catalogs" / "accelerators.yaml"
STATS_PATH = REPO_ROOT / "catalogs" / "imagenet-arch-stats.json"


@dataclass(frozen=True, slots=True)
class Calibrated:
    """One device after calibration."""

    name: str
    overhead_ms: float
    efficiency: float
    peak_tflops: float
    memory_gb_per_s: float


def calibrate(name: str, spec: Mapping[str, Any], gflops: float) -> Calibrated:
    """Solve overhead and efficiency from batch-1 latency and large-batch throughput."""
    cal = spec["calibration"]
    b = int(cal["batch"])
    t1 = float(cal["batch1_ms"])
    tb = b * 1000.0 / float(cal["throughput_per_s"])
    per_item_ms = (tb - t1) / (b - 1)
    if per_item_ms <= 0 or per_item_ms >= t1:
        raise ConfigError(f"devices.{name}.calibration", "needs batch1_ms < batch latency and a positive slope")
    overhead = t1 - per_item_ms
    efficiency = gflops * 1e9 / (float(spec["peak_tflops"]) * 1e12 * per_item_ms / 1000.0)
    return Calibrated(name, overhead, efficiency, float(spec["peak_tflops"]), float(spec["memory_gb_per_s"]))


def latency_ms(dev: Calibrated, gflops: float, weight_bytes: float, batch: int, factor: float) -> float:
    compute = factor * batch * gflops * 1e9 / (dev.efficiency * dev.peak_tflops * 1e12) * 1000.0
    memory = weight_bytes / (dev.memory_gb_per_s * 1e9) * 1000.0
    return dev.overhead_ms + max(compute, memory)


def modeled_rows(accuracies: Mapping[str, float], task: str, *,
                 accelerators: Path = ACCELERATORS_PATH, stats: Path = STATS_PATH) -> list[dict[str, Any]]:  # fmt: skip
    """Profile rows for every (architecture with stats and accuracy) × device × framework × max_batch."""
    cfg = yaml.safe_load(accelerators.read_text())
    arch_stats = json.loads(stats.read_text())
    cal_model = cfg["calibration_model"]
    source = f"modeled:{cfg['model_version']}-calibrated-{cal_model}-published"
    ratio = float(cfg["p99_over_p50"])
    rows: list[dict[str, Any]] = []
    for dev_name, spec in cfg["devices"].items():
        dev = calibrate(dev_name, spec, float(arch_stats[cal_model]["gflops"]))
        for arch, acc in accuracies.items():
            if arch not in arch_stats:
                continue
            gflops = float(arch_stats[arch]["gflops"])
            params = float(arch_stats[arch]["params_m"]) * 1e6
            w16 = 2.0 * params
            for fw, factor in spec["frameworks"].items():
                load_ms = float(spec["start_ms"][fw]) + 4.0 * params / (float(cfg["disk_gb_per_s"]) * 1e9) * 1000
                for mb in spec["max_batches"]:
                    act_mb = 4.0 * gflops * 1e9 / 1000.0 * mb / 2**20
                    mem_mb = float(spec["runtime_mb"]) + w16 / 2**20 + act_mb
                    name = variant_name(arch, fw, dev_name, 1, mb)
                    for b in (x for x in spec["batches"] if x <= mb):
                        p50 = latency_ms(dev, gflops, w16, b, float(factor))
                        rows.append({
                            "variant": name, "model": arch, "task": task, "framework": fw,
                            "hardware": dev_name, "cores": 1, "max_batch": mb, "batch": b,
                            "latency_p50_ms": round(p50, 4), "latency_p99_ms": round(p50 * ratio, 4),
                            "load_latency_ms": round(load_ms, 1), "memory_mb": round(mem_mb, 1),
                            "accuracy": round(acc, 5), "source": source,
                        })  # fmt: skip
    return rows
