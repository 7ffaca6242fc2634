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
- ``fam``: the architecture's compute efficiency relative to ResNet-50 (``family_efficiency``
  in ``accelerators.yaml``, from published same-harness throughput; depthwise / SE networks
  reach 0.13–0.31 of ResNet-50's FLOP rate), so the compute term is
  ``κ_fw · b · F / (η · P · fam)``;
- ``latency_p99_ms = p50 × p99_over_p50``; ``load_latency_ms = start_ms(framework) + fp32
  artifact bytes / disk rate``; ``memory_mb = runtime_mb + fp16 weights + batch-max
  activations`` (activations ≈ 4 bytes × FLOPs/1000 per item, a coarse rule).

Every row says ``source=modeled:<model_version>-calibrated-<calibration model>-published;
family-factor=<fam>(<basis>)``.

:func:`cpu_thread_rows` models 4- and 8-core CPU variants from measured 1- and 2-thread rows
(an Amdahl fit per architecture and framework); see its docstring.
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


def latency_ms(dev: Calibrated, gflops: float, weight_bytes: float, batch: int, factor: float,
               family: float = 1.0) -> float:  # fmt: skip
    compute = factor * batch * gflops * 1e9 / (dev.efficiency * dev.peak_tflops * 1e12 * family) * 1000.0
    memory = weight_bytes / (dev.memory_gb_per_s * 1e9) * 1000.0
    return dev.overhead_ms + max(compute, memory)


def family_factor(cfg: Mapping[str, Any], arch: str) -> tuple[float, str]:
    """``(factor, basis)`` of ``arch`` from ``cfg["family_efficiency"]`` (1.0 if the table is absent)."""
    table = cfg.get("family_efficiency")
    if not table:
        return 1.0, "none"
    entry = table.get("architectures", {}).get(arch) or table["default"]
    factor = float(entry["factor"])
    if not 0.0 < factor <= 1.0:
        raise ConfigError(f"family_efficiency.{arch}.factor", f"must be in (0, 1], got {factor}")
    return factor, str(entry["basis"])


def modeled_rows(accuracies: Mapping[str, float], task: str, *,
                 accelerators: Path = ACCELERATORS_PATH, stats: Path = STATS_PATH) -> list[dict[str, Any]]:  # fmt: skip
    """Profile rows for every (architecture with stats and accuracy) × device × framework × max_batch."""
    cfg = yaml.safe_load(accelerators.read_text())
    arch_stats = json.loads(stats.read_text())
    cal_model = cfg["calibration_model"]
    base_source = f"modeled:{cfg['model_version']}-calibrated-{cal_model}-published"
    ratio = float(cfg["p99_over_p50"])
    rows: list[dict[str, Any]] = []
    for dev_name, spec in cfg["devices"].items():
        dev = calibrate(dev_name, spec, float(arch_stats[cal_model]["gflops"]))
        for arch, acc in accuracies.items():
            if arch not in arch_stats:
                continue
            gflops = float(arch_stats[arch]["gflops"])
            params = float(arch_stats[arch]["params_m"]) * 1e6
            fam, basis = family_factor(cfg, arch)
            source = f"{base_source};family-factor={fam:g}({basis})"
            w16 = 2.0 * params
            for fw, factor in spec["frameworks"].items():
                load_ms = float(spec["start_ms"][fw]) + 4.0 * params / (float(cfg["disk_gb_per_s"]) * 1e9) * 1000
                for mb in spec["max_batches"]:
                    act_mb = 4.0 * gflops * 1e9 / 1000.0 * mb / 2**20
                    mem_mb = float(spec["runtime_mb"]) + w16 / 2**20 + act_mb
                    name = variant_name(arch, fw, dev_name, 1, mb)
                    for b in (x for x in spec["batches"] if x <= mb):
                        p50 = latency_ms(dev, gflops, w16, b, float(factor), fam)
                        rows.append({
                            "variant": name, "model": arch, "task": task, "framework": fw,
                            "hardware": dev_name, "cores": 1, "max_batch": mb, "batch": b,
                            "latency_p50_ms": round(p50, 4), "latency_p99_ms": round(p50 * ratio, 4),
                            "load_latency_ms": round(load_ms, 1), "memory_mb": round(mem_mb, 1),
                            "accuracy": round(acc, 5), "source": source,
                        })  # fmt: skip
    return rows


CPU_MODELED_CORES: tuple[int, ...] = (4, 8)
CPU_THREADS_SOURCE = "modeled:cpu-threads-amdahl("


def amdahl_serial_fraction(t1: float, t2: float) -> float:
    """Serial fraction ``s`` of ``t(n) = t1 · (s + (1 - s) / n)`` through (1, t1) and (2, t2),
    clamped to [0, 1] (a 2-thread run slower than 1 thread — a disturbed measurement — gives
    s = 1: no speed-up assumed; a super-linear one gives s = 0)."""
    return min(1.0, max(0.0, 2.0 * t2 / t1 - 1.0))


def cpu_thread_rows(rows: list[dict[str, Any]], cores: tuple[int, ...] = CPU_MODELED_CORES) -> list[dict[str, Any]]:
    """Modeled CPU rows with ``cores`` threads from measured 1- and 2-thread rows.

    Per (model, framework, task): ``s`` = the median over the batches measured with both 1 and
    2 threads of :func:`amdahl_serial_fraction` of their p50s; then for every 1-thread row,
    ``p50(n) = p50(1) · (s + (1 - s) / n)`` and p99 scales by the same factor. Load latency
    and memory are the 1-thread variant's. Since ``s`` is in [0, 1], more cores are never
    slower. Each row's source says ``modeled:cpu-threads-amdahl(...)`` with ``s``, the number
    of batches fitted and the measured source it was fitted on.
    """
    import statistics

    by_key: dict[tuple[str, str, str], dict[int, dict[int, float]]] = {}
    for r in rows:
        if r["hardware"] != "cpu" or not str(r["source"]).startswith("measured:"):
            continue
        key = (r["model"], r["framework"], r["task"])
        by_key.setdefault(key, {}).setdefault(int(r["cores"]), {})[int(r["batch"])] = float(r["latency_p50_ms"])
    out: list[dict[str, Any]] = []
    for r in rows:
        if r["hardware"] != "cpu" or int(r["cores"]) != 1 or not str(r["source"]).startswith("measured:"):
            continue
        series = by_key[(r["model"], r["framework"], r["task"])]
        one, two = series.get(1, {}), series.get(2, {})
        common = sorted(set(one) & set(two))
        if not common:
            continue
        s = statistics.median(amdahl_serial_fraction(one[b], two[b]) for b in common)
        for n in cores:
            scale = s + (1.0 - s) / n
            mb = int(r["max_batch"])
            out.append({
                **r,
                "variant": variant_name(r["model"], r["framework"], "cpu", n, mb), "cores": n,
                "latency_p50_ms": round(float(r["latency_p50_ms"]) * scale, 4),
                "latency_p99_ms": round(float(r["latency_p99_ms"]) * scale, 4),
                "source": f"{CPU_THREADS_SOURCE}s={s:.4f};fit-on-{len(common)}-batches-of-"
                          f"measured-1-and-2-thread-p50;{r['source']})",
            })  # fmt: skip
    return out
