"""Plain, mutable implementations of the view protocols (:mod:`infaas_core.view`).

Tests build cluster views by hand with these; a backend may use them too (the real
server keeps one :class:`SnapshotView` and updates it). Nothing here computes anything
clever: free capacity is what the caller sets, or what :meth:`SnapshotView.add_worker` /
:meth:`SnapshotView.add_instance` derive from the resource model both backends follow
(a CPU replica takes ``cores`` vCPUs and ``memory_mb`` host memory; an accelerator
replica takes ``memory_mb`` of its device class's accelerator memory).

Call :meth:`SnapshotView.bump` after changing anything selection reads, so cached
decisions are dropped (``version`` is the cache key of selection). Add and remove workers
and instances through the methods: they keep the lookups ``worker(id)``,
``instances_of(variant)`` and ``instances_of_model(model)`` O(1), as a backend's are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infaas_core.catalog import Catalog
from infaas_core.model import CPU, ClusterSpec, InstanceType, Variant
from infaas_core.view import InstanceState, WorkerState


@dataclass(slots=True, eq=False)
class SnapshotInstance:
    id: int
    variant: Variant
    worker_id: int
    state: InstanceState = InstanceState.READY
    replicas: int = 1
    queue_len: int = 0
    rate_qps: float = 0.0
    latency_ms: float = 0.0
    batch: float = 0.0
    slo_ms: float = math.inf
    idle_s: float = 0.0
    overloaded: bool = False
    interfered: bool = False


@dataclass(slots=True, eq=False)
class SnapshotWorker:
    id: int
    instance_type: InstanceType
    state: WorkerState = WorkerState.RUNNING
    started_s: float = 0.0
    utilization: dict[str, float] = field(default_factory=dict)
    free_cores: int = 0
    free_memory_mb: float = 0.0
    free_accelerator_memory_mb: dict[str, float] = field(default_factory=dict)
    instances: list[SnapshotInstance] = field(default_factory=list)
    scale_down_to_cpu: frozenset[str] = frozenset()


@dataclass(slots=True, eq=False)
class SnapshotView:
    catalog: Catalog
    cluster: ClusterSpec
    now_s: float = 0.0
    version: int = 0
    workers: list[SnapshotWorker] = field(default_factory=list)
    _next_instance_id: int = 0
    _by_id: dict[int, SnapshotWorker] = field(default_factory=dict, repr=False)
    _by_variant: dict[str, list[SnapshotInstance]] = field(default_factory=dict, repr=False)
    _by_model: dict[str, list[SnapshotInstance]] = field(default_factory=dict, repr=False)

    # -- protocol ------------------------------------------------------------------------
    def worker(self, worker_id: int) -> SnapshotWorker:
        try:
            return self._by_id[worker_id]
        except KeyError:
            raise KeyError(f"no worker {worker_id}") from None

    def instances_of(self, variant: str) -> list[SnapshotInstance]:
        return self._by_variant.get(variant, [])

    def instances_of_model(self, model: str) -> list[SnapshotInstance]:
        return self._by_model.get(model, [])

    # -- building ------------------------------------------------------------------------
    def bump(self) -> int:
        """Mark a change selection may read (drops cached decisions); returns the version."""
        self.version += 1
        return self.version

    def add_worker(
        self,
        instance_type: str,
        *,
        state: WorkerState = WorkerState.RUNNING,
        utilization: dict[str, float] | None = None,
    ) -> SnapshotWorker:
        """A worker of ``instance_type`` with all its capacity free (utilisation 0 unless given)."""
        t = self.cluster.type(instance_type)
        util = dict.fromkeys(t.device_classes, 0.0)
        util.update(utilization or {})
        w = SnapshotWorker(
            id=max((w.id for w in self.workers), default=-1) + 1,
            instance_type=t,
            state=state,
            started_s=self.now_s,
            utilization=util,
            free_cores=t.vcpus,
            free_memory_mb=t.memory_gb * 1024.0,
            free_accelerator_memory_mb={
                d: t.accelerator_memory_mb(d) * n for d, n in t.accelerators if n > 0
            },
        )
        self.workers.append(w)
        self._by_id[w.id] = w
        self.bump()
        return w

    def add_instance(
        self,
        worker_id: int,
        variant: str,
        *,
        replicas: int = 1,
        state: InstanceState = InstanceState.READY,
        **observed: float | int | bool,
    ) -> SnapshotInstance:
        """Load ``replicas`` of ``variant`` on a worker, taking its cores and memory.

        ``observed`` sets the monitor fields (``rate_qps``, ``latency_ms``, ``queue_len``...).
        """
        w = self.worker(worker_id)
        v = self.catalog.get(variant)
        inst = SnapshotInstance(
            id=self._next_instance_id, variant=v, worker_id=worker_id, state=state, replicas=replicas
        )
        for k, val in observed.items():
            if not hasattr(inst, k):
                raise AttributeError(f"SnapshotInstance has no field '{k}'")
            setattr(inst, k, val)
        self._next_instance_id += 1
        take_resources(w, v, replicas)
        w.instances.append(inst)
        self._by_variant.setdefault(v.name, []).append(inst)
        self._by_model.setdefault(v.model, []).append(inst)
        self.bump()
        return inst

    def remove_instance(self, instance_id: int) -> None:
        for w in self.workers:
            for inst in w.instances:
                if inst.id == instance_id:
                    take_resources(w, inst.variant, -inst.replicas)
                    w.instances.remove(inst)
                    self._by_variant[inst.variant.name].remove(inst)
                    self._by_model[inst.variant.model].remove(inst)
                    self.bump()
                    return
        raise KeyError(f"no instance {instance_id}")


def take_resources(w: SnapshotWorker, v: Variant, replicas: int) -> None:
    """Reserve (or, with a negative count, release) the resources of ``replicas`` replicas."""
    if v.hardware == CPU:
        w.free_cores -= v.cores * replicas
        w.free_memory_mb -= v.memory_mb * replicas
    else:
        acc = w.free_accelerator_memory_mb
        acc[v.hardware] = acc.get(v.hardware, 0.0) - v.memory_mb * replicas
