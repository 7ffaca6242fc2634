"""INFaaS VM-level autoscaler: add or remove workers, every period (INFAAS.md §3.3).

Sources: paper §4.2.3 (the three scale-out rules, "we empirically set the threshold to
80%") and code ``master_vm_daemon.cc`` (2 s loop, 15-iteration back-off, scale-in after
15 consecutive low evaluations, the shutdown thresholds) with ``start_infaas.sh``
(CPUGPU_UTIL_THRESH=80, INFERENTIA_UTIL_THRESH=70).

Scale out (at most one worker per evaluation, only after ``backoff_s`` since the last
action; never past ``max_workers``; starting workers count toward the total):

1. **utilisation**: every live worker of a type is running (none still starting) and
   above ``util_threshold`` of its family on its primary device class (its accelerator, or
   ``cpu``) -> one more of that type. Types are tried CPU, then Inferentia, then GPU (the
   code's priority); under ``type_choice: original`` only the configured types (below).
   A GPU's utilisation is its memory occupancy by default (``observation.gpu_utilisation:
   memory``, the code's ``gpu_daemon.cc``; computed by :mod:`infaas_core.control.observe`);
2. **interfered platform**: every ready instance on a hardware class is interfered;
3. **overloaded workers**: more than ``overloaded_worker_fraction`` of running workers
   host an overloaded instance -> the hardware most of those instances use;
4. **selection pressure**: a feasible query found no room to load its variant within the
   last ``pressure_window_s`` and after the newest worker offering that hardware came up
   (the dispatcher's ``vmscale`` request in the code).

Rules 2-4 add, unless a worker offering that hardware is already starting, with
``type_choice: original`` (the code: ``master_vm_daemon.cc`` starts its one configured
``machine_type_cpu`` / ``_gpu`` / ``_inferentia``, ``start_infaas.sh`` m5.2xlarge /
p3.2xlarge / inf1.2xlarge) the configured type of the hardware — per primary device class
the first type listed in the cluster config that has initial workers, else the first
listed that may run (:func:`configured_types`), so CPU pressure never adds an accelerator
machine — and with ``cheapest`` (our earlier rule) the cheapest type offering the hardware;
either must be able to hold one replica of each variant concerned (the core resource
model's ``can_host``).

Scale in, after ``sustained_evaluations`` consecutive low evaluations and the back-off:
low means the code's conditions (min GPU <= gpu_min and min CPU <= cpu_min; avg GPU <=
gpu_avg and avg CPU <= cpu_avg; avg Inferentia <= inferentia_avg and avg CPU <= cpu_avg),
plus, with ``remove_cpu_workers``, avg CPU <= cpu_avg over CPU-only workers (our
extension: the code never removes CPU workers). The victim is the least-utilised running
worker of a type above its initial count (GPU first, then Inferentia, then CPU); the
cluster never drops below its initial workers. The back-off and the sustained count are the
shared rules of :mod:`~infaas_core.policies.rules`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from infaas_core.actions import Action, AddWorker, RemoveWorker
from infaas_core.control.resources import can_host
from infaas_core.model import CPU, ClusterSpec, InstanceType, Variant
from infaas_core.policies.common import FAMILIES, Family, family
from infaas_core.policies.config import require
from infaas_core.policies.rules import Cooldown, Sustained
from infaas_core.view import ClusterView, InstanceState, WorkerState, WorkerView


@dataclass(frozen=True, slots=True)
class ScaleOutConfig:
    util_threshold: dict[str, float]
    overloaded_worker_fraction: float
    pressure_window_s: float

    def validate(self, key: str) -> None:
        require(set(self.util_threshold) == set(FAMILIES), f"{key}.util_threshold", f"needs exactly {FAMILIES}")


@dataclass(frozen=True, slots=True)
class ScaleInConfig:
    sustained_evaluations: int
    cpu_min: float
    gpu_min: float
    cpu_avg: float
    gpu_avg: float
    inferentia_avg: float
    remove_cpu_workers: bool


@dataclass(frozen=True, slots=True)
class VmAutoscalerConfig:
    backoff_s: float
    type_choice: Literal["original", "cheapest"]
    scale_out: ScaleOutConfig
    scale_in: ScaleInConfig

    def validate(self, key: str) -> None:
        require(self.backoff_s >= 0, f"{key}.backoff_s", "must be >= 0")
        require(self.scale_in.sustained_evaluations >= 1, f"{key}.scale_in.sustained_evaluations", "must be >= 1")


def primary_class(t: InstanceType) -> str:
    """The device class a worker type is for: its (first) accelerator, else ``cpu``."""
    return next((d for d, n in t.accelerators if n > 0), CPU)


def configured_types(cluster: ClusterSpec) -> dict[str, InstanceType]:
    """The original's one machine type per platform (``master_vm_daemon.cc`` takes
    ``machine_type_cpu`` / ``_gpu`` / ``_inferentia`` on its command line, ``start_infaas.sh``:
    m5.2xlarge, p3.2xlarge, inf1.2xlarge, and its initial workers are of those types): per
    primary device class (a type's accelerator, ``cpu`` for a type without one), the first
    type listed in the cluster config that starts with workers of it, else the first listed,
    among types that may run (``max_workers`` > 0). A CPU worker is then always a CPU-only
    type, never an accelerator machine that happens to be cheaper."""
    out: dict[str, InstanceType] = {}
    for started in (True, False):
        for t in cluster.instance_types:
            d = primary_class(t)
            if d in out or cluster.max_count(t.name) <= 0:
                continue
            if not started or cluster.initial_count(t.name) > 0:
                out[d] = t
    return out


def utilisation(w: WorkerView) -> float:
    return w.utilization.get(primary_class(w.instance_type), 0.0)


class VmAutoscaler:
    def __init__(self, cfg: VmAutoscalerConfig, cluster: ClusterSpec) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.backoff = Cooldown(cfg.backoff_s)
        """After any worker added or removed."""
        self.scale_in = Sustained(evaluations=cfg.scale_in.sustained_evaluations)
        """Consecutive evaluations that found a worker to remove."""
        self.configured = configured_types(cluster)
        """Primary device class -> the one type the original starts for it (``type_choice: original``)."""

    def run(self, view: ClusterView, pressure: Mapping[str, float] | None = None) -> list[Action]:
        live = [w for w in view.workers if w.state is not WorkerState.STOPPING]
        running = [w for w in live if w.state is WorkerState.RUNNING]
        counts = Counter(w.instance_type.name for w in live)
        add = self._scale_out(view, live, running, counts, pressure or {})
        victim = None if add is not None else self._scale_in_victim(running, counts)
        now = view.now_s
        due = self.scale_in.observe(victim is not None, now)
        if not self.backoff.ready(now):
            return []
        if add is not None:
            self.backoff.mark(now)
            self.scale_in.reset()
            return [AddWorker(add)]
        if victim is not None and due:
            self.backoff.mark(now)
            self.scale_in.reset()
            return [RemoveWorker(victim.id)]
        return []

    # -- out -----------------------------------------------------------------------------
    def _room(self, t: InstanceType, counts: Counter[str]) -> bool:
        return counts[t.name] < self.cluster.max_count(t.name)

    def _scale_out(
        self,
        view: ClusterView,
        live: list[WorkerView],
        running: list[WorkerView],
        counts: Counter[str],
        pressure: Mapping[str, float],
    ) -> str | None:
        so = self.cfg.scale_out
        order: dict[Family, int] = {"cpu": 0, "inferentia": 1, "gpu": 2}
        types = self.cluster.instance_types if self.cfg.type_choice == "cheapest" else tuple(self.configured.values())
        for t in sorted(types, key=lambda t: (order[family(primary_class(t))], t.price_usd_per_hour)):
            members = [w for w in live if w.instance_type.name == t.name]
            if not members or not self._room(t, counts):
                continue
            d = primary_class(t)
            limit = so.util_threshold[family(d)]
            if all(w.state is WorkerState.RUNNING and w.utilization.get(d, 0.0) > limit for w in members):
                return t.name
        starting_hw = {
            h for w in live if w.state is WorkerState.STARTING for h in w.instance_type.device_classes
        }
        ready: dict[str, list[Variant]] = {}
        interfered: dict[str, bool] = {}
        overloaded_hw: Counter[str] = Counter()
        overloaded_vs: dict[str, list[Variant]] = {}
        busy_workers = 0
        for w in running:
            any_over = False
            for inst in w.instances:
                if inst.state is not InstanceState.READY:
                    continue
                h = inst.variant.hardware
                ready.setdefault(h, []).append(inst.variant)
                interfered[h] = interfered.get(h, True) and inst.interfered
                if inst.overloaded:
                    any_over = True
                    overloaded_hw[h] += 1
                    overloaded_vs.setdefault(h, []).append(inst.variant)
            busy_workers += any_over
        wanted: list[tuple[str, list[Variant]]] = [(h, ready[h]) for h, all_i in interfered.items() if all_i]
        if running and busy_workers / len(running) > so.overloaded_worker_fraction:
            for h, _ in overloaded_hw.most_common():
                wanted.append((h, overloaded_vs[h]))
        for h, t_s in sorted(pressure.items()):
            # fresh, and newer than the last worker offering h that came up (whose room the
            # query did not see yet)
            newest = max((w.started_s for w in running if w.instance_type.offers(h) and h != CPU), default=-1.0)
            if view.now_s - t_s <= so.pressure_window_s and t_s >= newest:
                wanted.append((h, []))
        for h, vs in wanted:
            if h in starting_hw:
                continue
            cheapest = self._cheapest(h, vs, counts)
            if cheapest is not None:
                return cheapest.name
        return None

    def _cheapest(self, hardware: str, vs: list[Variant], counts: Counter[str]) -> InstanceType | None:
        """The type to add for ``hardware``: the configured one (``original``) or the cheapest
        offering it (``cheapest``), if it has room under ``max_workers`` and can hold the variants."""
        if self.cfg.type_choice == "original":
            t0 = self.configured.get(hardware)
            options: tuple[InstanceType, ...] = () if t0 is None else (t0,)
        else:
            options = self.cluster.types_offering(hardware)  # cheapest first
        for t in options:
            if self._room(t, counts) and all(can_host(t, v) for v in vs):
                return t
        return None

    # -- in ------------------------------------------------------------------------------
    def _scale_in_victim(self, running: list[WorkerView], counts: Counter[str]) -> WorkerView | None:
        si = self.cfg.scale_in
        if not running:
            return None
        cpu = [w.utilization.get(CPU, 0.0) for w in running]
        by_fam: dict[Family, list[WorkerView]] = {"cpu": [], "gpu": [], "inferentia": []}
        for w in running:
            by_fam[family(primary_class(w.instance_type))].append(w)
        avg_cpu = sum(cpu) / len(cpu)
        gpu = [utilisation(w) for w in by_fam["gpu"]]
        inf = [utilisation(w) for w in by_fam["inferentia"]]
        cpu_only = [w.utilization.get(CPU, 0.0) for w in by_fam["cpu"]]
        low: list[Family] = []
        if gpu and (
            (min(gpu) <= si.gpu_min and min(cpu) <= si.cpu_min)
            or (sum(gpu) / len(gpu) <= si.gpu_avg and avg_cpu <= si.cpu_avg)
        ):
            low.append("gpu")
        if inf and sum(inf) / len(inf) <= si.inferentia_avg and avg_cpu <= si.cpu_avg:
            low.append("inferentia")
        if si.remove_cpu_workers and cpu_only and sum(cpu_only) / len(cpu_only) <= si.cpu_avg:
            low.append("cpu")
        for fam in low:
            removable = [
                w
                for w in by_fam[fam]
                if counts[w.instance_type.name] > self.cluster.initial_count(w.instance_type.name)
            ]
            if removable:
                return min(removable, key=lambda w: (utilisation(w), w.utilization.get(CPU, 0.0), -w.id))
        return None
