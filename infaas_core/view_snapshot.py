"""The snapshot view: the control layer's cluster over a mechanism that does nothing by itself.

Tests build views by hand with it (``add_worker`` / ``add_instance`` set any state and
observation directly), and it is the reference implementation of the control contract:
:meth:`SnapshotView.apply` is :class:`~infaas_core.control.cluster.Cluster`'s, so an action
means here exactly what it means in the simulator and the server. Time stands still until a
test sets ``now_s``; loads, start-ups and drains complete when :meth:`SnapshotView.settle`
is called (the simulator's and the server's complete when their clocks say so).

Call :meth:`SnapshotView.bump` after changing by hand anything selection reads, so cached
decisions are dropped (``version`` is the cache key of selection).
"""

from __future__ import annotations

import math
from typing import Any

from infaas_core.catalog import Catalog
from infaas_core.control.cluster import Cluster, Instance, Worker
from infaas_core.control.observe import ObservationConfig
from infaas_core.model import ClusterSpec, InstanceType
from infaas_core.view import InstanceState, WorkerState

SnapshotInstance = Instance
SnapshotWorker = Worker


class SnapshotQueue:
    """An instance's queue in a snapshot: just the numbers a test sets."""

    __slots__ = ("last_arrival_s", "queue_len")

    def __init__(self) -> None:
        self.queue_len = 0
        self.last_arrival_s = -math.inf


class _Pending:
    """The snapshot's mechanism: remembers what would complete later, until ``settle``."""

    def __init__(self) -> None:
        self.cluster: SnapshotView | None = None
        self.starting: list[Worker] = []
        self.loading: list[Instance] = []
        self.unloading: list[Instance] = []

    def admit_worker(self, itype: InstanceType) -> str | None:
        return None

    def start_worker(self, w: Worker, startup_s: float) -> None:
        if startup_s > 0:
            self.starting.append(w)

    def stop_worker(self, w: Worker) -> None:
        pass

    def start_instance(self, inst: Instance) -> SnapshotQueue:
        self.loading.append(inst)
        return SnapshotQueue()

    def add_replicas(self, inst: Instance, n: int) -> None:
        pass

    def remove_replicas(self, inst: Instance, n: int) -> None:
        pass

    def start_unload(self, inst: Instance) -> None:
        self.unloading.append(inst)

    def collect(self, now_s: float) -> None:
        pass  # a test writes the counters itself


class SnapshotView(Cluster):
    """A hand-built cluster view (see the module docstring)."""

    def __init__(self, catalog: Catalog, cluster: ClusterSpec, observation: ObservationConfig | None = None,
                 now_s: float = 0.0) -> None:
        self._pending = _Pending()
        self.now_s_value = now_s
        super().__init__(catalog, cluster, observation, lambda: self.now_s_value, self._pending)
        self._pending.cluster = self

    @property
    def now_s(self) -> float:
        return self.now_s_value

    @now_s.setter
    def now_s(self, t: float) -> None:
        self.now_s_value = t

    # -- building ------------------------------------------------------------------------
    def add_worker(self, instance_type: str, *, state: WorkerState = WorkerState.RUNNING,
                   utilization: dict[str, float] | None = None) -> Worker:
        """A worker of ``instance_type`` with all its capacity free (utilisation 0 unless given)."""
        w = self._new_worker(self.cluster.type(instance_type), 0.0)
        w.state = state
        w.utilization.update(utilization or {})
        return w

    def add_instance(self, worker_id: int, variant: str, *, replicas: int = 1,
                     state: InstanceState = InstanceState.READY, **observed: Any) -> Instance:
        """Load ``replicas`` of ``variant`` on a worker, taking its resources (no fit check:
        a test may overfill). ``observed`` sets the view's fields (``rate_qps``,
        ``observed_latency_ms``, ``batch``, ``slo_ms``, ``queue_len``, flags...)."""
        w = self.worker(worker_id)
        v = self.catalog.get(variant)
        inst = Instance(self._next_instance, v, w, replicas, self)
        self._next_instance += 1
        inst.state = state
        q = inst.mech = SnapshotQueue()
        for k, val in observed.items():
            if k in SnapshotQueue.__slots__:
                setattr(q, k, val)
            elif k in Instance.__slots__ and not k.startswith("_"):
                setattr(inst, k, val)
            else:
                raise AttributeError(f"an instance view has no field '{k}'")
        w.free.take(v, replicas)
        self.instances[inst.id] = inst
        self._by_variant.setdefault(v.name, []).append(inst)
        self._by_model.setdefault(v.model, []).append(inst)
        w.instances.append(inst)
        self.bump()
        return inst

    def remove_instance(self, instance_id: int) -> None:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise KeyError(f"no instance {instance_id}")
        self.instance_gone(inst)

    # -- time ------------------------------------------------------------------------------
    def settle(self) -> None:
        """Complete every start-up, load and drain begun so far."""
        p = self._pending
        starting, loading, unloading = p.starting, p.loading, p.unloading
        p.starting, p.loading, p.unloading = [], [], []
        for w in starting:
            self.worker_ready(w)
        for inst in loading:
            self.instance_ready(inst)
        for inst in unloading:
            self.instance_gone(inst)
