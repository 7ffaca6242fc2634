"""INFaaS worker monitor: Overloaded / Interfered flags and the "GPU idle, use CPU" signal.

Source: ``query_executor.cc`` ``qpsMonitor`` (lines 522-785, every 1 s; INFAAS.md §3.1)
and paper §4 Fig. 4 (the instance state machine: Overloaded when demand reaches capacity,
Interfered when latency exceeds the profile under contention).

Per ready instance, with ``inf_lat`` = profiled latency at the observed mean batch (>= 1),
``cap = 1000 / inf_lat`` and ``qps_rep`` = observed rate per replica:

- set when ``(latency > f_lat * inf_lat and qps_rep > f_qps * cap)`` or
  ``queue_len > f_q * replicas * cap``;
- unset when ``queue_len < f_q * replicas * cap and latency < f_unset * inf_lat``;
- otherwise keep the previous flags (hysteresis).

The factors come in three classes (``default``: CPU with >= 2 replicas, Inferentia;
``gpu``, whose latency factor is ``min(fast_lat_cap, fast_lat_numerator_ms / inf_lat)`` when
``inf_lat < fast_below_ms``; ``cpu_single_replica``).

The code has one bit. We split its cause (our choice, docs/policies.md): the queue rule,
or inflated latency while the rate per replica reaches ``saturation_fraction`` of the
profiled throughput at the observed batch, means demand >= capacity -> **overloaded**;
inflated latency at a rate below that means something else slows the instance ->
**interfered**. Selection avoids both.

Scale-down to CPU (lines 744-753): a model whose accelerator instances on a worker are all
idle relative to loose SLOs (``slo_ms > slo_factor * inf_lat and qps < qps_factor * cap``)
while that worker runs none of its CPU variants is flagged; selection then prefers CPU
variants of that model for loose-SLO queries.

The monitor keeps no clock and no state: flags live in the view (the backend applies the
returned :class:`~infaas_core.actions.SetFlags` / :class:`~infaas_core.actions.SetScaleDown`,
which are returned only when something changes).
"""

from __future__ import annotations

from dataclasses import dataclass

from infaas_core.actions import Action, SetFlags, SetScaleDown
from infaas_core.model import CPU
from infaas_core.policies.common import family
from infaas_core.policies.config import require
from infaas_core.view import ClusterView, InstanceState, InstanceView, WorkerState


@dataclass(frozen=True, slots=True)
class Factors:
    lat_factor: float
    qps_factor: float
    queue_factor: float
    unset_lat_factor: float


@dataclass(frozen=True, slots=True)
class GpuFactors:
    lat_factor: float
    fast_below_ms: float
    fast_lat_numerator_ms: float
    fast_lat_cap: float
    qps_factor: float
    queue_factor: float
    unset_lat_factor: float


@dataclass(frozen=True, slots=True)
class ScaleDownRule:
    slo_factor: float
    qps_factor: float


@dataclass(frozen=True, slots=True)
class ScaleDownConfig:
    gpu: ScaleDownRule
    inferentia: ScaleDownRule


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    default: Factors
    gpu: GpuFactors
    cpu_single_replica: Factors
    saturation_fraction: float
    scale_down: ScaleDownConfig

    def validate(self, key: str) -> None:
        require(self.saturation_fraction > 0, f"{key}.saturation_fraction", "must be > 0")


def profiled_latency_ms(inst: InstanceView) -> float:
    """Profile latency at the observed mean batch (clamped to 1..max_batch, interpolated)."""
    v = inst.variant
    b = min(max(inst.batch, 1.0), float(v.max_batch))
    lo = int(b)
    table = v.p50_ms_by_batch
    if lo >= v.max_batch:
        return table[-1]
    t = b - lo
    return table[lo - 1] * (1.0 - t) + table[lo] * t


class Monitor:
    def __init__(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg

    def factors(self, inst: InstanceView, inf_lat: float) -> tuple[float, float, float, float]:
        """``(f_lat, f_qps, f_q, f_unset)`` for this instance's class."""
        fam = family(inst.variant.hardware)
        if fam == "gpu":
            g = self.cfg.gpu
            f_lat = min(g.fast_lat_cap, g.fast_lat_numerator_ms / inf_lat) if inf_lat < g.fast_below_ms else g.lat_factor
            return f_lat, g.qps_factor, g.queue_factor, g.unset_lat_factor
        f = self.cfg.cpu_single_replica if (fam == "cpu" and inst.replicas <= 1) else self.cfg.default
        return f.lat_factor, f.qps_factor, f.queue_factor, f.unset_lat_factor

    def verdict(self, inst: InstanceView) -> tuple[bool, bool]:
        """New ``(overloaded, interfered)`` for one ready instance."""
        inf_lat = profiled_latency_ms(inst)
        f_lat, f_qps, f_q, f_unset = self.factors(inst, inf_lat)
        cap = 1000.0 / inf_lat
        reps = max(inst.replicas, 1)
        qps_rep = inst.rate_qps / reps
        queue_bound = f_q * reps * cap
        slow = inst.observed_latency_ms > f_lat * inf_lat and qps_rep > f_qps * cap
        queued = inst.queue_len > queue_bound
        if slow or queued:
            batch = min(max(inst.batch, 1.0), float(inst.variant.max_batch))
            saturated = qps_rep >= self.cfg.saturation_fraction * batch * cap
            overloaded = queued or saturated
            return overloaded, not overloaded
        if inst.queue_len < queue_bound and inst.observed_latency_ms < f_unset * inf_lat:
            return False, False
        return inst.overloaded, inst.interfered

    def run(self, view: ClusterView) -> list[Action]:
        out: list[Action] = []
        sd = self.cfg.scale_down
        for w in view.workers:
            if w.state is not WorkerState.RUNNING:
                continue
            cpu_models: set[str] = set()
            accel: dict[str, bool] = {}  # model -> all its accelerator instances idle
            for inst in w.instances:
                if inst.state is not InstanceState.READY:
                    continue
                o, i = self.verdict(inst)
                if o != inst.overloaded or i != inst.interfered:
                    out.append(SetFlags(inst.id, o, i))
                v = inst.variant
                if v.hardware == CPU:
                    cpu_models.add(v.model)
                    continue
                rule = sd.inferentia if family(v.hardware) == "inferentia" else sd.gpu
                inf_lat = profiled_latency_ms(inst)
                idle = inst.slo_ms > rule.slo_factor * inf_lat and inst.rate_qps < rule.qps_factor * 1000.0 / inf_lat
                accel[v.model] = accel.get(v.model, True) and idle
            flagged = frozenset(m for m, idle in accel.items() if idle and m not in cpu_models)
            if flagged != w.scale_down_to_cpu:
                out.append(SetScaleDown(w.id, flagged))
        return out
