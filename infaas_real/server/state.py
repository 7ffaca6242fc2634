"""The server's cluster: the control layer's :class:`~infaas_core.control.cluster.Cluster`
over this machine's mechanism.

What the policy observes and what its actions mean are the control layer's
(:mod:`infaas_core.control`), exactly as in the simulator; this module supplies only the
mechanism, :class:`LocalMechanism`:

- a worker ("VM") is a slot of this machine's cores (and accelerators) of a configured
  instance type; slots may use at most ``server.core_budget`` of the cores together (a
  worker beyond it is refused: ``add_worker_no_host_capacity``); a slot comes up after its
  type's ``startup_s`` times ``server.startup_scale`` (0: at once);
- an instance is an :class:`~infaas_real.executor.Instance` with its worker processes; it is
  READY when its first replica serves, and gone when its processes have exited after draining;
- the policy's periodic parts run when the control loop (:mod:`infaas_core.control.loop`)
  says, from one asyncio task on the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from infaas_core.actions import Decision, LoadAndRoute, Route
from infaas_core.catalog import Catalog
from infaas_core.control.cluster import Cluster
from infaas_core.control.cluster import Instance as ViewInstance
from infaas_core.control.cluster import Worker as ViewWorker
from infaas_core.control.loop import ControlLoop
from infaas_core.errors import BackendError
from infaas_core.model import ClusterSpec, InstanceType, Requirements, Variant
from infaas_core.policies.base import Policy, make_policy
from infaas_core.view import InstanceState
from infaas_real.executor import ExecutorSettings, Instance, Served
from infaas_real.server.httplayer import FrontGate

log = logging.getLogger("infaas_real.server")


@dataclass(frozen=True, slots=True)
class StateSettings:
    """The ``server`` keys of configs/serve.yaml that the live state reads (no defaults here:
    the YAML is the default; ``infaas_real.server.config.build_server_settings`` sets each)."""

    core_budget: int
    stats_window_s: float  # used when the policy has no monitor period
    startup_scale: float  # multiplies an instance type's startup_s (0 = instant slots)


class Refused(BackendError):
    """The control layer refused a query's route or load (answered 503, counted as dropped)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"refused: {reason}")


class LocalMechanism:
    """Implements :class:`infaas_core.control.cluster.Mechanism` with local processes."""

    def __init__(self, settings: StateSettings, executor: ExecutorSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.executor = executor
        self.clock = clock
        self.cluster: Cluster | None = None
        self.served: set[int] = set()  # ids of the instances that have had a replica serving
        self.executors: dict[str, ExecutorSettings] = {}  # variant -> its own settings (registered models)

    def _c(self) -> Cluster:
        assert self.cluster is not None, "LocalMechanism used before its cluster was attached"
        return self.cluster

    def admit_worker(self, itype: InstanceType) -> str | None:
        used = sum(w.instance_type.vcpus for w in self._c().workers)
        return "add_worker_no_host_capacity" if used + itype.vcpus > self.settings.core_budget else None

    def start_worker(self, w: ViewWorker, startup_s: float) -> None:
        delay_s = startup_s * self.settings.startup_scale
        if startup_s <= 0:
            return
        if delay_s <= 0:
            self._c().worker_ready(w)
        else:
            asyncio.get_running_loop().call_later(delay_s, self._c().worker_ready, w)

    def stop_worker(self, w: ViewWorker) -> None:
        pass  # a slot holds no process of its own

    def start_instance(self, inst: ViewInstance) -> Instance:
        executor = self.executors.get(inst.variant.name, self.executor)
        return Instance(inst.id, inst.variant, inst.worker_id, inst.replicas, executor, self.clock,
                        lambda ei: self._changed(inst, ei), lambda: inst.counters)

    def _changed(self, inst: ViewInstance, ei: Instance) -> None:
        c = self._c()
        if ei.gone:
            if ei.gave_up is not None:
                c.variant_unservable(inst.variant.name, ei.gave_up)  # its loads are refused from now on
            c.instance_gone(inst)
        elif ei.serving:
            self.served.add(inst.id)
            c.variant_servable(inst.variant.name)
            c.instance_ready(inst)
        c.bump()

    def add_replicas(self, inst: ViewInstance, n: int) -> None:
        inst.mech.add_replicas(n)

    def remove_replicas(self, inst: ViewInstance, n: int) -> None:
        inst.mech.remove_replicas(n)

    def start_unload(self, inst: ViewInstance) -> None:
        inst.mech.unload()

    def collect(self, now_s: float) -> None:
        for inst in self._c().instances.values():
            inst.mech.collect(now_s)

    def worker_facts(self, w: ViewWorker) -> dict[str, Any]:
        """What ``/v2/infaas/state`` adds to a worker (a slot has nothing beyond the view's)."""
        return {}

    def facts(self) -> dict[str, Any]:
        return {"kind": "local"}

    async def close(self) -> None:
        pass  # the instances' processes are killed by LiveState.close


class LiveState(Cluster):
    """The server's view and control: a :class:`Cluster` over :class:`LocalMechanism`."""

    def __init__(
        self,
        catalog: Catalog,
        cluster: ClusterSpec,
        policy: Policy,
        settings: StateSettings,
        executor: ExecutorSettings,
        clock: Any,
        mechanism: Callable[[ExecutorSettings, Callable[[], float]], Any] | None = None,
    ) -> None:
        # the mechanism: this machine's slots, or another backend's (cluster=ray: infaas_real.raycluster)
        mech = LocalMechanism(settings, executor, clock) if mechanism is None else mechanism(executor, clock)
        super().__init__(catalog, cluster, policy.observation, clock, mech)
        mech.cluster = self
        self._mech = mech
        self.policy = policy
        self.settings = settings
        self.window_s = policy.monitor_period_s or settings.stats_window_s
        self.loop = ControlLoop(policy, self, self.window_s)
        self._task: asyncio.Task[None] | None = None
        self._initial: set[int] = set()  # ids of the instances the policy loaded at start
        self.front_gate: FrontGate | None = None  # the HTTP layer's admission, shown in describe()
        self.after_control: list[Callable[[], None]] = []
        """Called after each run of the control loop's due parts (a window closed, the monitor's
        flags set): offline jobs re-check whether they may run (:mod:`infaas_real.server.offline`)."""

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the initial slots, apply the policy's initial actions, start the control loop."""
        try:
            self.loop.start()
        except ValueError as exc:
            raise BackendError(f"{exc} (server.core_budget={self.settings.core_budget})") from None
        self._initial = set(self.instances)
        self._task = asyncio.get_running_loop().create_task(self._run_loop())

    async def _run_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.loop.next_due_s() - self.now_s, 0.0))
            try:
                self.loop.run_due(self.now_s)
            except Exception:  # a policy bug must not stop the server's control loop
                log.exception("periodic policy part failed")
            for listener in self.after_control:
                try:
                    listener()
                except Exception:
                    log.exception("after-control listener failed")

    @property
    def ready(self) -> bool:
        """The server can serve what it was started for (docs/overload-and-supervision.md):
        every instance the policy loaded at start has served, and no task is broken — a task
        is broken when a variant of it was given up (its replicas kept dying, e.g. on an
        artifact that could not be rebuilt) and none of the task's instances is serving. An
        extra variant that is loading while others serve does not make the server unready."""
        if self._task is None:
            return False
        mech = self._mech
        if not self._initial <= mech.served | self._initial_gone():
            return False
        if not self.unservable:
            return True
        serving = {i.variant.task for i in self.instances.values() if i.state is InstanceState.READY and i.mech.serving}
        broken = {self.catalog.get(v).task for v in self.unservable} - serving
        return not broken

    def _initial_gone(self) -> set[int]:
        return {i for i in self._initial if i not in self.instances}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for inst in list(self.instances.values()):
            inst.mech.kill()
        await self._mech.close()

    # -- the catalog, extended while serving (docs/registration.md) -----------------------
    def extend_catalog(self, variants: Sequence[Variant], executor: ExecutorSettings | None = None) -> None:
        """Add ``variants`` to the live catalog at once, or raise and change nothing.

        The catalog is immutable and policies derive caches from it (candidate lists, their
        context, the model autoscaler's per-model lists), so the one swap point is here: a
        new :class:`Catalog` with the variants added (a duplicate name raises
        :class:`~infaas_core.errors.ConfigError`), a new policy built from the same name and
        params against it (every catalog-derived cache starts empty), and the control loop's
        periodic parts bound to the new policy at the times they were due. Everything is
        built before anything is assigned. The policy's transient state (worker blacklist,
        autoscaler timers, pressure) restarts as at server start; the cluster's workers,
        instances, flags and counters are kept. ``executor``: the settings the variants'
        replicas start with (a registered model's runner factory and directory)."""
        executors = getattr(self._mech, "executors", None)
        if executor is not None and executors is None:
            raise BackendError(f"{type(self._mech).__name__} cannot start variants with their own runner settings")
        catalog = self.catalog.extended(variants)
        old = self.policy
        params = {**old.params, "observation": asdict(old.observation)}
        policy = make_policy(old.name, replace(old.ctx, catalog=catalog), params)
        fresh = ControlLoop(policy, self, self.window_s)
        due = {p.name: p.next_s for p in self.loop.parts}
        parts = [p for p in self.loop.parts if p.name == "window"]
        for p in fresh.parts:
            if p.name != "window":
                p.next_s = due.get(p.name, p.next_s)
                parts.append(p)
        # the swap: nothing above changed this object
        self.catalog = catalog
        self.policy = policy
        self.loop.policy = policy
        self.loop.parts = parts
        if executor is not None and executors is not None:
            executors.update({v.name: executor for v in variants})
        self.bump()

    # -- per query -----------------------------------------------------------------------
    def decide(self, req: Requirements, app: str | None, batch: int) -> Decision:
        return self.policy.select(req, self, app=app, batch=batch)

    def submit(
        self, decision: Route | LoadAndRoute, x: np.ndarray, slo_ms: float, spent_ms: float = 0.0
    ) -> tuple[ViewInstance, list[asyncio.Future[Served]]]:
        """Enqueue where the control layer sends ``decision``; a request of more rows than
        the variant's ``max_batch`` is split into chunks that fit; ``spent_ms`` of the SLO
        were spent before (in the front end). Raises :class:`Refused` when the route or load
        is refused."""
        inst, why = self.route(decision)
        if inst is None:
            raise Refused(why or "refused")
        ei: Instance = inst.mech
        step = inst.variant.max_batch
        if x.shape[0] <= step:
            return inst, [ei.submit(x, slo_ms, spent_ms)]
        futures: list[asyncio.Future[Served]] = []
        try:
            for lo in range(0, x.shape[0], step):
                futures.append(ei.submit(x[lo : lo + step], slo_ms, spent_ms))
        except BackendError:
            for f in futures:
                f.cancel()
            raise
        return inst, futures

    # -- accounting ----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """A JSON-able snapshot for ``GET /v2/infaas/state`` (debugging, tests, replay cost)."""
        return {
            "policy": self.policy.name,
            "now_s": self.now_s,
            "version": self.version,
            "cost_usd": self.cost_usd(self.now_s),
            "refused_actions": dict(sorted(self.refused.items())),
            "ready": self.ready,
            "unservable": dict(sorted(self.unservable.items())),
            "front_gate": self.front_gate.describe() if self.front_gate is not None else None,
            "mechanism": self._mech.facts(),
            "workers_lost": self.counts["workers_lost"],
            "workers": [
                {
                    "id": w.id,
                    "type": w.instance_type.name,
                    "state": str(w.state),
                    "utilization": w.utilization,
                    "free_cores": w.free_cores,
                    **self._mech.worker_facts(w),
                    "instances": [
                        {
                            "id": i.id,
                            "variant": i.variant.name,
                            "state": str(i.state),
                            "replicas": i.replicas,
                            "live_replicas": i.mech.live_replicas,
                            "pids": i.mech.replica_pids,
                            "ready_pids": i.mech.ready_pids,
                            "shed": dict(sorted(i.mech.shed.items())),
                            "hung": [{"pid": pid, "after_s": after_s} for pid, after_s in i.mech.hung],
                            "service_ms_per_row": i.mech.service_ms_per_row,
                            "overhead_ms": i.mech.overhead_ms,
                            "loop_lag_ms": i.mech.loop_lag_ms,
                            "queue_len": i.queue_len,
                            "rate_qps": i.rate_qps,
                            "latency_ms": i.observed_latency_ms if math.isfinite(i.observed_latency_ms) else None,
                            "batch": i.batch,
                            "overloaded": i.overloaded,
                        }
                        for i in w.instances
                    ],
                }
                for w in self.workers
            ],
        }
