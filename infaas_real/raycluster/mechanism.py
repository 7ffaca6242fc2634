"""The Ray mechanism: :class:`infaas_core.control.cluster.Mechanism` on a Ray cluster.

The server process is the Ray driver; the front end, the policy and the control loop stay in
it, over the same :class:`~infaas_core.control.cluster.Cluster` as on one host. Each INFaaS
worker is one Ray actor (:class:`~infaas_real.raycluster.actor.WorkerActor`) holding its
instance type's resources (``num_cpus`` = vCPUs, ``memory``, one unit of the configured
Ray resource per accelerator device, any extra custom resources of the type), pinned to the
node :meth:`RayMechanism.admit_worker` chose (``NodeAffinitySchedulingStrategy``, hard),
with ``max_restarts=0``; its replicas are the single-host executor's processes, inside it.

- ``admit_worker``: a node whose resources, less those of the workers this server placed
  there, fit the type (the one with the most free CPU); else ``add_worker_no_ray_node``;
- ``start_worker``: create the actor; ``worker_ready`` when its ``ready()`` answers, the
  measured delay recorded as the worker's start-up (``started_s``);
- ``stop_worker``: the actor's ``shutdown()`` (at most ``ray.stop_timeout_s``), then
  ``ray.kill``;
- ``start_instance`` and the replica calls: actor calls; ``instance_ready`` /
  ``instance_gone`` from a long-poll of the actor's ``watch``;
- ``collect``: one ``stats()`` call per worker (busy time, batches), arrivals, completions and
  latency counted here as answers arrive (so latency includes the Ray hop); then the
  liveness check: a worker whose node ``ray.nodes()`` no longer lists alive is lost.

A worker is lost (``Cluster.worker_lost``) when a call to its actor raises ``ActorDiedError``
(the process or node died, or was removed) or its node is not alive; a query whose call
failed that way, or with ``ActorUnavailableError`` (the node is unreachable: the query may
or may not have run), is retried once on another ready instance of the same variant, else
failed with :class:`~infaas_real.executor.WorkerDied` (503). Counted in :meth:`facts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from infaas_core.control.cluster import Cluster
from infaas_core.control.cluster import Instance as ViewInstance
from infaas_core.control.cluster import Worker as ViewWorker
from infaas_core.errors import BackendError
from infaas_core.model import InstanceType
from infaas_core.view import InstanceState
from infaas_real.executor import (
    DeadlineRefused,
    ExecutorSettings,
    InferenceFailed,
    Overloaded,
    Served,
    WorkerDied,
)
from infaas_real.raycluster.settings import GIB, RaySettings

log = logging.getLogger("infaas_real.raycluster")

NO_NODE = "add_worker_no_ray_node"
"""Refusal reason of ``AddWorker`` when no alive node has the type's resources free."""

_EPS = 1e-9


_CONNECTED_HERE = [False]  # connect() started or joined Ray: this process shuts its driver down at the end


def connect(settings: RaySettings) -> None:
    """Connect this process to Ray as its driver: ``ray.address``, else ``$RAY_ADDRESS``,
    else a Ray started here (``ray.local``, no dashboard); a :class:`BackendError` (one line)
    when that fails. An already connected driver (tests) is used as it is, and left to its
    owner."""
    if settings.local_only:
        from infaas_real.raycluster.local import enable_local_only

        enable_local_only()
    import ray

    if ray.is_initialized():
        return
    address = settings.address or os.environ.get("RAY_ADDRESS") or None
    loc = settings.local
    if address is not None:
        _probe(address, settings.connect_timeout_s)
    try:
        if address is not None:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=loc.num_cpus, _memory=None if loc.memory_gb is None else int(loc.memory_gb * GIB),
                     object_store_memory=loc.object_store_mb * 1024 * 1024, _temp_dir=loc.temp_dir,
                     include_dashboard=False, log_to_driver=False)  # fmt: skip
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendError(f"ray: could not start or join {where}: {first[:300]}") from None
    _CONNECTED_HERE[0] = True


def _probe(address: str, timeout_s: float) -> None:
    """A one-line :class:`BackendError` when nothing listens at a ``host:port`` address
    within ``timeout_s`` (Ray itself would wait for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", "ray://...": left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise BackendError(f"ray: nothing answers at the Ray address {address} ({exc.strerror or exc})") from None


def _free(nodes: list[dict[str, Any]], held: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for n in nodes:
        if not n.get("Alive"):
            continue
        free = dict(n.get("Resources", {}))
        for demand in held.get(n["NodeID"], []):
            for r, a in demand.items():
                free[r] = free.get(r, 0.0) - a
        out[n["NodeID"]] = free
    return out


class RayInstance:
    """The server's side of one instance on a worker actor (the ``InstanceMechanism``, and
    what the server's ``submit``, readiness and ``/v2/infaas/state`` read)."""

    def __init__(self, mech: RayMechanism, inst: ViewInstance, actor: Any) -> None:
        self.mech = mech
        self.inst = inst
        self.actor = actor
        self.outstanding = 0  # queries sent and not answered
        self.last_arrival_s = -math.inf
        self.unloading = False
        self.lost = False
        self._background: set[asyncio.Future[Served]] = set()
        self._waiting: list[_Query] = []  # queries not sent yet (all ray.calls_in_flight calls on their way)
        self._calls = 0  # infer_many calls on their way
        self.facts: dict[str, Any] = {"serving": False, "gone": False, "gave_up": None, "live_replicas": 0,
                                      "pids": [], "ready_pids": [], "shed": {}, "hung": [],
                                      "service_ms_per_row": inst.variant.batch1_latency_ms, "overhead_ms": 0.0,
                                      "loop_lag_ms": 0.0}  # fmt: skip
        actor.load.remote(inst.id, inst.variant, inst.replicas)
        mech.spawn(self._watch())

    # -- facts ---------------------------------------------------------------------------
    @property
    def queue_len(self) -> int:
        return self.outstanding

    @property
    def serving(self) -> bool:
        return bool(self.facts["serving"]) and not self.lost

    @property
    def gone(self) -> bool:
        return bool(self.facts["gone"]) or self.lost

    @property
    def gave_up(self) -> str | None:
        g = self.facts["gave_up"]
        return None if g is None else str(g)

    live_replicas = property(lambda self: int(self.facts["live_replicas"]))
    replica_pids = property(lambda self: list(self.facts["pids"]))
    ready_pids = property(lambda self: list(self.facts["ready_pids"]))
    shed = property(lambda self: dict(self.facts["shed"]))
    hung = property(lambda self: [tuple(h) for h in self.facts["hung"]])
    service_ms_per_row = property(lambda self: float(self.facts["service_ms_per_row"]))
    overhead_ms = property(lambda self: float(self.facts["overhead_ms"]))
    loop_lag_ms = property(lambda self: float(self.facts["loop_lag_ms"]))

    async def _watch(self) -> None:
        seen = -1
        while True:
            try:
                facts = await self.actor.watch.remote(self.inst.id, seen)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the actor died or its node is unreachable
                self.mech.actor_failed(self.inst.worker, exc)
                return
            seen = int(facts["version"])
            self.facts = facts
            self.mech.changed(self.inst, self)
            if facts["gone"]:
                return

    # -- control -------------------------------------------------------------------------
    def add_replicas(self, n: int) -> None:
        self.actor.add_replicas.remote(self.inst.id, n)

    def remove_replicas(self, n: int) -> None:
        self.actor.remove_replicas.remote(self.inst.id, n)

    def unload(self) -> None:
        self.unloading = True
        self.actor.unload.remote(self.inst.id)

    def kill(self) -> None:
        """Server shutdown: take nothing more (the worker's actor is shut down with it)."""
        self.unloading = True

    def collect(self, now_s: float) -> None:  # the worker's stats() call does it for all its instances
        pass

    # -- queries -------------------------------------------------------------------------
    def submit(self, x: np.ndarray, slo_ms: float, spent_ms: float = 0.0) -> asyncio.Future[Served]:
        """Send one query to the worker actor; the future ends with the answer or an error."""
        if self.unloading or self.lost:
            raise Overloaded(f"{self.inst.variant.name} on worker {self.inst.worker_id} is unloading")
        fut: asyncio.Future[Served] = asyncio.get_running_loop().create_future()
        self._send(x, slo_ms, spent_ms, fut, self.mech.clock(), 0)
        return fut

    def submit_background(self, x: np.ndarray) -> asyncio.Future[Served]:
        """An offline batch (the worker's low-priority queue): not counted, not retried."""
        if self.unloading or self.lost:
            raise Overloaded(f"{self.inst.variant.name} on worker {self.inst.worker_id} is unloading")
        fut: asyncio.Future[Served] = asyncio.get_running_loop().create_future()
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)
        self.mech.spawn(self._serve_background(x, fut))
        return fut

    def cancel_background(self) -> int:
        """Cancel the offline batches not answered yet (the worker drops those not sent)."""
        n = 0
        for fut in list(self._background):
            if not fut.done():
                fut.cancel()
                n += 1
        if n:
            self.actor.cancel_background.remote(self.inst.id)
        return n

    def _send(self, x: np.ndarray, slo_ms: float, spent_ms: float, fut: asyncio.Future[Served], t0_s: float,
              attempt: int) -> None:  # fmt: skip
        self.outstanding += 1
        self.last_arrival_s = self.mech.clock()
        self.inst.counters.arrived(slo_ms)
        self._waiting.append(_Query(x, slo_ms, spent_ms, fut, t0_s, attempt))
        self._pump()

    def _pump(self) -> None:
        """Send what waits: with fewer than ``ray.calls_in_flight`` calls on their way, the
        waiting queries (up to ``ray.max_queries_per_call``) go together in one call."""
        cfg = self.mech.settings
        while self._waiting and self._calls < cfg.calls_in_flight:
            n = min(len(self._waiting), cfg.max_queries_per_call)
            batch, self._waiting = self._waiting[:n], self._waiting[n:]
            self._calls += 1
            self.mech.counts["query_calls"] += 1
            self.mech.counts["queries_sent"] += n
            self.mech.spawn(self._serve_many(batch))

    async def _serve_many(self, batch: list[_Query]) -> None:
        try:
            outs = await self.actor.infer_many.remote(self.inst.id, [(q.x, q.slo_ms, q.spent_ms) for q in batch])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ActorDiedError / ActorUnavailableError: the worker is lost or unreachable
            self.outstanding -= len(batch)
            self._calls -= 1
            self.mech.actor_failed(self.inst.worker, exc)
            for q in batch:
                self._lost_query(q, exc)
            self._pump()
            return
        self.outstanding -= len(batch)
        self._calls -= 1
        self._pump()
        now = self.mech.clock()
        for q, out in zip(batch, outs, strict=True):
            if not q.fut.done():  # else timed out or cancelled meanwhile
                self._answer(q, out, now)

    def _lost_query(self, q: _Query, exc: BaseException) -> None:
        """A query whose call failed with the worker: once more on another instance, else failed."""
        if q.fut.done():
            return
        alt = self.mech.alternative(self.inst) if q.attempt == 0 else None
        if alt is not None:
            self.mech.counts["queries_retried"] += 1
            alt._send(q.x, q.slo_ms, q.spent_ms, q.fut, q.t0_s, q.attempt + 1)
            return
        self.mech.counts["queries_failed_lost"] += 1
        why = "its retry's worker was lost too" if q.attempt else "no other ready instance of the variant"
        q.fut.set_exception(WorkerDied(f"{self.inst.variant.name}: worker {self.inst.worker_id} lost "
                                       f"({type(exc).__name__}); {why}"))  # fmt: skip

    def _answer(self, q: _Query, out: tuple[Any, ...], now_s: float) -> None:
        if out[0] == "ok":
            _, y, queue_ms, infer_ms, batch, pid = out
            if q.attempt >= 0:
                c = self.inst.counters
                c.completions += 1
                c.latency_sum_ms += (now_s - q.t0_s) * 1000.0
            q.fut.set_result(Served(y, queue_ms, infer_ms, batch, pid))
            return
        _, kind, message = out
        exc_type: type[BackendError] = {"deadline": DeadlineRefused, "overloaded": Overloaded, "died": WorkerDied,
                                        "failed": InferenceFailed, "gone": Overloaded}.get(kind, BackendError)  # fmt: skip
        q.fut.set_exception(exc_type(message))

    async def _serve_background(self, x: np.ndarray, fut: asyncio.Future[Served]) -> None:
        """An offline batch: one call of its own, not counted, not retried."""
        try:
            out = await self.actor.infer.remote(self.inst.id, x, math.inf, 0.0, True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.mech.actor_failed(self.inst.worker, exc)
            if not fut.done():
                fut.set_exception(WorkerDied(f"{self.inst.variant.name}: worker {self.inst.worker_id} lost"))
            return
        if not fut.done():
            self._answer(_Query(x, math.inf, 0.0, fut, 0.0, -1), out, self.mech.clock())


@dataclass(slots=True)
class _Query:
    x: np.ndarray
    slo_ms: float
    spent_ms: float
    fut: asyncio.Future[Served]
    t0_s: float  # when the server submitted it (its latency runs from here)
    attempt: int  # 0 first, 1 the retry after its worker was lost; -1 an offline batch


class RayMechanism:
    """Implements :class:`infaas_core.control.cluster.Mechanism` with Ray actors."""

    kind = "ray"

    def __init__(self, settings: RaySettings, executor: ExecutorSettings, clock: Callable[[], float]) -> None:
        import ray

        self.settings = settings
        self.executor = executor
        # no per-variant executor settings (``executors``): a registered model's artifacts live in a
        # directory of the server's machine, not of every node, so LiveState refuses registration here
        self.clock = clock
        self.cluster: Cluster | None = None
        self.served: set[int] = set()
        connect(settings)
        self.owns_ray = _CONNECTED_HERE[0]
        from infaas_real.raycluster.actor import WorkerActor

        self._ray = ray
        self._actor_class = ray.remote(WorkerActor)
        self.actors: dict[int, Any] = {}
        self.node_of: dict[int, str] = {}  # worker id -> Ray node id
        self.node_ip: dict[int, str] = {}
        self.actor_pid: dict[int, int] = {}
        self.demand_of: dict[int, dict[str, float]] = {}
        self.startup_measured_s: dict[int, float] = {}
        self.lost: list[dict[str, Any]] = []  # (worker, node, why, at) of every worker lost
        self.counts: Counter[str] = Counter()
        self._chosen: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._suspect: dict[int, Any] = {}  # worker id -> its stats call still unanswered
        self._closing = False

    def _c(self) -> Cluster:
        assert self.cluster is not None, "RayMechanism used before its cluster was attached"
        return self.cluster

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- workers -------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self._ray.nodes()
        return out

    def admit_worker(self, itype: InstanceType) -> str | None:
        need = self.settings.demand(itype)
        held: dict[str, list[dict[str, float]]] = {}
        for wid, node in self.node_of.items():
            held.setdefault(node, []).append(self.demand_of[wid])
        fits = [(free.get("CPU", 0.0), nid) for nid, free in _free(self.nodes(), held).items()
                if all(free.get(r, 0.0) + _EPS >= a for r, a in need.items())]  # fmt: skip
        if not fits:
            self._chosen = None
            return NO_NODE
        self._chosen = max(fits, key=lambda f: f[0])[1]  # the most free CPU; ties: the order Ray lists the nodes
        return None

    def start_worker(self, w: ViewWorker, startup_s: float) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = self._chosen
        assert node is not None, "start_worker without an admitted node"
        self._chosen = None
        need = self.settings.demand(w.instance_type)
        custom = {r: a for r, a in need.items() if r not in ("CPU", "GPU", "memory")}
        actor = self._actor_class.options(
            num_cpus=need["CPU"], num_gpus=need.get("GPU", 0.0), memory=need["memory"], resources=custom or None,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False), max_restarts=0,
            max_task_retries=0, max_concurrency=self.settings.max_concurrency,
            name=f"infaas-worker-{w.id}-{os.getpid()}", lifetime=None,
        ).remote(w.id, self.executor)  # fmt: skip
        self.actors[w.id] = actor
        self.node_of[w.id] = node
        self.demand_of[w.id] = need
        self.spawn(self._await_ready(w, actor, self.clock()))

    async def _await_ready(self, w: ViewWorker, actor: Any, t0_s: float) -> None:
        try:
            info = await actor.ready.remote()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.actor_failed(w, exc)
            return
        now = self.clock()
        self.startup_measured_s[w.id] = now - t0_s
        self.node_ip[w.id] = str(info["node_ip"])
        self.actor_pid[w.id] = int(info["pid"])
        if info["node_id"] != self.node_of.get(w.id, info["node_id"]):
            log.warning("worker %d landed on node %s, not %s", w.id, info["node_id"], self.node_of[w.id])
        c = self._c()
        if self.actors.get(w.id) is actor:
            w.started_s = now
            c.worker_ready(w)
            c.bump()

    def stop_worker(self, w: ViewWorker) -> None:
        actor = self.actors.pop(w.id, None)
        self.node_of.pop(w.id, None)
        self.demand_of.pop(w.id, None)
        self._suspect.pop(w.id, None)
        if actor is not None:
            self.spawn(self._stop(actor))

    async def _stop(self, actor: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(actor.shutdown.remote(), self.settings.stop_timeout_s)
        with contextlib.suppress(Exception):
            self._ray.kill(actor, no_restart=True)

    def actor_failed(self, w: ViewWorker, exc: BaseException) -> None:
        """A call to ``w``'s actor raised: ``ActorDiedError`` means it is gone for good (lost);
        anything else (``ActorUnavailableError``: its node unreachable) only suspects it."""
        from ray.exceptions import ActorDiedError

        if isinstance(exc, ActorDiedError):
            self.worker_lost(w, f"actor died: {str(exc).splitlines()[0][:200]}")
        else:
            self.counts["actor_unavailable"] += 1

    def worker_lost(self, w: ViewWorker, why: str) -> None:
        if w.id not in self.actors or self._closing:
            return
        self.lost.append({"worker": w.id, "node": self.node_of.get(w.id), "why": why, "at_s": self.clock()})
        log.warning("worker %d lost: %s", w.id, why)
        for inst in w.instances:
            if isinstance(inst.mech, RayInstance):
                inst.mech.lost = True
        c = self._c()
        c.worker_lost(w)  # retires it: stop_worker forgets the actor
        c.bump()

    # -- instances -----------------------------------------------------------------------
    def start_instance(self, inst: ViewInstance) -> RayInstance:
        return RayInstance(self, inst, self.actors[inst.worker_id])

    def changed(self, inst: ViewInstance, ri: RayInstance) -> None:
        c = self._c()
        if ri.facts["gone"]:
            if ri.gave_up is not None:
                c.variant_unservable(inst.variant.name, ri.gave_up)  # its loads are refused from now on
            c.instance_gone(inst)
        elif ri.facts["serving"]:
            self.served.add(inst.id)
            c.variant_servable(inst.variant.name)
            c.instance_ready(inst)
        c.bump()

    def alternative(self, inst: ViewInstance) -> RayInstance | None:
        """Another ready instance of ``inst``'s variant that takes queries (least queued)."""
        best: RayInstance | None = None
        for other in self._c().instances_of(inst.variant.name):
            m = other.mech
            if (other is inst or other.worker_id == inst.worker_id or other.state is not InstanceState.READY
                    or not isinstance(m, RayInstance) or m.unloading or m.lost):  # fmt: skip
                continue
            if best is None or m.queue_len < best.queue_len:
                best = m
        return best

    def add_replicas(self, inst: ViewInstance, n: int) -> None:
        inst.mech.add_replicas(n)

    def remove_replicas(self, inst: ViewInstance, n: int) -> None:
        inst.mech.remove_replicas(n)

    def start_unload(self, inst: ViewInstance) -> None:
        inst.mech.unload()

    # -- observation ---------------------------------------------------------------------
    def collect(self, now_s: float) -> None:
        """Add each worker's busy time and batches to its instances' counters (one
        ``stats()`` call per worker that has answered ``ready()``, ``ray.stats_timeout_s`` at
        most — the server's event loop waits meanwhile; a worker whose last call is still
        unanswered is skipped until it answers), then lose the workers whose node is no
        longer alive."""
        ray = self._ray
        c = self._c()
        refs: dict[int, Any] = {}
        for wid, actor in self.actors.items():
            if wid not in self.startup_measured_s:
                continue  # not up yet: nothing to count, and its call would wait for the actor's creation
            old = self._suspect.get(wid)
            if old is not None:
                done, _ = ray.wait([old], timeout=0)
                if not done:
                    continue
                del self._suspect[wid]
            refs[wid] = actor.stats.remote()
        if refs:
            ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.settings.stats_timeout_s)
        for wid, ref in refs.items():
            done, _ = ray.wait([ref], timeout=0)
            if not done:
                self._suspect[wid] = ref
                self.counts["stats_late"] += 1
                continue
            try:
                stats = ray.get(ref)
            except Exception as exc:
                w = next((w for w in c.workers if w.id == wid), None)  # it may be gone already
                if w is not None:
                    self.actor_failed(w, exc)
                continue
            for iid, (busy_s, batches, items) in stats.items():
                inst = c.instances.get(iid)
                if inst is not None:
                    inst.counters.busy_s += busy_s
                    inst.counters.batches += batches
                    inst.counters.batch_items += items
        self.check_nodes()

    def check_nodes(self) -> None:
        """Lose every worker whose node ``ray.nodes()`` does not list as alive."""
        alive = {n["NodeID"] for n in self.nodes() if n.get("Alive")}
        c = self._c()
        for wid, node in list(self.node_of.items()):
            if node not in alive:
                w = next((w for w in c.workers if w.id == wid), None)
                if w is not None:
                    self.worker_lost(w, f"node {node[:12]} is not alive")

    # -- facts ---------------------------------------------------------------------------
    def worker_facts(self, w: ViewWorker) -> dict[str, Any]:
        return {"node_id": self.node_of.get(w.id), "node_ip": self.node_ip.get(w.id),
                "actor_pid": self.actor_pid.get(w.id), "startup_measured_s": self.startup_measured_s.get(w.id)}  # fmt: skip

    def facts(self) -> dict[str, Any]:
        alive = [n for n in self.nodes() if n.get("Alive")]
        return {
            "kind": self.kind,
            "nodes": [{"node_id": n["NodeID"], "address": n.get("NodeManagerAddress"),
                       "resources": n.get("Resources", {})} for n in alive],
            "workers_lost": list(self.lost),
            "counts": dict(sorted(self.counts.items())),
        }

    # -- end -----------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop every worker actor; shut Ray down if this process started or joined it. The
        actors' deaths are not losses: nothing is reported from here on."""
        self._closing = True
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        for actor in list(self.actors.values()):
            await self._stop(actor)
        self.actors.clear()
        if self.owns_ray:
            self._ray.shutdown()
            _CONNECTED_HERE[0] = False
