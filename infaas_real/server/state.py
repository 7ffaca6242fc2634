"""The server's live state: worker slots ("VMs"), loaded instances, and the policy driving them.

:class:`LiveState` is the :class:`~infaas_core.view.ClusterView` the ``infaas_core`` policy
reads, built over real objects: each :class:`LiveWorker` is a slot of this machine's cores
(and accelerators) of a configured instance type; each instance is an
:class:`~infaas_real.executor.Instance` with its worker processes. The resource model is the
simulator's: a CPU replica takes ``cores`` vCPUs and ``memory_mb`` of host memory, an
accelerator replica ``memory_mb`` of its device's memory. Slots may use at most
``core_budget`` of this machine's cores together.

Observations (rate, latency, batch, SLO, utilisation) are averaged over windows of the
policy's monitor period. The state applies the policy's actions and refuses, with a log
line, those that no longer fit — it never invents actions of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from infaas_core.actions import (
    Action,
    AddWorker,
    Decision,
    LoadAndRoute,
    LoadVariant,
    RemoveWorker,
    Route,
    SetFlags,
    SetScaleDown,
    UnloadVariant,
)
from infaas_core.catalog import Catalog
from infaas_core.errors import BackendError
from infaas_core.model import CPU, ClusterSpec, InstanceType, Requirements, Variant
from infaas_core.policies.base import Policy
from infaas_core.view import InstanceState, WorkerState
from infaas_real.executor import ExecutorSettings, Instance, Served

log = logging.getLogger("infaas_real.server")


@dataclass(frozen=True, slots=True)
class StateSettings:
    core_budget: int
    stats_window_s: float = 1.0  # used when the policy has no monitor period
    startup_scale: float = 1.0  # multiplies an instance type's startup_s (0 = instant slots)


class LiveWorker:
    """A slot of this machine (implements ``WorkerView``)."""

    def __init__(self, wid: int, itype: InstanceType, started_s: float, running: bool) -> None:
        self.id = wid
        self.instance_type = itype
        self.state = WorkerState.RUNNING if running else WorkerState.STARTING
        self.started_s = started_s
        self.stopped_s: float | None = None
        self.utilization: dict[str, float] = dict.fromkeys(itype.device_classes, 0.0)
        self.instances: list[Instance] = []
        self.scale_down_to_cpu: frozenset[str] = frozenset()

    def _used(self, pred: Any) -> float:
        return sum(pred(i.variant) * i.replicas for i in self.instances)

    @property
    def free_cores(self) -> int:
        return self.instance_type.vcpus - int(self._used(lambda v: v.cores if v.is_cpu else 0))

    @property
    def free_memory_mb(self) -> float:
        return self.instance_type.memory_gb * 1024.0 - self._used(lambda v: v.memory_mb if v.is_cpu else 0.0)

    @property
    def free_accelerator_memory_mb(self) -> dict[str, float]:
        t = self.instance_type
        return {
            d: t.accelerator_memory_mb(d) * n - self._used(lambda v, d=d: v.memory_mb if v.hardware == d else 0.0)
            for d, n in t.accelerators
            if n > 0
        }

    def fits(self, v: Variant, replicas: int) -> bool:
        if v.is_cpu:
            return v.cores * replicas <= self.free_cores and v.memory_mb * replicas <= self.free_memory_mb
        return v.memory_mb * replicas <= self.free_accelerator_memory_mb.get(v.hardware, 0.0)


class LiveState:
    """The cluster view over live objects, plus the machinery that applies actions."""

    def __init__(
        self,
        catalog: Catalog,
        cluster: ClusterSpec,
        policy: Policy,
        settings: StateSettings,
        executor: ExecutorSettings,
        clock: Any,
    ) -> None:
        self.catalog = catalog
        self.cluster = cluster
        self.policy = policy
        self.settings = settings
        self.executor = executor
        self._clock = clock
        self.version = 0
        self.workers: list[LiveWorker] = []
        self._instances: dict[int, Instance] = {}
        self._worker_ids = itertools.count(0)
        self._instance_ids = itertools.count(0)
        self._closed_cost_usd = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.window_s = policy.monitor_period_s or settings.stats_window_s

    # -- ClusterView ---------------------------------------------------------------------
    @property
    def now_s(self) -> float:
        now: float = self._clock()
        return now

    def worker(self, worker_id: int) -> LiveWorker:
        for w in self.workers:
            if w.id == worker_id:
                return w
        raise KeyError(f"no worker {worker_id}")

    def instances_of(self, variant: str) -> Sequence[Instance]:
        return [i for i in self._instances.values() if i.variant.name == variant]

    def instances_of_model(self, model: str) -> Sequence[Instance]:
        return [i for i in self._instances.values() if i.variant.model == model]

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the initial slots, apply the policy's initial actions, start the periodic parts."""
        for tname, count in self.cluster.initial_workers:
            for _ in range(count):
                if not self._add_worker(tname, instant=True):
                    raise BackendError(
                        f"cluster.initial_workers: {tname} x{count} exceeds server.core_budget={self.settings.core_budget}"
                    )
        self.apply(self.policy.initial_actions(self))
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._every(self.window_s, self._monitor)))
        p = self.policy
        if p.model_autoscale_period_s:
            self._tasks.append(
                loop.create_task(self._every(p.model_autoscale_period_s, lambda: p.autoscale_models(self)))
            )
        if p.vm_autoscale_period_s:
            self._tasks.append(loop.create_task(self._every(p.vm_autoscale_period_s, lambda: p.autoscale_vms(self))))

    @property
    def ready(self) -> bool:
        """Every instance the policy asked for at start has a replica serving."""
        return all(i.state is not InstanceState.LOADING for i in self._instances.values())

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for inst in list(self._instances.values()):
            inst.kill()

    async def _every(self, period_s: float, part: Callable[[], list[Action]]) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                actions = part()
                if actions:
                    self.apply(actions)
            except Exception:  # a policy bug must not stop the server's control loop
                log.exception("periodic policy part failed")

    def _monitor(self) -> list[Action]:
        """Close the observation window, then run the policy's monitor."""
        span = self.window_s
        for inst in self._instances.values():
            inst.roll_window(span)
        for w in self.workers:
            t = w.instance_type
            w.utilization = {d: 0.0 for d in t.device_classes}
            cpu_busy = sum(
                inst.observed.busy_s * inst.variant.cores for inst in w.instances if inst.variant.is_cpu
            )
            w.utilization[CPU] = min(1.0, cpu_busy / (t.vcpus * span)) if t.vcpus else 0.0
            for d, n in t.accelerators:
                if n > 0:
                    acc = sum(inst.observed.busy_s for inst in w.instances if inst.variant.hardware == d)
                    w.utilization[d] = min(1.0, acc / (n * span))
        self.version += 1
        return self.policy.monitor(self) if self.policy.monitor_period_s else []

    # -- per query -----------------------------------------------------------------------
    def decide(self, req: Requirements, app: str | None, batch: int) -> Decision:
        return self.policy.select(req, self, app=app, batch=batch)

    def submit(
        self, decision: Route | LoadAndRoute, x: np.ndarray, slo_ms: float
    ) -> tuple[Instance, list[asyncio.Future[Served]]]:
        """Enqueue on the decided instance (loading it first for ``LoadAndRoute``); a request
        of more rows than the variant's ``max_batch`` is split into chunks that fit."""
        if isinstance(decision, Route):
            inst = self._instances.get(decision.instance_id)
            if inst is None:
                raise BackendError(f"policy routed to instance {decision.instance_id}, which is not loaded")
        else:
            inst = self._load(decision.variant, decision.worker_id, 1, reuse=True)
            if inst is None:
                raise BackendError(f"cannot load {decision.variant} on worker {decision.worker_id}: no room")
        step = inst.variant.max_batch
        if x.shape[0] <= step:
            return inst, [inst.submit(x, slo_ms)]
        futures: list[asyncio.Future[Served]] = []
        try:
            for lo in range(0, x.shape[0], step):
                futures.append(inst.submit(x[lo : lo + step], slo_ms))
        except BackendError:
            for f in futures:
                f.cancel()
            raise
        return inst, futures

    # -- actions -------------------------------------------------------------------------
    def apply(self, actions: Sequence[Action]) -> None:
        for a in actions:
            if isinstance(a, LoadVariant):
                if self._load(a.variant, a.worker_id, a.replicas, reuse=False) is None:
                    log.info("refused %s: does not fit", a)
            elif isinstance(a, UnloadVariant):
                inst = self._instances.get(a.instance_id)
                if inst is not None:
                    inst.remove_replicas(a.replicas)
            elif isinstance(a, AddWorker):
                if not self._add_worker(a.instance_type, instant=False):
                    log.info("refused %s: over max_workers or core budget", a)
            elif isinstance(a, RemoveWorker):
                self._remove_worker(a.worker_id)
            elif isinstance(a, SetFlags):
                inst = self._instances.get(a.instance_id)
                if inst is not None and (inst.overloaded, inst.interfered) != (a.overloaded, a.interfered):
                    inst.overloaded, inst.interfered = a.overloaded, a.interfered
                    self.version += 1
            elif isinstance(a, SetScaleDown):
                try:
                    w = self.worker(a.worker_id)
                except KeyError:
                    continue
                if w.scale_down_to_cpu != a.models:
                    w.scale_down_to_cpu = a.models
                    self.version += 1

    def _load(self, name: str, worker_id: int, replicas: int, *, reuse: bool) -> Instance | None:
        try:
            w = self.worker(worker_id)
            v = self.catalog.get(name)
        except (KeyError, ValueError):
            return None
        if w.state is not WorkerState.RUNNING or not w.instance_type.offers(v.hardware):
            return None
        existing = next((i for i in w.instances if i.variant.name == name and i.state is not InstanceState.UNLOADING), None)
        if existing is not None and reuse and replicas == 1 and existing.replicas >= 1:
            return existing  # LoadAndRoute on a loaded variant: just route
        if not w.fits(v, replicas):
            return None
        if existing is not None:
            existing.add_replicas(replicas)
            return existing
        inst = Instance(next(self._instance_ids), v, w.id, replicas, self.executor, self._clock, self._changed)
        self._instances[inst.id] = inst
        w.instances.append(inst)
        self.version += 1
        return inst

    def _changed(self, inst: Instance) -> None:
        self.version += 1
        if inst.gone and inst.id in self._instances:
            del self._instances[inst.id]
            for w in self.workers:
                if inst in w.instances:
                    w.instances.remove(inst)
                    if w.state is WorkerState.STOPPING and not w.instances:
                        self._retire_worker(w)

    def _cores_in_use(self) -> int:
        return sum(w.instance_type.vcpus for w in self.workers)

    def _add_worker(self, tname: str, *, instant: bool) -> bool:
        t = self.cluster.type(tname)
        count = sum(w.instance_type.name == tname for w in self.workers)
        if count >= self.cluster.max_count(tname) or self._cores_in_use() + t.vcpus > self.settings.core_budget:
            return False
        delay_s = 0.0 if instant else t.startup_s * self.settings.startup_scale
        w = LiveWorker(next(self._worker_ids), t, self.now_s, running=delay_s <= 0)
        self.workers.append(w)
        self.version += 1
        if delay_s > 0:
            asyncio.get_running_loop().call_later(delay_s, self._worker_up, w)
        return True

    def _worker_up(self, w: LiveWorker) -> None:
        if w.state is WorkerState.STARTING:
            w.state = WorkerState.RUNNING
            self.version += 1

    def _remove_worker(self, worker_id: int) -> None:
        try:
            w = self.worker(worker_id)
        except KeyError:
            return
        w.state = WorkerState.STOPPING
        self.version += 1
        if not w.instances:
            self._retire_worker(w)
        for inst in list(w.instances):
            inst.unload()

    def _retire_worker(self, w: LiveWorker) -> None:
        w.stopped_s = self.now_s
        self._closed_cost_usd += (w.stopped_s - w.started_s) * w.instance_type.price_usd_per_s
        self.workers.remove(w)
        self.version += 1

    # -- accounting ----------------------------------------------------------------------
    @property
    def cost_usd(self) -> float:
        now = self.now_s
        return self._closed_cost_usd + sum((now - w.started_s) * w.instance_type.price_usd_per_s for w in self.workers)

    def describe(self) -> dict[str, Any]:
        """A JSON-able snapshot for ``GET /v2/infaas/state`` (debugging, tests, replay cost)."""
        return {
            "policy": self.policy.name,
            "now_s": self.now_s,
            "version": self.version,
            "cost_usd": self.cost_usd,
            "workers": [
                {
                    "id": w.id,
                    "type": w.instance_type.name,
                    "state": str(w.state),
                    "utilization": w.utilization,
                    "free_cores": w.free_cores,
                    "instances": [
                        {
                            "id": i.id,
                            "variant": i.variant.name,
                            "state": str(i.state),
                            "replicas": i.replicas,
                            "live_replicas": i.live_replicas,
                            "pids": i.replica_pids,
                            "queue_len": i.queue_len,
                            "rate_qps": i.rate_qps,
                            "latency_ms": i.latency_ms if math.isfinite(i.latency_ms) else None,
                            "batch": i.batch,
                            "overloaded": i.overloaded,
                        }
                        for i in w.instances
                    ],
                }
                for w in self.workers
            ],
        }
