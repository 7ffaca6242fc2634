"""Workers and the resource model: what fits where, what it costs, and applying actions.

Resource model (shared with the policies, see ``infaas_core/view_snapshot.py``):

- a CPU variant replica occupies ``variant.cores`` vCPUs exclusively and ``memory_mb`` of
  host memory;
- an accelerator variant replica occupies ``memory_mb`` of its device class's accelerator
  memory (a worker's devices of one class are pooled: ``count * memory per device``);
- accelerator replicas on one worker share the devices' compute (processor sharing at
  the stats-window scale): when the nominal busy time of a device class over the last
  stats window exceeds ``devices * window``, its service times stretch by that ratio
  (``sim.accelerator_sharing``). CPU replicas never share.

A worker costs its instance type's price from the moment it is added (initial workers
from t = 0) until it is removed. An action that does not fit (capacity, a worker that is
not running, a worker cap) is refused and counted by reason; the backend never invents
actions of its own.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial

from infaas_core.actions import (
    Action,
    AddWorker,
    LoadVariant,
    RemoveWorker,
    SetFlags,
    SetScaleDown,
    UnloadVariant,
)  # fmt: skip
from infaas_core.catalog import Catalog
from infaas_core.model import CPU, ClusterSpec, InstanceType, Variant
from infaas_core.view import InstanceState, WorkerState
from infaas_sim.dataplane import Instance
from infaas_sim.latency import LatencyModel

Schedule = Callable[[float, Callable[[], None]], None]


class Worker:
    """One machine; implements :class:`infaas_core.view.WorkerView`."""

    __slots__ = (
        "accel_busy_s", "accel_factor", "added_s", "id", "instance_type", "instances", "removed_s",
        "scale_down_to_cpu", "started_s", "state", "used_accel_mb", "used_cores", "used_memory_mb",
        "utilization",
    )  # fmt: skip

    def __init__(self, wid: int, itype: InstanceType, added_s: float, ready_s: float) -> None:
        self.id = wid
        self.instance_type = itype
        self.state = WorkerState.STARTING if ready_s > added_s else WorkerState.RUNNING
        self.added_s = added_s
        self.started_s = ready_s
        self.removed_s = math.nan
        self.used_cores = 0
        self.used_memory_mb = 0.0
        self.used_accel_mb: dict[str, float] = {d: 0.0 for d in itype.device_classes if d != CPU}
        self.instances: list[Instance] = []
        self.utilization: dict[str, float] = dict.fromkeys(itype.device_classes, 0.0)
        self.scale_down_to_cpu: frozenset[str] = frozenset()
        self.accel_factor: dict[str, float] = dict.fromkeys(self.used_accel_mb, 1.0)
        self.accel_busy_s: dict[str, float] = dict.fromkeys(self.used_accel_mb, 0.0)

    @property
    def free_cores(self) -> int:
        return self.instance_type.vcpus - self.used_cores

    @property
    def free_memory_mb(self) -> float:
        return self.instance_type.memory_gb * 1024.0 - self.used_memory_mb

    @property
    def free_accelerator_memory_mb(self) -> Mapping[str, float]:
        t = self.instance_type
        return {d: t.accelerator_count(d) * t.accelerator_memory_mb(d) - used for d, used in self.used_accel_mb.items()}

    def fits(self, variant: Variant, replicas: int) -> str | None:
        """``None`` if ``replicas`` more replicas fit, else the refusal reason."""
        if not self.instance_type.offers(variant.hardware):
            return "hardware_not_offered"
        if variant.is_cpu:
            if variant.cores * replicas > self.free_cores:
                return "no_free_cores"
            if variant.memory_mb * replicas > self.free_memory_mb:
                return "no_free_memory"
        elif variant.memory_mb * replicas > self.free_accelerator_memory_mb[variant.hardware]:
            return "no_free_accelerator_memory"
        return None

    def reserve(self, variant: Variant, replicas: int) -> None:
        """Take (``replicas`` > 0) or give back (< 0) the resources of replicas."""
        if variant.is_cpu:
            self.used_cores += variant.cores * replicas
            self.used_memory_mb += variant.memory_mb * replicas
        else:
            self.used_accel_mb[variant.hardware] += variant.memory_mb * replicas

    def cost_usd(self, until_s: float) -> float:
        end = until_s if math.isnan(self.removed_s) else min(self.removed_s, until_s)
        return max(end - self.added_s, 0.0) * self.instance_type.price_usd_per_s


class ClusterState:
    """Workers and instances, the view version, and the action semantics."""

    def __init__(self, catalog: Catalog, spec: ClusterSpec, model: LatencyModel, schedule: Schedule,
                 clock: list[float]) -> None:
        self.catalog = catalog
        self.spec = spec
        self.model = model
        self.schedule = schedule
        self.clock = clock  # clock[0] is the view's now_s
        self.version = 0
        self.workers: dict[int, Worker] = {}
        self.gone_workers: list[Worker] = []
        self.instances: dict[int, Instance] = {}
        self.by_variant: dict[str, list[Instance]] = {}
        self.by_model: dict[str, list[Instance]] = {}
        self.refused: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.peak_workers: Counter[str] = Counter()
        self._tables: dict[str, tuple[list[float], list[float]]] = {}
        self.on_instance_removed: Callable[[Instance], None] = lambda inst: None  # the engine flushes it
        self.recheck_s = 0.01  # how soon to look again at an unloading instance that still has queries
        self._next_worker = 0
        self._next_instance = 0
        for t in spec.instance_types:
            for _ in range(spec.initial_count(t.name)):
                self._add_worker(t, 0.0, startup_s=0.0)

    # -- queries by the view ---------------------------------------------------------------
    def live_workers(self) -> Sequence[Worker]:
        return list(self.workers.values())

    def count_of_type(self, name: str) -> int:
        return sum(1 for w in self.workers.values() if w.instance_type.name == name)

    # -- actions ---------------------------------------------------------------------------
    def apply(self, actions: Sequence[Action], at_s: float) -> None:
        for a in actions:
            if isinstance(a, LoadVariant):
                self.load(a.variant, a.worker_id, a.replicas, at_s)
            elif isinstance(a, UnloadVariant):
                self.unload(a.instance_id, a.replicas, at_s)
            elif isinstance(a, AddWorker):
                self.add_worker(a.instance_type, at_s)
            elif isinstance(a, RemoveWorker):
                self.remove_worker(a.worker_id, at_s)
            elif isinstance(a, SetFlags):
                inst = self.instances.get(a.instance_id)
                if inst is None:
                    self.refused["set_flags_unknown_instance"] += 1
                elif (inst.overloaded, inst.interfered) != (a.overloaded, a.interfered):
                    inst.overloaded, inst.interfered = a.overloaded, a.interfered
                    self.version += 1
            elif isinstance(a, SetScaleDown):
                w = self.workers.get(a.worker_id)
                if w is None:
                    self.refused["set_scale_down_unknown_worker"] += 1
                elif w.scale_down_to_cpu != a.models:
                    w.scale_down_to_cpu = frozenset(a.models)
                    self.version += 1
            else:  # pragma: no cover - the Action union is closed
                self.refused[f"unknown_action_{type(a).__name__}"] += 1

    def load(self, name: str, worker_id: int, replicas: int, at_s: float) -> Instance | None:
        """Load ``replicas`` replicas of ``name`` on a worker; ``None`` (and a counted
        refusal) if it does not fit. Replicas serve from ``at_s + load latency``."""
        if name not in self.catalog:
            self.refused["load_unknown_variant"] += 1
            return None
        w = self.workers.get(worker_id)
        if w is None or w.state is not WorkerState.RUNNING:
            self.refused["load_worker_not_running"] += 1
            return None
        if replicas < 1:
            self.refused["load_bad_replicas"] += 1
            return None
        v = self.catalog.get(name)
        why = w.fits(v, replicas)
        if why is not None:
            self.refused[f"load_{why}"] += 1
            return None
        w.reserve(v, replicas)
        ready_s = at_s + v.load_latency_ms / 1000.0
        inst = next((i for i in w.instances if i.variant.name == name and i.state is not InstanceState.UNLOADING), None)
        if inst is None:
            inst = self._new_instance(v, w, at_s)
            self.counts["instance_loads"] += 1
            self.schedule(ready_s, partial(self._ready, inst))
        self.counts["replica_loads"] += replicas
        for _ in range(replicas):
            inst.servers.append((ready_s, 0))
        # a replica added at ready_s may be later than busy ones; keep the heap valid
        inst.servers.sort()
        self.version += 1
        return inst

    def _new_instance(self, v: Variant, w: Worker, at_s: float) -> Instance:
        tables = self._tables.get(v.name)
        if tables is None:
            tables = self._tables[v.name] = self.model.tables(v)
        inst = Instance(self._next_instance, v, w, tables, self.clock)
        inst.loaded_s = at_s
        if not v.is_cpu:
            inst.factor = w.accel_factor[v.hardware]
        self._next_instance += 1
        self.instances[inst.id] = inst
        self.by_variant.setdefault(v.name, []).append(inst)
        self.by_model.setdefault(v.model, []).append(inst)
        w.instances.append(inst)
        return inst

    def _ready(self, inst: Instance) -> None:
        if inst.state is InstanceState.LOADING:
            inst.state = InstanceState.READY
            self.version += 1

    def unload(self, instance_id: int, replicas: int, at_s: float) -> None:
        """Remove replicas; the ones freeing first go, each releasing its resources when
        its batch in service ends. At zero the instance drains its queue, then unloads."""
        inst = self.instances.get(instance_id)
        if inst is None or inst.state is InstanceState.UNLOADING:
            self.refused["unload_unknown_instance"] += 1
            return
        if replicas >= len(inst.servers):
            self._start_unloading(inst, at_s)
            return
        self.counts["replica_unloads"] += replicas
        inst.servers.sort()
        gone, inst.servers[:] = inst.servers[:replicas], inst.servers[replicas:]
        for free, _ in gone:
            self.schedule(max(free, at_s), partial(inst.worker.reserve, inst.variant, -1))
        self.version += 1

    def _start_unloading(self, inst: Instance, at_s: float) -> None:
        inst.state = InstanceState.UNLOADING
        self.counts["instance_unloads"] += 1
        self.version += 1
        self.schedule(max(at_s, inst.drained_at_s if math.isfinite(inst.drained_at_s) else at_s),
                      lambda: self._try_finish_unload(inst))

    def _try_finish_unload(self, inst: Instance) -> None:
        """Called at (or after) the drain time; the engine re-arms it while queries wait."""
        drained = inst.drained_at_s
        now = self.clock[0]
        if drained > now:
            # queries still wait: look again when the next replica frees (at least recheck_s on)
            nxt = drained if math.isfinite(drained) else max(min(f for f, _ in inst.servers), now + self.recheck_s)
            self.schedule(nxt, lambda: self._try_finish_unload(inst))
            return
        w = inst.worker
        w.reserve(inst.variant, -len(inst.servers))
        self.on_instance_removed(inst)
        del self.instances[inst.id]
        self.by_variant[inst.variant.name].remove(inst)
        self.by_model[inst.variant.model].remove(inst)
        w.instances.remove(inst)
        self.version += 1
        if w.state is WorkerState.STOPPING and not w.instances:
            self._worker_gone(w, now)

    def add_worker(self, type_name: str, at_s: float) -> None:
        try:
            t = self.spec.type(type_name)
        except ValueError:
            self.refused["add_worker_unknown_type"] += 1
            return
        if self.count_of_type(type_name) >= self.spec.max_count(type_name):
            self.refused["add_worker_at_max"] += 1
            return
        self._add_worker(t, at_s, t.startup_s)

    def _add_worker(self, t: InstanceType, at_s: float, startup_s: float) -> Worker:
        w = Worker(self._next_worker, t, at_s, at_s + startup_s)
        self._next_worker += 1
        self.workers[w.id] = w
        self.counts["workers_added"] += 1
        n = self.count_of_type(t.name)
        self.peak_workers[t.name] = max(self.peak_workers[t.name], n)
        if w.state is WorkerState.STARTING:
            self.schedule(w.started_s, lambda: self._worker_ready(w))
        self.version += 1
        return w

    def _worker_ready(self, w: Worker) -> None:
        if w.state is WorkerState.STARTING:
            w.state = WorkerState.RUNNING
            self.version += 1

    def remove_worker(self, worker_id: int, at_s: float) -> None:
        w = self.workers.get(worker_id)
        if w is None or w.state is WorkerState.STOPPING:
            self.refused["remove_worker_unknown"] += 1
            return
        w.state = WorkerState.STOPPING
        self.version += 1
        for inst in list(w.instances):
            if inst.state is not InstanceState.UNLOADING:
                self._start_unloading(inst, at_s)
        if not w.instances:
            self._worker_gone(w, at_s)

    def _worker_gone(self, w: Worker, at_s: float) -> None:
        w.removed_s = at_s
        del self.workers[w.id]
        self.gone_workers.append(w)
        self.counts["workers_removed"] += 1
        self.version += 1

    # -- accounting ------------------------------------------------------------------------
    def cost_usd(self, until_s: float) -> float:
        return sum(w.cost_usd(until_s) for w in (*self.gone_workers, *self.workers.values()))

    def update_utilization(self, window_s: float, sharing: bool) -> None:
        """Busy fraction per device class over the stats window just ended; set the
        accelerator stretch for the next window (the instances' ``busy_s`` is reset)."""
        for w in self.workers.values():
            cpu_busy = 0.0
            acc = dict.fromkeys(w.accel_busy_s, 0.0)
            for inst in w.instances:
                v = inst.variant
                if v.is_cpu:
                    cpu_busy += inst.busy_s * v.cores
                else:
                    acc[v.hardware] += inst.busy_s
                inst.busy_s = 0.0
            t = w.instance_type
            w.utilization[CPU] = min(cpu_busy / (t.vcpus * window_s), 1.0) if window_s > 0 else 0.0
            for d, busy in acc.items():
                cap = t.accelerator_count(d) * window_s
                demand = busy / cap if cap > 0 else 0.0
                w.utilization[d] = min(demand, 1.0)
                w.accel_factor[d] = max(demand, 1.0) if sharing else 1.0
            for inst in w.instances:
                if not inst.variant.is_cpu:
                    inst.factor = w.accel_factor[inst.variant.hardware]
