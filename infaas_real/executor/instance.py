"""A variant loaded on one worker slot: replicas sharing one bounded queue.

Batching rule (the simulator's, DESIGN.md): a replica that frees takes everything waiting,
in arrival order, up to ``max_batch`` rows. Admission is bounded: a query that finds
``max_queue`` queries already waiting is refused at once (:class:`Overloaded`), so a flood
is answered promptly instead of piling up.

A replica that dies is replaced. The queries it was serving are retried once (put back at
the head of the queue); a query whose second attempt also dies fails with
:class:`WorkerDied`. Nothing is dropped silently: every accepted query's future ends with
a result or an error. The object is the server's mechanism for one instance: the instance a
policy sees is the control layer's (:class:`infaas_core.control.cluster.Instance`), whose
window counters this object adds to (:mod:`infaas_core.control.observe` turns them into the
observed rate, latency, batch, SLO and utilisation).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infaas_core.control.observe import WindowCounters
from infaas_core.errors import BackendError
from infaas_core.model import Variant
from infaas_real.executor import ipc
from infaas_real.executor.replica import Replica, ReplicaState, RunnerSpec


class Overloaded(BackendError):
    """The instance's queue is full (answered 429)."""


class WorkerDied(BackendError):
    """The replica serving a query died twice (answered 503)."""


class InferenceFailed(BackendError):
    """The runner raised on a batch (answered 500)."""


@dataclass(frozen=True, slots=True)
class Served:
    y: np.ndarray
    queue_ms: float
    infer_ms: float
    batch: int
    replica_pid: int


@dataclass(slots=True, eq=False)
class _Pending:
    x: np.ndarray
    future: asyncio.Future[Served]
    enqueued_s: float
    slo_ms: float
    attempts: int = 0
    dispatched_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    """The ``executor`` keys of configs/serve.yaml (and ``server.max_queue_per_instance``); no
    defaults here: the YAML is the default (``build_server_settings`` sets each)."""

    runner: RunnerSpec
    max_queue: int
    max_restarts: int


class Instance:
    """Live instance of ``variant`` on worker ``worker_id`` (implements ``InstanceView``)."""

    def __init__(
        self,
        iid: int,
        variant: Variant,
        worker_id: int,
        replicas: int,
        settings: ExecutorSettings,
        clock: Callable[[], float],
        on_change: Callable[[Instance], None],
        counters: Callable[[], WindowCounters],
    ) -> None:
        self.id = iid
        self.variant = variant
        self.worker_id = worker_id
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self._queue: deque[_Pending] = deque()
        self._inflight: dict[int, list[_Pending]] = {}
        self._batch_ids = itertools.count(1)
        self._replica_ids = itertools.count(0)
        self._replicas: list[Replica] = []
        self._target = 0
        self._restarts = 0
        self._unloading = False
        self.gone = False
        self.last_arrival_s = -math.inf
        self._counters = counters  # the current window's counters of this instance's view
        self.add_replicas(replicas)

    # -- InstanceMechanism ----------------------------------------------------------------
    @property
    def serving(self) -> bool:
        """A replica is up (idle or busy)."""
        return any(r.state in (ReplicaState.IDLE, ReplicaState.BUSY) for r in self._replicas)

    @property
    def unloading(self) -> bool:
        """Takes no more queries: draining, then going away."""
        return self._unloading

    @property
    def queue_len(self) -> int:
        return len(self._queue) + sum(len(b) for b in self._inflight.values())

    # -- facts for the server ------------------------------------------------------------
    @property
    def replica_pids(self) -> list[int]:
        return [r.pid for r in self._replicas if r.pid is not None and r.state is not ReplicaState.DEAD]

    @property
    def live_replicas(self) -> int:
        return sum(r.state is not ReplicaState.DEAD for r in self._replicas)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    # -- replicas ------------------------------------------------------------------------
    def add_replicas(self, n: int) -> None:
        for _ in range(n):
            self._replicas.append(Replica(next(self._replica_ids), self.variant, self, self.settings.runner))
        self._target += n
        self._on_change(self)

    def remove_replicas(self, n: int) -> None:
        """Retire ``n`` replicas (idle or starting ones first); at zero the instance unloads
        once its queue has drained."""
        n = min(n, self._target)
        self._target -= n
        order = sorted(
            (r for r in self._replicas if r.state not in (ReplicaState.DEAD, ReplicaState.STOPPING)),
            key=lambda r: {ReplicaState.STARTING: 0, ReplicaState.IDLE: 1, ReplicaState.BUSY: 2}[r.state],
        )
        if self._target == 0:
            self._unloading = True
            self._maybe_finish_unload()
        else:
            for r in order[:n]:
                r.stop()
        self._on_change(self)

    def unload(self) -> None:
        self.remove_replicas(self._target)

    def _maybe_finish_unload(self) -> None:
        if self._unloading and not self._queue and not self._inflight:
            for r in self._replicas:
                r.stop()
            if all(r.state is ReplicaState.DEAD for r in self._replicas):
                self._finish()

    def _finish(self) -> None:
        if not self.gone:
            self.gone = True
            self._on_change(self)

    def kill(self) -> None:
        """Server shutdown: stop every process now and fail what is still queued."""
        self._unloading = True
        for r in self._replicas:
            r.kill()
        self._fail_all(BackendError(f"{self.variant.name}: server shutting down"))
        self._finish()

    # -- queries -------------------------------------------------------------------------
    def submit(self, x: np.ndarray, slo_ms: float) -> asyncio.Future[Served]:
        """Enqueue one query (``x``: [rows, features], rows <= max_batch). Raises
        :class:`Overloaded` at once when the queue is full or the instance is going away."""
        if self._unloading:
            raise Overloaded(f"{self.variant.name} on worker {self.worker_id} is unloading")
        if len(self._queue) >= self.settings.max_queue:
            raise Overloaded(
                f"{self.variant.name} on worker {self.worker_id}: queue full ({self.settings.max_queue} waiting)"
            )
        now = self._clock()
        fut: asyncio.Future[Served] = self._loop.create_future()
        self._queue.append(_Pending(x, fut, now, slo_ms))
        self.last_arrival_s = now
        self._counters().arrived(slo_ms)
        self._dispatch()
        return fut

    def _dispatch(self) -> None:
        if not self._queue:
            return
        max_rows = self.variant.max_batch
        for r in self._replicas:
            if not self._queue:
                return
            if r.state is not ReplicaState.IDLE:
                continue
            taken: list[_Pending] = []
            rows = 0
            q = self._queue
            while q:
                p = q[0]
                if p.future.done():  # timed out or cancelled while waiting
                    q.popleft()
                    continue
                if taken and rows + p.x.shape[0] > max_rows:
                    break
                q.popleft()
                taken.append(p)
                rows += p.x.shape[0]
            if not taken:
                return
            now = self._clock()
            for p in taken:
                p.dispatched_s = now
            bid = next(self._batch_ids)
            self._inflight[bid] = taken
            x = taken[0].x if len(taken) == 1 else np.concatenate([p.x for p in taken])
            r.send(bid, x, now)

    # -- ReplicaOwner callbacks ----------------------------------------------------------
    def on_ready(self, replica: Replica) -> None:
        self._restarts = 0
        if self._unloading and not self._queue:
            replica.stop()
        self._on_change(self)
        self._dispatch()

    def on_result(self, replica: Replica, result: ipc.Result) -> None:
        taken = self._inflight.pop(result.batch_id, [])
        now = self._clock()
        w = self._counters()
        w.busy_s += now - replica.busy_since_s
        w.batches += 1
        w.batch_items += len(taken)
        start = 0
        pid = replica.pid or 0
        for p in taken:
            rows = p.x.shape[0]
            if not p.future.done():
                p.future.set_result(
                    Served(
                        result.y[start : start + rows],
                        (p.dispatched_s - p.enqueued_s) * 1000.0,
                        result.infer_ms,
                        len(taken),
                        pid,
                    )
                )
            start += rows
            w.completions += 1
            w.latency_sum_ms += (now - p.enqueued_s) * 1000.0
        self._dispatch()
        self._maybe_finish_unload()

    def on_failed(self, replica: Replica, batch_id: int, reason: str) -> None:
        taken = self._inflight.pop(batch_id, [])
        for p in taken:
            if not p.future.done():
                p.future.set_exception(InferenceFailed(f"{self.variant.name}: inference failed: {reason}"))
        self._dispatch()
        self._maybe_finish_unload()

    def on_exit(self, replica: Replica, reason: str | None) -> None:
        self._replicas.remove(replica)
        if replica.batch_id >= 0 or reason is not None:
            taken = self._inflight.pop(replica.batch_id, []) if replica.batch_id >= 0 else []
            retry = [p for p in taken if p.attempts == 0 and not p.future.done()]
            retried = {id(p) for p in retry}
            for p in retry:
                p.attempts += 1
            self._queue.extendleft(reversed(retry))
            why = reason or "worker process exited"
            for p in taken:
                if id(p) not in retried and not p.future.done():
                    p.future.set_exception(
                        WorkerDied(f"{self.variant.name}: the replica serving this query died twice ({why})")
                    )
        if reason is not None and not self._unloading:
            live = sum(r.state is not ReplicaState.DEAD for r in self._replicas)
            if live < self._target:
                if self._restarts < self.settings.max_restarts:
                    self._restarts += 1
                    self._replicas.append(
                        Replica(next(self._replica_ids), self.variant, self, self.settings.runner)
                    )
                elif live == 0:
                    self._fail_all(
                        WorkerDied(f"{self.variant.name}: replicas keep dying ({reason}); giving up")
                    )
                    self._unloading = True
                    self._target = 0
        self._on_change(self)
        if self._unloading and all(r.state is ReplicaState.DEAD for r in self._replicas) and not self._inflight:
            self._fail_all(WorkerDied(f"{self.variant.name}: unloaded before the query could run"))
            self._finish()
        else:
            self._dispatch()

    def _fail_all(self, exc: BackendError) -> None:
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(exc)
        for taken in self._inflight.values():
            for p in taken:
                if not p.future.done():
                    p.future.set_exception(exc)
        self._inflight.clear()

    # -- monitor window ------------------------------------------------------------------
    def collect(self, now_s: float) -> None:
        """A window closes: count the busy time of batches still in service up to ``now_s``."""
        w = self._counters()
        for r in self._replicas:
            if r.state is ReplicaState.BUSY:
                w.busy_s += now_s - r.busy_since_s
                r.busy_since_s = now_s
