"""Observation: what a policy sees of an instance's last window, computed once for every backend.

A backend's mechanism only *counts* (:class:`WindowCounters`, raw facts of one window);
:func:`close_window` turns the counts into what the view publishes (:class:`Observed`), and
:func:`utilisation` turns busy time into a worker's busy fraction per device class.

Definitions (the same in every backend):

- ``rate_qps``: queries routed to the instance in the window / window length;
- ``observed_latency_ms``: mean latency (arrival to finish, queue included) of the queries
  that *finished* in the window; with none finished, the previous value divided by
  ``observation.latency_decay_divisor[family]`` (INFaaS ``qpsMonitor``: ÷15 on CPU, ÷1.5 on
  GPU and Inferentia, INFAAS.md §3.1), so an idle instance's flag clears after one idle
  window on CPU and after a few on accelerators;
- ``batch``: mean size of the batches that finished in the window (0 if none);
- ``slo_ms``: mean latency SLO of the queries routed in the window (inf if none);
- utilisation of a device class: replica-seconds of service inside the window (CPU
  replicas weighted by their cores) over the class's capacity (vCPUs, or devices) times the
  window, at most 1 — except GPUs under ``observation.gpu_utilisation: memory`` (the
  default, INFaaS's rule: ``gpu_daemon.cc`` ``gpuMonitor`` publishes ``(total - free) /
  total`` of ``cudaMemGetInfo`` as the GPU "utilisation"), where it is the accelerator
  memory the worker's replicas occupy over the device memory (from the worker's free
  capacity, :mod:`infaas_core.control.resources`). ``compute`` applies the busy-time rule
  to GPUs too (our alternative). Inferentia is always busy time (the code counts NeuronCores
  in use, which the resource model does not have).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from infaas_core.errors import ConfigError
from infaas_core.model import CPU, InstanceType, Variant

Family = Literal["cpu", "gpu", "inferentia"]
FAMILIES: tuple[Family, ...] = ("cpu", "gpu", "inferentia")


def family_of(hardware: str) -> Family:
    """``cpu``, ``inferentia`` (a class starting ``inf``) or ``gpu`` (every other accelerator):
    INFaaS keys its constants by these three platforms."""
    if hardware == CPU:
        return "cpu"
    if hardware.startswith("inf"):
        return "inferentia"
    return "gpu"


@dataclass(frozen=True, slots=True)
class ObservationConfig:
    """``policy.observation``: the decay of an idle instance's observed latency per family,
    and what a GPU's utilisation measures."""

    latency_decay_divisor: dict[str, float]
    gpu_utilisation: Literal["memory", "compute"]

    def validate(self, key: str) -> None:
        if set(self.latency_decay_divisor) != set(FAMILIES):
            raise ConfigError(f"{key}.latency_decay_divisor", f"needs exactly the keys {', '.join(FAMILIES)}")
        for fam, d in self.latency_decay_divisor.items():
            if d < 1.0:
                raise ConfigError(f"{key}.latency_decay_divisor.{fam}", "must be >= 1 (a divisor)")

    def divisor(self, hardware: str) -> float:
        return self.latency_decay_divisor[family_of(hardware)]


@dataclass(slots=True)
class WindowCounters:
    """Raw counts of one instance over the current window; the backend's mechanism adds to them."""

    arrivals: int = 0
    slo_sum_ms: float = 0.0  # over arrivals with a finite SLO
    slo_count: int = 0
    completions: int = 0  # queries that finished in the window
    latency_sum_ms: float = 0.0  # their arrival-to-finish latencies
    batches: int = 0  # batches that finished in the window
    batch_items: int = 0  # queries in those batches
    busy_s: float = 0.0  # replica-seconds of service inside the window

    def arrived(self, slo_ms: float) -> None:
        self.arrivals += 1
        if math.isfinite(slo_ms):
            self.slo_sum_ms += slo_ms
            self.slo_count += 1


@dataclass(slots=True)
class Observed:
    """What the view publishes of an instance's last closed window."""

    rate_qps: float = 0.0
    observed_latency_ms: float = 0.0
    batch: float = 0.0
    slo_ms: float = math.inf
    busy_s: float = 0.0


def close_window(prev: Observed, c: WindowCounters, window_s: float, decay_divisor: float) -> Observed:
    """The observation of the window that ``c`` counted (``prev``: the one before)."""
    return Observed(
        rate_qps=c.arrivals / window_s if window_s > 0 else 0.0,
        observed_latency_ms=(c.latency_sum_ms / c.completions if c.completions
                             else prev.observed_latency_ms / decay_divisor),
        batch=c.batch_items / c.batches if c.batches else 0.0,
        slo_ms=c.slo_sum_ms / c.slo_count if c.slo_count else math.inf,
        busy_s=c.busy_s,
    )


def utilisation(itype: InstanceType, busy: Iterable[tuple[Variant, float]], window_s: float,
                gpu_utilisation: Literal["memory", "compute"] = "compute",
                free_accelerator_memory_mb: Mapping[str, float] | None = None) -> dict[str, float]:
    """Utilisation per device class of a worker of ``itype`` whose instances were busy
    ``busy_s`` replica-seconds each (``(variant, busy_s)`` pairs) in a window of ``window_s``;
    with ``gpu_utilisation="memory"`` a GPU class's is its occupied memory fraction instead,
    from the worker's ``free_accelerator_memory_mb`` (required then)."""
    used = dict.fromkeys(itype.device_classes, 0.0)
    for v, busy_s in busy:
        used[v.hardware] = used.get(v.hardware, 0.0) + (busy_s * v.cores if v.hardware == CPU else busy_s)
    out: dict[str, float] = {}
    for d, u in used.items():
        if gpu_utilisation == "memory" and d != CPU and family_of(d) == "gpu":
            if free_accelerator_memory_mb is None:
                raise ValueError("memory utilisation needs the worker's free accelerator memory")
            total = itype.accelerator_memory_mb(d) * itype.accelerator_count(d)
            taken = total - free_accelerator_memory_mb.get(d, total)
            out[d] = min(max(taken / total, 0.0), 1.0) if total > 0 else 0.0
            continue
        cap = (itype.vcpus if d == CPU else itype.accelerator_count(d)) * window_s
        out[d] = min(u / cap, 1.0) if cap > 0 else 0.0
    return out
