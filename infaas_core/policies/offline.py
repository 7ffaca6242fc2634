"""Offline queries: the shared rule of where a batch job runs, and when it may run.

An offline job is many inputs with a task and a minimum accuracy. It has no latency SLO and
runs only on CPU capacity that online queries leave unused. Both backends call these
functions; neither restates the rule.

The original (INFaaS, ../shared/reference/INFAAS.md, "Offline queries", and section 6 item 8):

- **Which variant** [CODE constants.h.templ:36; queryfe_server.cc:1752-1774]: the master
  takes the first variant of the parent whose framework is ``offline_framework = "pytorch"``
  (CPU only). Here, :func:`offline_variant` walks ``catalog.by_task(task)``, which is INFaaS's
  ``gpar_acc_bin`` order (accuracy ascending), keeping the variants that run on CPU, whose
  framework equals ``cfg.framework`` exactly, whose accuracy is at least ``min_accuracy`` and
  whose ``max_batch`` holds one offline batch (``cfg.batch``), and takes the first: the least
  accurate architecture meeting the floor. Our catalogs name the framework with its precision
  (``torch-fp32``), so the configs set ``framework: torch-fp32``: the original's "pytorch on CPU".
  *Our changes:* the original's job names a parent, not a task and an accuracy floor; the walk
  over the task's accuracy order is the use-case form of the same "first match" rule. And the
  original has one pytorch variant per parent, where our catalogs have one per core count and
  maximum batch; among those of equal accuracy the first is the one needing the fewest cores,
  then the smallest ``max_batch`` that holds a batch, then the fastest at ``cfg.batch`` (then
  the name) — offline work is meant for spare capacity, and an 8-core variant would need a
  whole empty worker.
- **Which worker** [CODE queryfe_server.cc:1752-1774]: the running worker with the lowest CPU
  utilisation, CPU-only workers preferred (the original shuffles a list of 10 candidates; here
  ties go to the lower worker id, so runs are deterministic). :func:`offline_worker` also
  requires that the worker holds the variant or has room for one replica of it
  (:mod:`infaas_core.control.resources`).
- **When it runs** [CODE common_model_util.cc:73-76, 1665-1880; INFAAS.md section 3 "If any
  variant is blacklisted, offline jobs on the worker pause"]: the worker runs the job in
  batches of **4** inputs, and only while its CPU utilisation is at most **40%** and no model
  on it is blacklisted. :func:`may_run_offline` is that test; "blacklisted" is the monitor's
  ``overloaded`` or ``interfered`` flag on any instance of the worker.

The constants live in the ``offline:`` block of ``configs/config.yaml`` (simulator) and
``configs/serve.yaml`` (real server); :func:`offline_config_from_mapping` parses either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infaas_core.catalog import Catalog
from infaas_core.control.resources import room_of
from infaas_core.errors import ConfigError
from infaas_core.model import CPU, Variant
from infaas_core.policies.config import parse_config
from infaas_core.view import ClusterView, InstanceState, WorkerState, WorkerView


@dataclass(frozen=True, slots=True)
class OfflineConfig:
    """The ``offline:`` config block (no defaults: the YAML is the default)."""

    max_cpu_utilisation: float
    """Offline batches start only while the worker's CPU utilisation is at most this (0..1)."""
    batch: int
    """Inputs per offline batch."""
    framework: str
    """The one framework offline work uses (a catalog ``framework`` value, CPU only)."""

    def validate(self, key: str) -> None:
        u = self.max_cpu_utilisation
        if not math.isfinite(u) or not 0.0 <= u <= 1.0:
            raise ConfigError(f"{key}.max_cpu_utilisation", f"must be in [0, 1], got {u!r}")
        if self.batch < 1:
            raise ConfigError(f"{key}.batch", f"must be >= 1, got {self.batch!r}")
        if not self.framework.strip():
            raise ConfigError(f"{key}.framework", "must be a non-empty framework name")


def offline_config_from_mapping(data: Mapping[str, Any] | Any, key: str = "offline") -> OfflineConfig:
    """Parse and validate an ``offline:`` mapping; errors name ``key.<field>``."""
    return parse_config(OfflineConfig, data, key)


def offline_variant(
    catalog: Catalog, task: str, min_accuracy: float, cfg: OfflineConfig
) -> Variant | None:
    """The first CPU variant of ``cfg.framework`` for ``task`` meeting ``min_accuracy`` and
    holding a batch of ``cfg.batch``, by (accuracy, cores, max_batch, latency at ``cfg.batch``,
    name); ``None`` if there is none."""
    fits = [
        v
        for v in catalog.by_task(task)
        if v.hardware == CPU
        and v.framework == cfg.framework
        and v.accuracy >= min_accuracy
        and v.max_batch >= cfg.batch
    ]
    if not fits:
        return None
    return min(fits, key=lambda v: (v.accuracy, v.cores, v.max_batch, v.latency_ms(cfg.batch), v.name))


def is_cpu_only(worker: WorkerView) -> bool:
    """The worker's type offers no accelerator."""
    return len(worker.instance_type.device_classes) == 1


def holds(worker: WorkerView, variant: Variant) -> bool:
    """The worker has an instance of ``variant`` that is loading or ready."""
    return any(
        i.variant.name == variant.name and i.state != InstanceState.UNLOADING
        for i in worker.instances
    )


def offline_worker(view: ClusterView, variant: Variant) -> WorkerView | None:
    """The running worker for an offline job of ``variant``: CPU-only workers first, then the
    lowest CPU utilisation, then the lower id; it must hold the variant or have room for one
    replica of it. ``None`` if no running worker qualifies."""
    best: WorkerView | None = None
    best_key: tuple[bool, float, int] | None = None
    for w in view.workers:
        if w.state != WorkerState.RUNNING:
            continue
        if not (holds(w, variant) or room_of(w).fits(w.instance_type, variant)):
            continue
        k = (not is_cpu_only(w), w.utilization.get(CPU, 0.0), w.id)
        if best_key is None or k < best_key:
            best, best_key = w, k
    return best


def flagged(worker: WorkerView) -> bool:
    """Some instance on the worker is blacklisted (the monitor's overloaded or interfered)."""
    return any(i.overloaded or i.interfered for i in worker.instances)


def may_run_offline(worker: WorkerView, cfg: OfflineConfig) -> bool:
    """Offline work may run on ``worker`` now: CPU utilisation at most
    ``cfg.max_cpu_utilisation`` and no instance on it flagged."""
    return worker.utilization.get(CPU, 0.0) <= cfg.max_cpu_utilisation and not flagged(worker)
