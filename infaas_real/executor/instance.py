"""A variant loaded on one worker slot: replicas sharing one bounded queue.

Batching rule (the simulator's, DESIGN.md): a replica with room takes everything waiting, in
arrival order, up to ``max_batch`` rows. With ``executor.max_rows_in_flight`` a replica may
hold several such batches at once, up to that many rows; its worker joins those waiting
into one run of up to ``max_batch`` rows, so batching grows with load
(:mod:`infaas_real.executor.worker`).

Admission is bounded twice (docs/overload-and-supervision.md):

- a query that finds ``max_queue`` queries already waiting is refused at once
  (:class:`Overloaded`);
- shedding by deadline (``executor.shed_by_deadline``): a query with a finite SLO whose
  estimated finish — the rows ahead of it (queued and in flight) times the observed time per
  row of a busy replica, shared by the serving replicas, plus its own service (observed
  transfer overhead and compute) — is past its SLO is
  refused at once (:class:`DeadlineRefused`, a kind of :class:`Overloaded`); a queued query
  that can no longer finish in time is failed with the same error instead of being served
  late. Queries that arrive before the instance's first replica is ready wait for the load
  (the policy chose to load for them).

Supervision (``executor.batch_timeout_*``, ``executor.start_timeout_s``): every
``supervise_period_s`` the instance checks its replicas; one whose current batch has run
longer than ``factor x`` its profiled latency ``+ margin``, or that has not loaded within
``start_timeout_s``, is hung: it is SIGKILLed and reaped, and handled as a death.

A replica that dies is replaced (up to ``max_restarts`` in a row). The queries it was serving
are retried once (put back at the head of the queue, where any live replica takes them) if
they can still finish in time; a query whose second attempt also dies fails with
:class:`WorkerDied`. Nothing is dropped silently: every accepted query's future ends with a
result or an error. The object is the server's mechanism for one instance: the instance a
policy sees is the control layer's (:class:`infaas_core.control.cluster.Instance`), whose
window counters this object adds to (:mod:`infaas_core.control.observe` turns them into the
observed rate, latency, batch, SLO and utilisation).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter, deque
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


class DeadlineRefused(Overloaded):
    """The query cannot start in time to finish within its SLO (429 when refused at
    admission, 503 when it expired waiting)."""


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
    deadline: bool = False  # shed by deadline (False: no finite SLO, guard off, or queued for the first load)
    spent_ms: float = 0.0  # of its SLO, spent before it was submitted (in the HTTP layer, from its head's arrival)


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Overload admission and replica supervision (``executor.*`` of configs/serve.yaml)."""

    max_rows_in_flight: int  # rows one replica may hold at once, over its batches (at least one batch)
    shed_by_deadline: bool  # refuse / expire queries that cannot finish within their SLO
    service_estimate_alpha: float  # weight of the newest observation in the overhead and loop-lag averages
    service_estimate_answers: int  # answers over which a busy replica's time per row is measured
    batch_timeout_factor: float  # a batch running longer than factor x its profiled latency ...
    batch_timeout_margin_ms: float  # ... plus this margin means its replica is hung
    start_timeout_s: float  # a replica not ready this long after its start is hung
    supervise_period_s: float  # how often the instance checks its replicas and its queue


@dataclass(frozen=True, slots=True)
class HeartbeatSettings:
    """Pings of idle replicas (``executor.heartbeat_*`` of configs/serve.yaml)."""

    period_s: float  # a replica idle this long since its worker last spoke is pinged
    timeout_s: float  # a ping unanswered this long after it was sent means the replica is hung


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    """The ``executor`` keys of configs/serve.yaml (and ``server.max_queue_per_instance``);
    ``build_server_settings`` sets each from the YAML. ``guard`` None switches admission by
    deadline and supervision off (one batch in flight per replica, no hang detection): the
    executor as it was before them (the contract suite's harness asks for it, to compare
    with the simulator's queues, which shed nothing)."""

    runner: RunnerSpec
    max_queue: int
    max_restarts: int
    guard: GuardSettings | None
    heartbeat: HeartbeatSettings | None  # None: idle replicas are not pinged (the config always sets it)


class Instance:
    """Live instance of ``variant`` on worker ``worker_id`` (implements ``InstanceView``).

    Background work (offline jobs, :mod:`infaas_real.server.offline`) takes a low-priority
    path: :meth:`submit_background` queues a batch that is sent only to a replica with nothing
    in flight while no online query waits, so online queries always go first and wait at most
    for one background batch that had already started. Background batches are kept out of
    the online queue length, the window's query counts (arrivals, completions, latency,
    batches) and the service estimate; their replica-seconds count as busy time, so they are in
    the worker's CPU utilisation, as in the simulator and the original (``/proc/stat``)."""

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
        self.guard = settings.guard
        self._depth_rows = self.guard.max_rows_in_flight if self.guard else 0  # 0: one batch at a time
        self._clock = clock
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0  # rows of the queries in _queue
        self._background: deque[_Pending] = deque()  # low-priority batches (submit_background)
        self._bg_inflight: dict[int, _Pending] = {}  # batch id -> background batch sent to a replica
        self._inflight: dict[int, list[_Pending]] = {}
        self._batch_ids = itertools.count(1)
        self._replica_ids = itertools.count(0)
        self._replicas: list[Replica] = []
        self._target = 0
        self._restarts = 0
        self._unloading = False
        self._served_once = False  # a replica has been ready: deadlines apply from then on
        self._row_ms = variant.batch1_latency_ms  # a busy replica's time per row answered (moving averages):
        # busy time between answers and rows answered, summed over the last service_estimate_answers answers
        self._window: deque[tuple[float, int]] = deque(maxlen=self.guard.service_estimate_answers if self.guard else 1)
        self._busy_ms, self._busy_rows = 0.0, 0
        self._overhead_ms = 0.0  # send-to-answer time beyond compute of a batch sent to an idle replica (moving average)
        self._start_s = -1.0  # observed replica start-up time (moving average; < 0: none seen yet)
        self.shed: Counter[str] = Counter()  # refusals and failures by reason (deadline_admission, ...)
        self.hung: list[tuple[int, float]] = []  # (pid, seconds from its batch's start to the kill)
        self.gone = False
        self.gave_up: str | None = None  # why the instance stopped restarting its replicas (None: it did not)
        self.last_arrival_s = -math.inf
        self._counters = counters  # the current window's counters of this instance's view
        self._supervisor: asyncio.TimerHandle | None = None
        self._lag_ms = 0.0  # how late the supervisor's timer fires: the event loop's turn (moving average)
        self._due_s = 0.0
        self.add_replicas(replicas)
        if self.guard is not None:
            self._arm()

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
    def ready_pids(self) -> list[int]:
        """Pids of the replicas that are serving (idle or busy)."""
        return [r.pid for r in self._replicas if r.pid is not None and r.state in (ReplicaState.IDLE, ReplicaState.BUSY)]

    @property
    def live_replicas(self) -> int:
        return sum(r.state is not ReplicaState.DEAD for r in self._replicas)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def service_ms_per_row(self) -> float:
        return self._row_ms

    @property
    def overhead_ms(self) -> float:
        return self._overhead_ms

    @property
    def loop_lag_ms(self) -> float:
        return self._lag_ms

    # -- replicas ------------------------------------------------------------------------
    def _new_replica(self) -> None:
        self._replicas.append(Replica(next(self._replica_ids), self.variant, self, self.settings.runner, self._clock))

    def add_replicas(self, n: int) -> None:
        for _ in range(n):
            self._new_replica()
        self._target += n
        self._on_change(self)

    def remove_replicas(self, n: int) -> None:
        """Retire ``n`` replicas (idle or starting ones first); at zero the instance unloads
        once its queue has drained."""
        n = min(n, self._target)
        self._target -= n
        order = sorted(
            (r for r in self._replicas if r.state not in (ReplicaState.DEAD, ReplicaState.STOPPING)),
            key=lambda r: ({ReplicaState.STARTING: 0, ReplicaState.IDLE: 1, ReplicaState.BUSY: 2}[r.state],
                           len(r.inflight)),
        )  # fmt: skip
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
        if self._unloading and self._background:
            self._fail_background(Overloaded(f"{self.variant.name} on worker {self.worker_id} is unloading"))
        if self._unloading and not self._queue and not self._inflight and not self._bg_inflight:
            for r in self._replicas:
                r.stop()
            if all(r.state is ReplicaState.DEAD for r in self._replicas):
                self._finish()

    def _finish(self) -> None:
        if not self.gone:
            self.gone = True
            if self._supervisor is not None:
                self._supervisor.cancel()
                self._supervisor = None
            self._on_change(self)

    def kill(self) -> None:
        """Server shutdown: stop every process now and fail what is still queued."""
        self._unloading = True
        for r in list(self._replicas):
            r.kill()
        self._fail_all(BackendError(f"{self.variant.name}: server shutting down"))
        self._finish()

    # -- estimates -----------------------------------------------------------------------
    def _serving_replicas(self) -> int:
        return sum(r.state in (ReplicaState.IDLE, ReplicaState.BUSY) for r in self._replicas)

    def _own_ms(self, rows: int) -> float:
        """Service of a query of ``rows`` rows once it starts: its compute at the observed
        time per row (at least the profiled latency). The event loop's lag and the transfer
        overhead are left out on purpose: a refusal waits for the same loop turns as an
        answer, so refusing for them saves nothing and, in a closed loop, feeds the lag; and
        an estimate only answers could refresh would lock in after a burst of refusals
        (docs/overload-and-supervision.md)."""
        return max(self.variant.latency_ms(min(max(rows, 1), self.variant.max_batch)),
                                       rows * self._row_ms)  # fmt: skip

    def estimate_finish_ms(self, rows: int, now_s: float) -> float:
        """Milliseconds from ``now_s`` until a new query of ``rows`` rows would be answered:
        the rows ahead of it (queued and in flight) at the observed time per row of a busy
        replica (busy time between answers over rows answered), shared by the serving
        replicas, plus its own compute; 0 with nothing ahead (it starts now, whatever the
        estimates say); with no replica serving, the rest of the start-up of the newest
        starting one plus its compute (inf when none is starting)."""
        serving = self._serving_replicas()
        if serving == 0:
            starting = [r.started_s for r in self._replicas if r.state is ReplicaState.STARTING]
            if not starting or self._start_s < 0:
                return math.inf
            wait_ms = max(self._start_s - (now_s - max(starting)), 0.0) * 1000.0
        else:
            ahead = self._queued_rows + sum(r.rows_in_flight for r in self._replicas if r.state is not ReplicaState.DEAD)
            if ahead == 0:
                return 0.0  # nothing ahead: it starts now
            wait_ms = ahead * self._row_ms / serving
        return wait_ms + self._own_ms(rows)

    def _late(self, p: _Pending, now_s: float) -> bool:
        """``p`` can no longer finish within its SLO even if it started now."""
        return (now_s - p.enqueued_s) * 1000.0 + p.spent_ms + self._own_ms(p.x.shape[0]) > p.slo_ms

    def _guarded(self, slo_ms: float) -> bool:
        return self.guard is not None and self.guard.shed_by_deadline and self._served_once and math.isfinite(slo_ms)

    # -- queries -------------------------------------------------------------------------
    def submit(self, x: np.ndarray, slo_ms: float, spent_ms: float = 0.0) -> asyncio.Future[Served]:
        """Enqueue one query (``x``: [rows, features], rows <= max_batch). Raises
        :class:`Overloaded` at once when the queue is full or the instance is going away,
        :class:`DeadlineRefused` when it cannot finish within ``slo_ms``, of which
        ``spent_ms`` were spent before the submit (the front end's share, from the request's
        head)."""
        if self._unloading:
            raise Overloaded(f"{self.variant.name} on worker {self.worker_id} is unloading")
        if len(self._queue) >= self.settings.max_queue:
            self.shed["queue_full"] += 1
            raise Overloaded(
                f"{self.variant.name} on worker {self.worker_id}: queue full ({self.settings.max_queue} waiting)"
            )
        now = self._clock()
        if self._guarded(slo_ms):
            est = self.estimate_finish_ms(x.shape[0], now)
            if est + spent_ms > slo_ms:
                self.shed["deadline_admission"] += 1
                raise DeadlineRefused(
                    f"{self.variant.name}: cannot finish within the SLO of {slo_ms:g} ms "
                    f"(estimated {est:.0f} ms with {len(self._queue)} waiting, {spent_ms:.0f} ms spent before)"
                )
        fut: asyncio.Future[Served] = self._loop.create_future()
        self._queue.append(_Pending(x, fut, now, slo_ms, deadline=self._guarded(slo_ms), spent_ms=spent_ms))
        self._queued_rows += x.shape[0]
        self.last_arrival_s = now
        self._counters().arrived(slo_ms)
        self._dispatch()
        return fut

    def _expire(self, p: _Pending, now_s: float) -> None:
        self.shed["deadline_queue"] += 1
        p.future.set_exception(
            DeadlineRefused(
                f"{self.variant.name}: not started within the SLO of {p.slo_ms:g} ms "
                f"(waited {(now_s - p.enqueued_s) * 1000.0 + p.spent_ms:.0f} ms)"
            )
        )

    def _dispatch(self) -> None:
        self._dispatch_online()
        if self._background and not self._queue:
            self._dispatch_background()

    def _dispatch_online(self) -> None:
        if not self._queue:
            return
        max_rows = self.variant.max_batch
        room_rows = max(self._depth_rows, max_rows)
        q = self._queue
        now = self._clock()
        while q:
            best: Replica | None = None
            best_rows = 0
            for r in self._replicas:
                if r.state not in (ReplicaState.IDLE, ReplicaState.BUSY):
                    continue
                if not r.inflight:
                    best = r
                    break
                held = r.rows_in_flight
                if self._depth_rows and held + q[0].x.shape[0] <= room_rows and (best is None or held < best_rows):
                    best, best_rows = r, held
            if best is None:
                return
            if best.inflight:
                max_rows = min(self.variant.max_batch, room_rows - best_rows)
            taken: list[_Pending] = []
            rows = 0
            while q:
                p = q[0]
                if p.future.done():  # timed out or cancelled while waiting
                    q.popleft()
                    self._queued_rows -= p.x.shape[0]
                    continue
                if p.deadline and self._late(p, now):
                    q.popleft()
                    self._queued_rows -= p.x.shape[0]
                    self._expire(p, now)
                    continue
                if taken and rows + p.x.shape[0] > max_rows:
                    break
                q.popleft()
                self._queued_rows -= p.x.shape[0]
                taken.append(p)
                rows += p.x.shape[0]
            max_rows = self.variant.max_batch
            if not taken:
                return
            for p in taken:
                p.dispatched_s = now
            bid = next(self._batch_ids)
            self._inflight[bid] = taken
            x = taken[0].x if len(taken) == 1 else np.concatenate([p.x for p in taken])
            best.send(bid, x, now)

    # -- background (offline) batches -----------------------------------------------------
    def submit_background(self, x: np.ndarray) -> asyncio.Future[Served]:
        """Queue one low-priority batch (``x``: [rows, features], rows <= max_batch), sent only
        to a replica with nothing in flight while no online query waits. Not counted in the
        window counters or the queue length the policy sees. Raises :class:`Overloaded` when
        the instance is going away; the future fails with the usual errors (no retry)."""
        if self._unloading:
            raise Overloaded(f"{self.variant.name} on worker {self.worker_id} is unloading")
        fut: asyncio.Future[Served] = self._loop.create_future()
        self._background.append(_Pending(x, fut, self._clock(), math.inf))
        self._dispatch()
        return fut

    def cancel_background(self) -> int:
        """Cancel the background batches not sent yet (those in flight finish); how many."""
        n = 0
        while self._background:
            p = self._background.popleft()
            if not p.future.done():
                p.future.cancel()
                n += 1
        return n

    def _dispatch_background(self) -> None:
        now = self._clock()
        for r in self._replicas:
            if r.state is not ReplicaState.IDLE or r.inflight:
                continue
            while self._background and self._background[0].future.done():
                self._background.popleft()
            if not self._background:
                return
            p = self._background.popleft()
            p.dispatched_s = now
            bid = next(self._batch_ids)
            self._bg_inflight[bid] = p
            r.send(bid, p.x, now)

    def _background_answered(self, replica: Replica, p: _Pending, result: ipc.Result) -> None:
        now = self._clock()
        self._counters().busy_s += now - replica.busy_since_s  # the CPU it used (utilisation), no query counted
        replica.busy_since_s = now
        if not p.future.done():
            p.future.set_result(Served(result.y, (p.dispatched_s - p.enqueued_s) * 1000.0, result.infer_ms, 1,
                                       replica.pid or 0))
        self._dispatch()
        self._maybe_finish_unload()

    # -- supervision ---------------------------------------------------------------------
    def batch_limit_ms(self, rows: int) -> float:
        """How long a replica's current run of ``rows`` rows may take before it is hung."""
        assert self.guard is not None
        b = min(max(rows, 1), self.variant.max_batch)
        return self.guard.batch_timeout_factor * self.variant.latency_ms(b) + self.guard.batch_timeout_margin_ms

    def _supervise(self) -> None:
        g = self.guard
        assert g is not None
        self._supervisor = None
        if self.gone:
            return
        now = self._clock()
        a = g.service_estimate_alpha
        self._lag_ms = (1 - a) * self._lag_ms + a * max(now - self._due_s, 0.0) * 1000.0
        for r in list(self._replicas):
            if r.state is ReplicaState.STARTING and now - r.started_s > g.start_timeout_s:
                self._hang(r, now - r.started_s, f"not ready {now - r.started_s:.1f} s after its start")
            elif r.inflight and r.state is not ReplicaState.DEAD:
                r.drain()  # answers already written are not a hang
                if not r.inflight or r.state is ReplicaState.DEAD:
                    continue
                ran_ms = (now - r.head_since_s) * 1000.0
                limit_ms = self.batch_limit_ms(r.rows_in_flight)
                if ran_ms > limit_ms:
                    self._hang(r, ran_ms / 1000.0, f"batch running {ran_ms:.0f} ms, over its limit of {limit_ms:.0f} ms")
            hb = self.settings.heartbeat
            if hb is not None and r.state in (ReplicaState.IDLE, ReplicaState.BUSY):
                why = r.heartbeat(now, hb.period_s, hb.timeout_s)
                if why is not None:
                    self._hang(r, now - r.heard_s, why)
        if g.shed_by_deadline and self._served_once and self._queue:
            keep: deque[_Pending] = deque()
            for p in self._queue:
                if p.future.done():
                    continue
                if p.deadline and self._late(p, now):
                    self._expire(p, now)
                else:
                    keep.append(p)
            self._queue = keep
            self._queued_rows = sum(p.x.shape[0] for p in keep)
        if not self.gone:
            self._arm()

    def _arm(self) -> None:
        assert self.guard is not None
        self._due_s = self._clock() + self.guard.supervise_period_s
        self._supervisor = self._loop.call_later(self.guard.supervise_period_s, self._supervise)

    def _hang(self, r: Replica, after_s: float, why: str) -> None:
        self.hung.append((r.pid or 0, after_s))
        self.shed["replica_hung"] += 1
        r.kill_hung(why)

    # -- ReplicaOwner callbacks ----------------------------------------------------------
    def on_ready(self, replica: Replica) -> None:
        self._restarts = 0
        self._served_once = True
        took = self._clock() - replica.started_s
        a = self.guard.service_estimate_alpha if self.guard else 1.0
        self._start_s = took if self._start_s < 0 else (1 - a) * self._start_s + a * took
        if self._unloading and not self._queue:
            replica.stop()
        self._on_change(self)
        self._dispatch()

    def on_result(self, replica: Replica, result: ipc.Result) -> None:
        bg = self._bg_inflight.pop(result.batch_id, None)
        if bg is not None:
            self._background_answered(replica, bg, result)
            return
        taken = self._inflight.pop(result.batch_id, [])
        now = self._clock()
        w = self._counters()
        w.busy_s += now - replica.busy_since_s
        replica.busy_since_s = now
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
        if self.guard is not None and start:
            a = self.guard.service_estimate_alpha
            window = self._window
            if len(window) == window.maxlen:
                old_ms, old_rows = window[0]
                self._busy_ms -= old_ms
                self._busy_rows -= old_rows
            window.append((replica.last_interval_s * 1000.0, start))
            self._busy_ms += replica.last_interval_s * 1000.0
            self._busy_rows += start
            self._row_ms = max(self._busy_ms / self._busy_rows, result.infer_ms / max(result.run_rows, 1))
            if replica.last_idle_turnaround_s >= 0:
                extra_ms = max(replica.last_idle_turnaround_s * 1000.0 - result.infer_ms, 0.0)
                self._overhead_ms = (1 - a) * self._overhead_ms + a * extra_ms
        self._dispatch()
        self._maybe_finish_unload()

    def on_failed(self, replica: Replica, batch_id: int, reason: str) -> None:
        bg = self._bg_inflight.pop(batch_id, None)
        taken = self._inflight.pop(batch_id, []) if bg is None else [bg]
        for p in taken:
            if not p.future.done():
                p.future.set_exception(InferenceFailed(f"{self.variant.name}: inference failed: {reason}"))
        self._dispatch()
        self._maybe_finish_unload()

    def on_exit(self, replica: Replica, reason: str | None, lost: list[int]) -> None:
        self._replicas.remove(replica)
        now = self._clock()
        taken = [p for bid in lost for p in self._inflight.pop(bid, [])]
        why = reason or "worker process exited"
        for bid in lost:  # background batches are not retried here: their owner resubmits
            bg = self._bg_inflight.pop(bid, None)
            if bg is not None and not bg.future.done():
                bg.future.set_exception(WorkerDied(f"{self.variant.name}: the replica serving a background batch "
                                                   f"died ({why})"))
        retry: list[_Pending] = []
        for p in taken:
            if p.future.done():
                continue
            if p.attempts > 0:
                p.future.set_exception(
                    WorkerDied(f"{self.variant.name}: the replica serving this query died twice ({why})")
                )
            elif p.deadline and self._late(p, now):
                self._expire(p, now)
            else:
                p.attempts += 1
                retry.append(p)
        self._queue.extendleft(reversed(retry))
        self._queued_rows += sum(p.x.shape[0] for p in retry)
        if reason is not None and not self._unloading:
            live = sum(r.state is not ReplicaState.DEAD for r in self._replicas)
            if live < self._target:
                if self._restarts < self.settings.max_restarts:
                    self._restarts += 1
                    self._new_replica()
                elif live == 0:
                    self.gave_up = f"replicas keep dying ({reason})"
                    self._fail_all(
                        WorkerDied(f"{self.variant.name}: replicas keep dying ({reason}); giving up")
                    )
                    self._unloading = True
                    self._target = 0
        self._on_change(self)
        if (self._unloading and all(r.state is ReplicaState.DEAD for r in self._replicas) and not self._inflight
                and not self._bg_inflight):
            self._fail_all(WorkerDied(f"{self.variant.name}: unloaded before the query could run"))
            self._finish()
        else:
            self._dispatch()

    def _fail_background(self, exc: BackendError) -> None:
        while self._background:
            p = self._background.popleft()
            if not p.future.done():
                p.future.set_exception(exc)

    def _fail_all(self, exc: BackendError) -> None:
        self._fail_background(exc)
        for p in self._bg_inflight.values():
            if not p.future.done():
                p.future.set_exception(exc)
        self._bg_inflight.clear()
        self._queued_rows = 0
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
