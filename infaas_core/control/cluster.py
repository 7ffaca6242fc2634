"""The cluster as the control layer keeps it: workers, instances, the view, and what every
action means. Both backends (and the snapshot view tests build) are this one class plus a
:class:`Mechanism` that does the work: the simulator's queues, the server's processes.

Contract per action (preconditions -> effect; else a refusal, counted in :attr:`Cluster.refused`
under the reason given here; a backend never invents or reinterprets an action):

``LoadVariant(variant, worker, n)``
    variant in the catalog, ``n >= 1``, worker RUNNING, ``n`` replicas fit
    (:mod:`~infaas_core.control.resources`) -> if the worker holds the variant (not
    unloading), ``n`` replicas join that instance; else a new instance, LOADING until the
    mechanism reports its first replica ready. Resources are taken at once.
    Refusals: ``load_unknown_variant``, ``load_unservable`` (the mechanism reported the
    variant unservable: :meth:`Cluster.variant_unservable`), ``load_bad_replicas``,
    ``load_worker_not_running``, ``load_<Unfit>`` (``load_no_free_cores``...).
``LoadAndRoute(variant, worker)`` (per query)
    the worker holds the variant (not unloading) -> route there, nothing is loaded (INFaaS:
    the worker loads a variant only if it does not have it); else ``LoadVariant(variant,
    worker, 1)`` and route to the new instance. A refused load refuses the query
    (``no capacity``: a dropped query, a violation).
``Route(instance)`` (per query)
    the instance exists and is not unloading -> its queue. Refusals: ``route_unknown_instance``,
    ``route_instance_unloading``.
``UnloadVariant(instance, n)``
    the instance exists, is not unloading, ``n >= 1`` -> ``n < replicas``: that many replicas
    leave now (their resources are free at once; a batch in service finishes); else the whole
    instance is UNLOADING: it takes no queries, drains its queue, keeps its resources until the
    mechanism reports it gone. Refusals: ``unload_unknown_instance``, ``unload_bad_replicas``.
``AddWorker(type)``
    a known type below its ``max_workers`` (live workers of any state count) and admitted by
    the mechanism -> a STARTING worker (RUNNING after the type's ``startup_s``); it costs from
    now. Refusals: ``add_worker_unknown_type``, ``add_worker_at_max``, the mechanism's reason.
``RemoveWorker(worker)``
    a live worker not already stopping -> STOPPING: every instance unloads; gone (and no
    longer costing) when the last one is. Refusals: ``remove_worker_unknown``,
    ``remove_worker_stopping``.
``SetFlags`` / ``SetScaleDown``
    a live instance / worker -> its flags. Refusals: ``set_flags_unknown_instance``,
    ``set_scale_down_unknown_worker``.

A worker lost (the mechanism's report, not an action): :meth:`Cluster.worker_lost` retires a
worker whose machine or process died without a ``RemoveWorker`` at once — its instances are
gone with their resources, the worker stops costing, it is counted in ``counts``
(``workers_lost``, ``instances_lost``) and the policy sees it gone from the next read on
(the next window at the latest). Queries that were in flight there are the mechanism's to
retry or fail explicitly.

``version`` increases on every change selection may read.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from infaas_core.actions import (
    Action,
    AddWorker,
    LoadAndRoute,
    LoadVariant,
    RemoveWorker,
    Route,
    SetFlags,
    SetScaleDown,
    UnloadVariant,
)  # fmt: skip
from infaas_core.catalog import Catalog
from infaas_core.control.observe import (
    ObservationConfig,
    Observed,
    WindowCounters,
    close_window,
    utilisation,
)
from infaas_core.control.resources import Free, capacity
from infaas_core.metrics import InstanceCostMeter, instance_cost_rate_usd_per_s
from infaas_core.model import ClusterSpec, InstanceType, Variant
from infaas_core.view import InstanceState, WorkerState


class InstanceMechanism(Protocol):
    """The backend's side of one instance (a queue, processes)."""

    @property
    def queue_len(self) -> int:
        """Queries waiting or in service right now."""
        ...

    @property
    def last_arrival_s(self) -> float:
        """When a query was last routed here (-inf if never)."""
        ...


class Mechanism(Protocol):
    """What a backend does when the control layer has decided. Every method is called only
    after the preconditions hold; the mechanism reports back through :class:`Cluster`'s
    ``worker_ready`` / ``instance_ready`` / ``instance_gone``, and ``worker_lost`` when a
    worker dies on its own."""

    def admit_worker(self, itype: InstanceType) -> str | None:
        """A refusal reason if this backend cannot host one more worker of ``itype``."""
        ...

    def start_worker(self, w: Worker, startup_s: float) -> None:
        """Bring the machine up; call ``cluster.worker_ready(w)`` after ``startup_s``."""
        ...

    def stop_worker(self, w: Worker) -> None:
        """The worker is gone (no instance left): release the machine."""
        ...

    def start_instance(self, inst: Instance) -> InstanceMechanism:
        """Start ``inst.replicas`` replicas; call ``cluster.instance_ready(inst)`` once one serves."""
        ...

    def add_replicas(self, inst: Instance, n: int) -> None: ...

    def remove_replicas(self, inst: Instance, n: int) -> None:
        """Retire ``n`` replicas (fewer than the instance has)."""
        ...

    def start_unload(self, inst: Instance) -> None:
        """Take no more queries, drain, stop; call ``cluster.instance_gone(inst)`` when done."""
        ...

    def collect(self, now_s: float) -> None:
        """Bring every instance's :class:`WindowCounters` up to ``now_s`` (a window closes)."""
        ...


class Instance:
    """A variant loaded on a worker (implements :class:`~infaas_core.view.InstanceView`)."""

    __slots__ = (
        "_cluster", "batch", "busy_s", "counters", "id", "interfered", "loaded_s", "mech",
        "observed_latency_ms", "overloaded", "rate_qps", "replicas", "slo_ms", "state", "variant",
        "worker", "worker_id",
    )  # fmt: skip

    def __init__(self, iid: int, variant: Variant, worker: Worker, replicas: int, cluster: Cluster) -> None:
        self.id = iid
        self.variant = variant
        self.worker = worker
        self.worker_id = worker.id
        self.state = InstanceState.LOADING
        self.replicas = replicas
        self.overloaded = False
        self.interfered = False
        self.loaded_s = cluster.now_s
        self.counters = WindowCounters()
        self.rate_qps = 0.0
        self.observed_latency_ms = 0.0
        self.batch = 0.0
        self.slo_ms = math.inf
        self.busy_s = 0.0
        self.mech: Any = None
        self._cluster = cluster

    @property
    def queue_len(self) -> int:
        return int(self.mech.queue_len) if self.mech is not None else 0

    @queue_len.setter
    def queue_len(self, n: int) -> None:  # hand-built views only (a snapshot queue holds a number)
        self.mech.queue_len = n

    @property
    def idle_s(self) -> float:
        last = self.mech.last_arrival_s if self.mech is not None else -math.inf
        return self._cluster.now_s - max(last, self.loaded_s)

    def publish(self, o: Observed) -> None:
        self.rate_qps, self.observed_latency_ms, self.batch = o.rate_qps, o.observed_latency_ms, o.batch
        self.slo_ms, self.busy_s = o.slo_ms, o.busy_s

    def observed(self) -> Observed:
        return Observed(self.rate_qps, self.observed_latency_ms, self.batch, self.slo_ms, self.busy_s)


class Worker:
    """One machine (implements :class:`~infaas_core.view.WorkerView`)."""

    __slots__ = (
        "added_s", "free", "id", "instance_type", "instances", "removed_s", "scale_down_to_cpu",
        "started_s", "state", "utilization",
    )  # fmt: skip

    def __init__(self, wid: int, itype: InstanceType, added_s: float, startup_s: float) -> None:
        self.id = wid
        self.instance_type = itype
        self.state = WorkerState.STARTING if startup_s > 0 else WorkerState.RUNNING
        self.added_s = added_s
        self.started_s = added_s + startup_s
        self.removed_s = math.nan
        self.free: Free = capacity(itype)
        self.instances: list[Instance] = []
        self.utilization: dict[str, float] = dict.fromkeys(itype.device_classes, 0.0)
        self.scale_down_to_cpu: frozenset[str] = frozenset()

    @property
    def free_cores(self) -> int:
        return int(self.free.cores)

    @free_cores.setter
    def free_cores(self, n: int) -> None:  # tests shape hand-built views with it
        self.free.cores = float(n)

    @property
    def free_memory_mb(self) -> float:
        return self.free.memory_mb

    @property
    def free_accelerator_memory_mb(self) -> dict[str, float]:
        return self.free.accelerator_memory_mb

    def holding(self, variant: str) -> Instance | None:
        """This worker's instance of ``variant`` that still takes queries, if any."""
        for inst in self.instances:
            if inst.variant.name == variant and inst.state is not InstanceState.UNLOADING:
                return inst
        return None

    def cost_usd(self, until_s: float) -> float:
        end = until_s if math.isnan(self.removed_s) else min(self.removed_s, until_s)
        return max(end - self.added_s, 0.0) * self.instance_type.price_usd_per_s


_EMPTY: tuple[Instance, ...] = ()


class Cluster:
    """The view every policy reads and the one place actions take effect."""

    def __init__(self, catalog: Catalog, spec: ClusterSpec, observation: ObservationConfig | None,
                 clock: Callable[[], float], mechanism: Mechanism) -> None:
        self.catalog = catalog
        self.cluster = spec
        self.observation = observation
        self._clock = clock
        self.mechanism = mechanism
        self.version = 0
        self._workers: dict[int, Worker] = {}
        self.gone_workers: list[Worker] = []
        self.instances: dict[int, Instance] = {}
        self._by_variant: dict[str, list[Instance]] = {}
        self._by_model: dict[str, list[Instance]] = {}
        self.refused: Counter[str] = Counter()
        self.unservable: dict[str, str] = {}
        """Variant -> why the mechanism cannot serve it (its replicas kept dying, its artifact
        cannot be built): a load of it is refused (``load_unservable``) until the mechanism
        reports it servable again; policies read it through the view."""
        self.decision_trace: list[tuple[float, str, str, int, int, str | None]] = []
        """Every action applied, in order: (time s, kind, variant (or instance type), worker id,
        replicas, refusal reason or None). Kinds: load, load_and_route (a query's load), unload,
        add_worker, remove_worker, and flag_* / scale_down_to_cpu when they change a flag."""
        self.counts: Counter[str] = Counter()
        self.peak_workers: Counter[str] = Counter()
        self._next_worker = 0
        self._next_instance = 0
        self.instance_cost = InstanceCostMeter()
        """The paper's per-instance cost (§6.2), integrated as replicas come and go."""

    # -- ClusterView ---------------------------------------------------------------------
    @property
    def now_s(self) -> float:
        return self._clock()

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers.values())

    def worker(self, worker_id: int) -> Worker:
        try:
            return self._workers[worker_id]
        except KeyError:
            raise KeyError(f"no live worker {worker_id}") from None

    def instances_of(self, variant: str) -> Sequence[Instance]:
        return self._by_variant.get(variant, _EMPTY)

    def instances_of_model(self, model: str) -> Sequence[Instance]:
        return self._by_model.get(model, _EMPTY)

    def bump(self) -> int:
        """Mark a change selection may read (drops cached decisions); returns the version."""
        self.version += 1
        return self.version

    def count_of_type(self, name: str) -> int:
        return sum(1 for w in self._workers.values() if w.instance_type.name == name)

    # -- start ---------------------------------------------------------------------------
    def add_initial_workers(self) -> None:
        """The cluster's ``initial_workers``, running from now (no start-up delay)."""
        for t in self.cluster.instance_types:
            for _ in range(self.cluster.initial_count(t.name)):
                why = self.mechanism.admit_worker(t)
                if why is not None:
                    raise ValueError(f"cluster.initial_workers.{t.name}: {why}")
                self._new_worker(t, 0.0)

    # -- actions -------------------------------------------------------------------------
    def apply(self, actions: Sequence[Action]) -> list[str | None]:
        """Carry out ``actions`` in order; the refusal reason of each (``None``: done)."""
        return [self.apply_one(a) for a in actions]

    def apply_one(self, a: Action) -> str | None:
        v0 = self.version  # decision trace: flag actions are logged only when they change something
        if isinstance(a, LoadVariant):
            why = self._load(a.variant, a.worker_id, a.replicas)[1]
        elif isinstance(a, UnloadVariant):
            inst = self.instances.get(a.instance_id)
            unloaded = (inst.variant.name, inst.worker.id) if inst is not None else ("", -1)
            why = self._unload(a.instance_id, a.replicas)
            self.decision_trace.append((self.now_s, "unload", *unloaded, a.replicas, why))
        elif isinstance(a, AddWorker):
            why = self._add_worker(a.instance_type)
        elif isinstance(a, RemoveWorker):
            why = self._remove_worker(a.worker_id)
        elif isinstance(a, SetFlags):
            why = self._set_flags(a)
        elif isinstance(a, SetScaleDown):
            why = self._set_scale_down(a)
        else:
            why = f"unknown_action_{type(a).__name__}"
        if why is not None:
            self.refused[why] += 1
        self._trace(a, why, v0)
        return why

    def _trace(self, a: Action, why: str | None, v0: int) -> None:
        """One entry of :attr:`decision_trace` for an applied (or refused) action."""
        t = self.now_s
        if isinstance(a, LoadVariant):
            self.decision_trace.append((t, "load", a.variant, a.worker_id, a.replicas, why))
        elif isinstance(a, AddWorker):
            self.decision_trace.append((t, "add_worker", a.instance_type, -1 if why else self._next_worker - 1, 1, why))
        elif isinstance(a, RemoveWorker):
            self.decision_trace.append((t, "remove_worker", "", a.worker_id, 1, why))
        elif why is not None or self.version != v0:  # SetFlags / SetScaleDown that changed a flag
            if isinstance(a, SetFlags):
                inst = self.instances.get(a.instance_id)
                kind = "flag_" + ("overloaded" if a.overloaded else "interfered" if a.interfered else "clear")
                self.decision_trace.append((t, kind, inst.variant.name if inst else "",
                                            inst.worker.id if inst else -1, 0, why))
            elif isinstance(a, SetScaleDown):
                self.decision_trace.append((t, "scale_down_to_cpu", ",".join(sorted(a.models)), a.worker_id, 0, why))

    def route(self, d: Route | LoadAndRoute) -> tuple[Instance | None, str | None]:
        """Where a query decided ``d`` goes: ``(instance, None)``, or ``(None, refusal)``."""
        if type(d) is Route:
            inst = self.instances.get(d.instance_id)
            why = ("route_unknown_instance" if inst is None
                   else "route_instance_unloading" if inst.state is InstanceState.UNLOADING else None)
            if why is not None:
                self.refused[why] += 1
                return None, why
            return inst, None
        assert isinstance(d, LoadAndRoute)
        w = self._workers.get(d.worker_id)
        held = w.holding(d.variant) if w is not None else None
        if held is not None:
            return held, None
        inst, why = self._load(d.variant, d.worker_id, 1)
        self.decision_trace.append((self.now_s, "load_and_route", d.variant, d.worker_id, 1, why))
        if why is not None:
            self.refused[why] += 1
        return inst, why

    def _load(self, name: str, worker_id: int, replicas: int) -> tuple[Instance | None, str | None]:
        if name not in self.catalog:
            return None, "load_unknown_variant"
        if name in self.unservable:
            return None, "load_unservable"
        if replicas < 1:
            return None, "load_bad_replicas"
        w = self._workers.get(worker_id)
        if w is None or w.state is not WorkerState.RUNNING:
            return None, "load_worker_not_running"
        v = self.catalog.get(name)
        unfit = w.free.unfit(w.instance_type, v, replicas)
        if unfit is not None:
            return None, f"load_{unfit}"
        w.free.take(v, replicas)
        self._meter(v, w, replicas)
        self.counts["replica_loads"] += replicas
        inst = w.holding(name)
        if inst is not None:
            inst.replicas += replicas
            self.mechanism.add_replicas(inst, replicas)
        else:
            inst = Instance(self._next_instance, v, w, replicas, self)
            self._next_instance += 1
            self.instances[inst.id] = inst
            self._by_variant.setdefault(v.name, []).append(inst)
            self._by_model.setdefault(v.model, []).append(inst)
            w.instances.append(inst)
            self.counts["instance_loads"] += 1
            inst.mech = self.mechanism.start_instance(inst)
        self.version += 1
        return inst, None

    def _unload(self, instance_id: int, replicas: int) -> str | None:
        inst = self.instances.get(instance_id)
        if inst is None or inst.state is InstanceState.UNLOADING:
            return "unload_unknown_instance"
        if replicas < 1:
            return "unload_bad_replicas"
        if replicas >= inst.replicas:
            self._start_unloading(inst)
            return None
        inst.replicas -= replicas
        inst.worker.free.take(inst.variant, -replicas)
        self._meter(inst.variant, inst.worker, -replicas)
        self.counts["replica_unloads"] += replicas
        self.mechanism.remove_replicas(inst, replicas)
        self.version += 1
        return None

    def _start_unloading(self, inst: Instance) -> None:
        inst.state = InstanceState.UNLOADING
        self.counts["instance_unloads"] += 1
        self.version += 1
        self.mechanism.start_unload(inst)

    def _add_worker(self, type_name: str) -> str | None:
        try:
            t = self.cluster.type(type_name)
        except ValueError:
            return "add_worker_unknown_type"
        if self.count_of_type(type_name) >= self.cluster.max_count(type_name):
            return "add_worker_at_max"
        why = self.mechanism.admit_worker(t)
        if why is not None:
            return why
        self._new_worker(t, t.startup_s)
        return None

    def _new_worker(self, t: InstanceType, startup_s: float) -> Worker:
        w = Worker(self._next_worker, t, self.now_s, startup_s)
        self._next_worker += 1
        self._workers[w.id] = w
        self.counts["workers_added"] += 1
        self.peak_workers[t.name] = max(self.peak_workers[t.name], self.count_of_type(t.name))
        self.version += 1
        self.mechanism.start_worker(w, startup_s)
        return w

    def _remove_worker(self, worker_id: int) -> str | None:
        w = self._workers.get(worker_id)
        if w is None:
            return "remove_worker_unknown"
        if w.state is WorkerState.STOPPING:
            return "remove_worker_stopping"
        w.state = WorkerState.STOPPING
        self.version += 1
        for inst in list(w.instances):
            if inst.state is not InstanceState.UNLOADING:
                self._start_unloading(inst)
        if not w.instances:
            self._retire(w)
        return None

    def _set_flags(self, a: SetFlags) -> str | None:
        inst = self.instances.get(a.instance_id)
        if inst is None:
            return "set_flags_unknown_instance"
        if (inst.overloaded, inst.interfered) != (a.overloaded, a.interfered):
            inst.overloaded, inst.interfered = a.overloaded, a.interfered
            self.version += 1
        return None

    def _set_scale_down(self, a: SetScaleDown) -> str | None:
        w = self._workers.get(a.worker_id)
        if w is None:
            return "set_scale_down_unknown_worker"
        if w.scale_down_to_cpu != a.models:
            w.scale_down_to_cpu = frozenset(a.models)
            self.version += 1
        return None

    # -- reports from the mechanism ------------------------------------------------------
    def variant_unservable(self, name: str, reason: str) -> None:
        """The mechanism cannot serve ``name`` (one line why): loads of it are refused from now on."""
        if self.unservable.get(name) != reason:
            self.unservable[name] = reason
            self.version += 1

    def variant_servable(self, name: str) -> None:
        """An instance of ``name`` served after all: it may be loaded again."""
        if self.unservable.pop(name, None) is not None:
            self.version += 1

    def worker_ready(self, w: Worker) -> None:
        if w.state is WorkerState.STARTING:
            w.state = WorkerState.RUNNING
            self.version += 1

    def instance_ready(self, inst: Instance) -> None:
        if inst.state is InstanceState.LOADING:
            inst.state = InstanceState.READY
            self.version += 1

    def instance_gone(self, inst: Instance) -> None:
        """An unloading instance has drained and stopped: its resources are free."""
        if self.instances.pop(inst.id, None) is None:
            return
        self._drop(inst)
        w = inst.worker
        if w.state is WorkerState.STOPPING and not w.instances:
            self._retire(w)

    def worker_lost(self, w: Worker) -> None:
        """The mechanism lost ``w`` (its process or machine died): retire it at once, with
        every instance on it (gone, resources freed); counted as ``workers_lost`` and
        ``instances_lost``. A worker already gone is ignored."""
        if self._workers.get(w.id) is not w:
            return
        w.state = WorkerState.STOPPING
        for inst in list(w.instances):
            if self.instances.pop(inst.id, None) is not None:
                self._drop(inst)
                self.counts["instances_lost"] += 1
        self.counts["workers_lost"] += 1
        self._retire(w)

    def _drop(self, inst: Instance) -> None:
        """Forget ``inst`` (already out of :attr:`instances`): free its resources."""
        w = inst.worker
        w.free.take(inst.variant, -inst.replicas)
        self._meter(inst.variant, w, -inst.replicas)
        self._by_variant[inst.variant.name].remove(inst)
        self._by_model[inst.variant.model].remove(inst)
        w.instances.remove(inst)
        self.version += 1

    def _retire(self, w: Worker) -> None:
        w.removed_s = self.now_s
        del self._workers[w.id]
        self.gone_workers.append(w)
        self.counts["workers_removed"] += 1
        self.version += 1
        self.mechanism.stop_worker(w)

    # -- observation ---------------------------------------------------------------------
    def close_window(self, window_s: float) -> None:
        """End an observation window: publish every instance's statistics and every worker's
        utilisation from the counts the mechanism reports, then start new counts."""
        obs = self.observation
        if obs is None:
            raise ValueError("this cluster view was built without an observation config")
        self.mechanism.collect(self.now_s)
        for inst in self.instances.values():
            c = inst.counters
            inst.publish(close_window(inst.observed(), c, window_s, obs.divisor(inst.variant.hardware)))
            inst.counters = WindowCounters()
        for w in self._workers.values():
            w.utilization = utilisation(w.instance_type, ((i.variant, i.busy_s) for i in w.instances), window_s,
                                        obs.gpu_utilisation, w.free_accelerator_memory_mb)
        self.version += 1

    # -- accounting ----------------------------------------------------------------------
    def cost_usd(self, until_s: float) -> float:
        return sum(w.cost_usd(until_s) for w in (*self.gone_workers, *self._workers.values()))

    def cost_instance_usd(self, until_s: float) -> float:
        """The paper's per-instance cost (:func:`~infaas_core.metrics.instance_cost_rate_usd_per_s`):
        each replica's memory share of its worker's type times the price, from its load until it is
        gone, since ``instance_cost.since_s``."""
        return self.instance_cost.total_usd(until_s)

    def _meter(self, v: Variant, w: Worker, replicas: int) -> None:
        self.instance_cost.change(self.now_s, instance_cost_rate_usd_per_s(v, w.instance_type, replicas))

    def observable(self) -> dict[str, Any]:
        """What a policy can see, as plain data (the contract tests compare backends on it)."""
        return {
            "version_positive": self.version > 0,
            "refused": dict(sorted(self.refused.items())),
            "workers": [
                {
                    "id": w.id, "type": w.instance_type.name, "state": str(w.state),
                    "utilization": {d: round(u, 6) for d, u in sorted(w.utilization.items())},
                    "free_cores": w.free_cores, "free_memory_mb": round(w.free_memory_mb, 3),
                    "free_accelerator_memory_mb": {d: round(m, 3) for d, m in sorted(w.free_accelerator_memory_mb.items())},
                    "scale_down_to_cpu": sorted(w.scale_down_to_cpu),
                    "instances": [
                        {
                            "id": i.id, "variant": i.variant.name, "state": str(i.state),
                            "replicas": i.replicas, "overloaded": i.overloaded, "interfered": i.interfered,
                            "rate_qps": round(i.rate_qps, 6),
                            "observed_latency_ms": round(i.observed_latency_ms, 6),
                            "batch": round(i.batch, 6), "slo_ms": i.slo_ms if math.isinf(i.slo_ms) else round(i.slo_ms, 6),
                        }
                        for i in w.instances
                    ],
                }
                for w in self._workers.values()
            ],
        }
