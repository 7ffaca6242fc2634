"""The simulation: SimPy drives the control plane, the data plane moves in bulk.

SimPy events exist only for control: the control loop's next due part or timeline sample
(one process: the parts are driven by :class:`infaas_core.control.loop.ControlLoop` —
observation window, monitor, model and VM autoscalers — and a sample due at the same instant
is taken after them), worker start-ups, instance loads becoming ready and unload
completions. No event or process exists per query.

Idle time costs nothing per simulated second: with ``sim.idle_fast_forward``, once the data
plane is empty and nothing is pending, and the control loop finds the cluster and the policy
at a fixed point (:meth:`ControlLoop.settled`), the windows up to the next arrival are skipped
(:meth:`ControlLoop.skip_to`; exact, see :mod:`infaas_core.control.loop`), and the timeline
has a bounded number of rows (:mod:`infaas_sim.timeline`).

The cluster the policy reads is the control layer's
:class:`~infaas_core.control.cluster.Cluster`; the simulator supplies its mechanism
(:class:`~infaas_sim.cluster.SimMechanism`) and the data plane (:mod:`infaas_sim.dataplane`).

Before any control event at time ``t`` runs, :meth:`Simulation.advance_to` brings the data
plane to ``t``: the arrivals in ``[t_prev, t)`` are routed in arrival order (the policy's
``select`` is called per query with ``view.now_s`` at that query's arrival; a queue whose
length is read is first brought to that time, so the view is exact for every decision — a
policy may cache its decision until ``view.version`` changes) and appended to their
instances' queues, then each instance's batch recursion runs up to ``t``
(:mod:`infaas_sim.dataplane`). Windows (``sim.route_period_s``) only group the work.

Every observation window the queues are flushed: finished queries go to the
:class:`~infaas_sim.recorder.Recorder`, and each queue's raw counts of the window go to the
control layer, which publishes the window's statistics and utilisation (a new view version)
before the policy's monitor runs.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from functools import partial
from typing import Any

import numpy as np
import simpy

from infaas_core.actions import LoadAndRoute, Reject, RejectKind, Route
from infaas_core.configs import resolve_path
from infaas_core.control.cluster import Cluster, Instance
from infaas_core.control.loop import ControlLoop
from infaas_core.model import CPU
from infaas_core.policies import PolicyContext, make_policy
from infaas_sim import admission as adm_rule
from infaas_sim.cluster import SimMechanism
from infaas_sim.config import SimInputs
from infaas_sim.dataplane import KEY_BITS, Flushed, Queue
from infaas_sim.latency import NoiseStream, latency_model
from infaas_sim.offline import OfflineStream
from infaas_sim.recorder import DROPPED_NO_VARIANT, Recorder
from infaas_sim.service_profile import load_service_profile
from infaas_sim.timeline import Timeline


def _ignore(_: float) -> None:
    """Deadline sink of rejected queries."""


class Simulation:
    """One run. Build, then :meth:`run` once."""

    def __init__(self, inputs: SimInputs) -> None:
        self.inputs = inputs
        s = inputs.sim
        self.settings = s
        self.env = simpy.Environment()
        self.clock = [0.0]
        seeds = np.random.SeedSequence(inputs.seed).spawn(2)
        self.rng_apps = np.random.default_rng(seeds[0])
        model = latency_model(s.latency_model)
        self.noise = NoiseStream(model.noise, np.random.default_rng(seeds[1]))
        self.horizon_s = float(inputs.arrivals.duration_s)
        self.policy = make_policy(
            inputs.policy, PolicyContext(inputs.catalog, inputs.cluster, inputs.apps), dict(inputs.policy_params)
        )
        clock = self.clock
        self.mechanism = SimMechanism(inputs.catalog, model, self._schedule, clock, s.accelerator_sharing,
                                      recheck_s=s.route_period_s)
        self.cluster = Cluster(inputs.catalog, inputs.cluster, self.policy.observation, lambda: clock[0],
                               self.mechanism)
        self.mechanism.cluster = self.cluster
        self.mechanism.advance_args = (self.noise, s.batch_timeout_ms / 1000.0, s.drop_late)
        self.mechanism.service_scale = float(s.service_scale)
        self.mechanism.service_extra_s = float(s.service_extra_ms) / 1000.0
        self.mechanism.load_extra_s = float(s.load_extra_ms) / 1000.0
        if s.service_profile is not None:
            self.mechanism.service_profile = load_service_profile(
                resolve_path(s.service_profile, key="sim.service_profile"), inputs.catalog)
        self.mechanism.on_collect = self._collect
        self.mechanism.on_gone = self._keep_results
        self.view = self.cluster
        self.apps = inputs.apps
        shares = np.array([a.share for a in self.apps], dtype=np.float64)
        self.app_cdf = np.cumsum(shares / shares.sum())
        self.app_cdf[-1] = 1.0
        self.timeline = Timeline(s.timeline_period_s, self.horizon_s, s.timeline_max_rows)
        self.recorder = Recorder(self.apps, inputs.catalog.variants, None if s.stream else inputs.arrivals.count,
                                 self.timeline)
        self.vindex = {v.name: i for i, v in enumerate(inputs.catalog.variants)}
        self._slo_finite = bool(np.isfinite(self.recorder.slo_ms).all())
        self.timeout_s = s.batch_timeout_ms / 1000.0
        self.drop_late = s.drop_late
        self._reqs = [a.requirements for a in self.apps]
        self._names = [a.name for a in self.apps]
        self._slo_s = [a.requirements.latency_slo_ms / 1000.0 for a in self.apps]
        sel = self.policy.select
        self._selectors = [partial(sel, r, self.view, n) for r, n in zip(self._reqs, self._names)]
        self._select_hits: Callable[..., int] | None = getattr(getattr(sel, "__self__", None), "select_hits", None)
        # the server's admission (sim.admission, infaas_sim/admission.py): checked per query, so
        # no run of hits is carried out in one go
        self._admission = s.admission if s.admission.enabled else None
        if s.admission.shed_by_deadline:
            self.mechanism.shed_answers = s.admission.service_estimate_answers
        fe = s.frontend
        if fe.enabled and fe.machine_cores is not None and fe.sharing == "window":  # shared cores (infaas_sim/frontend.py)
            self.mechanism.cpu_share = (fe.machine_cores, fe.service_ms / 1000.0, float(fe.loading_cores),
                                        float(fe.background_cores))
        if self._admission is not None:
            self._select_hits = None
        self.shed: Counter[str] = Counter()  # refused / failed by the admission, by reason
        self._shed: list[tuple[float, int, int, int]] = []  # (time, key, variant, worker) refused since the flush
        # the routing buffer: the current chunk's arrivals (time, key, app), next position
        self._chunks: Iterator[np.ndarray] = iter(inputs.arrivals.chunks())
        self._next_id = 0
        self._T: list[float] = []
        self._K: list[int] = []
        self._A: list[int] = []
        self._pos = 0
        self._t_routed = 0.0
        self._out: list[Any] = []  # decisions of a run of select_hits (empty between runs)
        self._active: dict[int, Queue] = {}  # queues with queries not yet started
        self._orphans: list[tuple[Any, ...]] = []  # results of instances unloaded since the last flush
        self._rej_t: list[float] = []  # infeasible: rejected
        self._rej_k: list[int] = []
        self._drop_t: list[float] = []  # refused for lack of capacity: dropped (a violation)
        self._drop_k: list[int] = []
        self.reject_reasons: Counter[str] = Counter()
        # successful Route resolutions of the current view version (a route's instance and its
        # state change only with the version), reused across routing windows
        self._routes: dict[int, list[Any]] = {}
        self._routes_version = -1
        period = self.policy.monitor_period_s
        self.stats_period_s = s.stats_period_s or period or 1.0
        self.loop = ControlLoop(self.policy, self.cluster, self.stats_period_s, on_window=self._window_done,
                                quiet_min_s=s.idle_quiet_min_s if s.idle_fast_forward else None)
        self._pending = 0  # mechanism events scheduled and not yet run (start-ups, loads, unloads)
        self.progress: Any = None
        self.offline = OfflineStream.build(self)  # sim.offline.jobs (None: none)

    # -- scheduling ------------------------------------------------------------------------
    def _schedule(self, at_s: float, fn: Callable[[], None]) -> None:
        ev = self.env.timeout(max(at_s - self.env.now, 0.0))
        self._pending += 1
        ev.callbacks.append(lambda _ev: self._control(fn))

    def _control(self, fn: Callable[[], None]) -> None:
        self._pending -= 1
        self.advance_to(self.env.now)
        fn()

    def _control_loop(self) -> Generator[Any, Any, None]:
        """The policy's periodic parts when the control loop says they are due, then the
        timeline sample when it is due; idle windows skipped when the loop has settled."""
        env, loop = self.env, self.loop
        period = self.timeline.period_s
        next_tick = 0.0
        ff = loop.quiet_s is not None
        while True:
            due = loop.next_due_s()
            yield env.timeout(max(min(due, next_tick) - env.now, 0.0))
            now = env.now
            self.advance_to(now)
            if due <= now + 1e-12:
                loop.run_due(now)
                if self.offline is not None:
                    self.offline.check(now)
                if ff:
                    idle = self._idle(now)
                    if loop.settled(now, idle, self._mechanism_state() if idle else None):
                        loop.skip_to(min(self._next_arrival_s(), self.horizon_s))
            if next_tick <= now + 1e-12:
                self._timeline_tick()
                next_tick += period

    def _idle(self, now_s: float) -> bool:
        """Nothing queued, in service, unrecorded or pending: only an arrival can change the run."""
        if self._pending or self._active or self._orphans or self._rej_k or self._drop_k or self._shed:
            return False
        if self.offline is not None and not self.offline.idle:
            return False
        for inst in self.cluster.instances.values():
            q: Queue = inst.mech
            if q.pt or q.carry_fin.size or q.carry_bfin.size or q.busy_s:
                return False
            for free_s, _ in q.servers:
                if free_s > now_s:
                    return False
        return True

    def _mechanism_state(self) -> tuple[Any, ...]:
        """The simulator's state besides the cluster's that a window reads: sharing stretches."""
        return (self.mechanism.accel_factor, [inst.mech.factor for inst in self.cluster.instances.values()])

    def _next_arrival_s(self) -> float:
        """When the next unrouted query arrives (``inf`` when none is left)."""
        if self._pos >= len(self._T) and not self._next_chunk():
            return math.inf
        return self._T[self._pos]

    # -- the data plane --------------------------------------------------------------------
    def _next_chunk(self) -> bool:
        """Read the next chunk of arrivals into the routing buffer; False at the end."""
        times = next(self._chunks, None)
        if times is None:
            return False
        n = int(times.size)
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        if len(self.apps) == 1:
            app = np.zeros(n, dtype=np.int64)
        else:
            app = np.searchsorted(self.app_cdf, self.rng_apps.random(n), side="right").astype(np.int64)
        keys = (ids << KEY_BITS) | app
        self.recorder.arrivals(times, keys)
        self._T = times.tolist()
        self._K = keys.tolist()
        self._A = app.tolist()
        self._pos = 0
        return True

    def advance_to(self, t: float) -> None:
        """Route the arrivals before ``t`` and run every queue up to ``t``.

        Routing windows start at the first unrouted arrival ``a0`` (the queues are first
        brought to ``a0``, so the view is exact there) and last at most
        ``sim.route_period_s``; empty time costs nothing.
        """
        if t <= self._t_routed:
            return
        period = self.settings.route_period_s
        clock, mech = self.clock, self.mechanism
        T, pos = self._T, self._pos  # (only _next_chunk replaces the buffer)
        while True:
            if pos >= len(T):
                if not self._next_chunk():
                    break
                T, pos = self._T, self._pos
            a0 = T[pos]
            if a0 >= t:
                break
            self._advance_queues(a0)
            clock[0] = a0
            w_end = a0 + period
            hi = bisect_left(T, w_end if w_end < t else t, pos)
            self._route(pos, hi)
            mech.routed += hi - pos
            pos = self._pos = hi
        self._advance_queues(t)
        self._t_routed = t
        clock[0] = t

    def _advance_queues(self, t: float) -> None:
        if self.offline is not None:
            self.offline.fill(t)  # offline batches in the gaps before t (infaas_sim/offline.py)
        active = self._active
        if not active:
            return
        noise, tmo, drop = self.noise, self.timeout_s, self.drop_late
        for inst in list(active.values()):
            if inst.servers[0][0] >= t:
                continue  # every replica is busy past t: no batch can start before it
            inst.advance(t, noise, tmo, drop)
            if inst.head >= len(inst.pt):
                del active[inst.id]

    def _route(self, lo: int, hi: int) -> None:
        """Ask the policy for each query of ``[lo, hi)`` and append it to its instance.

        Resolved decisions are cached by identity for the window (policies replay cached
        ``Route`` objects), so a repeated decision costs one dict lookup; a ``LoadAndRoute``
        is carried out every time it is returned. A selector that offers ``select_hits``
        (:meth:`infaas_core.policies.infaas_selection.InfaasSelector.select_hits`) decides
        the runs of queries that are cache hits in one call, and the decisions are carried
        out after it: the same decisions, in the same order, at the same times. A run is
        tried first (most windows are hits throughout); a query it does not decide goes
        through ``select``.
        """
        T = self._T
        hits = self._select_hits
        out = self._out
        cache: dict[int, list[Any]] = {}
        i = lo
        if hits is not None:
            reqs, A, view = self._reqs, self._A, self.view
            i = self._carry(hits(reqs, A, T, i, hi, view, out), i, out, cache)
        if i < hi:  # (the rest only where a run did not decide the whole window)
            K, A = self._K, self._A
            slo_s = self._slo_s
            selectors = self._selectors
            reqs = self._reqs
            view = self.view
            drop = self.drop_late
            get = cache.get
            resolve = self._resolve
            clock = self.clock
            admit = self._admit if self._admission is not None else None
            while i < hi:
                a = A[i]
                t = T[i]
                clock[0] = t  # each decision sees the cluster at its query's arrival
                d = selectors[a]()
                e = get(id(d))
                if e is None:
                    e = resolve(d, t)
                    if type(d) is not LoadAndRoute:
                        cache[id(d)] = e
                _, ta, ka, why, da, _, q = e
                if admit is not None and q is not None:
                    admit(q, t, K[i], a)
                    i += 1
                    continue
                ta(t)
                ka(K[i])
                if why is not None:
                    e[5] += 1
                elif drop:
                    da(t + slo_s[a])
                i += 1
                if hits is not None and i < hi:
                    i = self._carry(hits(reqs, A, T, i, hi, view, out), i, out, cache)
        for e in cache.values():
            if e[3] is not None:
                self.reject_reasons[e[3]] += e[5]

    def _carry(self, j: int, i: int, out: list[Any], cache: dict[int, list[Any]]) -> int:
        """Carry out the decisions ``out`` of the run ``[i, j)`` of :meth:`_route` (cleared
        after); returns ``j``. (An entry of ``cache`` holds its decision, so the decision's id
        cannot be reused while it is cached: a hit needs no identity check.)"""
        if j == i:
            return i
        T, K = self._T, self._K
        get = cache.get
        clock = self.clock
        if self.drop_late:
            A, slo_s = self._A, self._slo_s
            for d, t, k, a in zip(out, T[i:j], K[i:j], A[i:j]):
                e = get(id(d))
                if e is None:
                    clock[0] = t
                    e = self._resolve(d, t)
                    if type(d) is not LoadAndRoute:
                        cache[id(d)] = e
                e[1](t)
                e[2](k)
                if e[3] is not None:
                    e[5] += 1
                else:
                    e[4](t + slo_s[a])
        else:
            routes, active = self._routes, self._active
            for d, t, k in zip(out, T[i:j], K[i:j]):
                e = get(id(d))
                if e is None:
                    clock[0] = t
                    # _resolve's first case inlined (the common one: a route resolved in an
                    # earlier window of this view version; its queue made active again)
                    e = routes.get(id(d))
                    if e is not None and e[0] is d and self._routes_version == self.cluster.version:
                        q = e[6]
                        if q.id not in active:
                            active[q.id] = q
                    else:
                        e = self._resolve(d, t)
                    if type(d) is not LoadAndRoute:
                        cache[id(d)] = e
                e[1](t)
                e[2](k)
                if e[3] is not None:
                    e[5] += 1
        out.clear()
        clock[0] = T[j - 1]
        return j

    def _admit(self, q: Queue, t: float, key: int, app: int) -> None:
        """A query routed to ``q`` at ``t``, through the server's admission
        (:mod:`infaas_sim.admission`): appended to the queue, or refused (dropped, counted
        in :attr:`shed`)."""
        adm = self._admission
        assert adm is not None
        pt, servers = q.pt, q.servers
        if q.head < len(pt) and servers and servers[0][0] < t:
            q.advance(t, self.noise, self.timeout_s, self.drop_late)  # every earlier arrival is routed
        not_started = len(pt) - q.head
        in_service = busy = idle = 0
        newest_ready = -math.inf
        for free, b in servers:
            if free > t:
                if b:
                    in_service += b
                    busy += 1
                elif free > newest_ready:
                    newest_ready = free  # a replica still loading
            else:
                idle += 1
        serving = busy + idle
        # rows the serving replicas would take from the queue at once (the executor's pipes)
        depth = adm.max_rows_in_flight
        room = serving * max(depth, q.max_batch) - in_service if depth else idle * q.max_batch
        waiting = max(not_started - room, 0)
        why: str | None = None
        if adm.max_queue is not None and waiting >= adm.max_queue:
            why = adm_rule.QUEUE_FULL
        slo_s = self._slo_s[app]
        guarded = adm.shed_by_deadline and t >= q.first_ready_s and math.isfinite(slo_s)
        # the SLO counts from the request's arrival at the server (the front end's share is spent)
        client = self.recorder.client_arrival_s
        origin = t if client is None else float(client[key >> KEY_BITS])
        if why is None and guarded:
            rows = q.rows
            assert rows is not None
            own = adm_rule.own_ms(q.variant.batch1_latency_ms, 1, rows.ms)
            left_ms = (newest_ready - t) * 1000.0 if newest_ready > t else math.inf
            est = adm_rule.estimate_finish_ms(not_started + in_service, serving, rows.ms, own, left_ms)
            if est + (t - origin) * 1000.0 > slo_s * 1000.0:
                why = adm_rule.DEADLINE_ADMISSION
        if why is not None:
            self.shed[why] += 1
            self._shed.append((t, key, self.vindex[q.variant.name], q.worker_id))
            return
        pt.append(t)
        q.pk.append(key)
        if q.rows is not None or self.drop_late:
            # checked for expiry at its batch's start only if it waits (one handed to a
            # replica at once was checked then by the executor, with nothing waited)
            waits = guarded and not_started >= room
            q.pd.append((origin if waits else t) + slo_s if (waits or self.drop_late) else math.inf)

    def _resolve(self, d: object, t: float) -> list[Any]:
        """``[decision, append time, append key, refusal reason, append deadline, count,
        queue (None: not routed)]``.

        What a decision means is the control layer's (``Cluster.route``); a refused route or
        load, and a ``Reject`` for lack of capacity, drop the query (a violation); only an
        infeasible ``Reject`` rejects it."""
        reason: str | None = None
        if type(d) is Route:  # routed before in this view version: the same instance (no side effect)
            if self._routes_version != self.cluster.version:
                self._routes.clear()
                self._routes_version = self.cluster.version
            e = self._routes.get(id(d))
            if e is not None and e[0] is d:
                q0: Queue = e[6]
                if q0.id not in self._active:
                    self._active[q0.id] = q0
                return e
        if type(d) is Route or type(d) is LoadAndRoute:
            inst, reason = self.cluster.route(d)  # type: ignore[arg-type]
            if inst is not None:
                q: Queue = inst.mech
                if q.id not in self._active:
                    self._active[q.id] = q
                e = [d, q.pt.append, q.pk.append, None, q.pd.append, 0, q]
                if type(d) is Route:
                    self._routes[id(d)] = e
                return e
            drop = True
        elif isinstance(d, Reject):
            reason = d.reason[:120]
            drop = d.kind is RejectKind.NO_CAPACITY
        else:
            reason, drop = f"unknown decision {type(d).__name__}", True
        if type(d) is LoadAndRoute:  # not cached: counted here, once
            self.reject_reasons[reason or ""] += 1
            reason = None
        if drop:
            return [d, self._drop_t.append, self._drop_k.append, reason, _ignore, 0, None]
        return [d, self._rej_t.append, self._rej_k.append, reason, _ignore, 0, None]

    # -- periodic control ------------------------------------------------------------------
    def _window_done(self, window_s: float) -> None:
        if self.progress is not None:
            self.progress.update(min(self.env.now, self.horizon_s) - self.progress.n)

    def _parts(self, q: Queue, fl: Flushed) -> tuple[Any, ...]:
        n = fl.keys.size
        if fl.dropped and q.rows is not None:  # deadline shedding: failed waiting (the server's 503)
            self.shed[adm_rule.DEADLINE_QUEUE] += int(np.count_nonzero(fl.batch == 0))
        return (fl.arrival_s, fl.keys, fl.start_s, fl.finish_s, fl.batch,
                np.full(n, self.vindex[q.variant.name], dtype=np.int32),
                np.full(n, q.worker_id, dtype=np.int32))  # fmt: skip

    def _keep_results(self, inst: Instance) -> None:
        """An instance is going away: keep its unflushed results for the next flush."""
        q: Queue = inst.mech
        fl = q.flush()
        if fl is not None:
            self._orphans.append(self._parts(q, fl))
        self._active.pop(q.id, None)

    def _collect(self, t0: float, now_s: float) -> None:
        """A window ``[t0, now_s)`` closes (the control layer asks): count each queue's window,
        record every query that started, was dropped or was refused in it."""
        parts, self._orphans = self._orphans, []
        if self.offline is not None:
            self.offline.collect(t0, now_s)
        slo_ms = self.recorder.slo_ms
        finite = self._slo_finite
        for inst in self.cluster.instances.values():
            q: Queue = inst.mech
            fl = q.close_window(t0, now_s, slo_ms, inst.counters, finite)
            if fl is not None:
                parts.append(self._parts(q, fl))
        for ts, ks, variant in ((self._rej_t, self._rej_k, -1), (self._drop_t, self._drop_k, DROPPED_NO_VARIANT)):
            if ks:
                n = len(ks)
                arr = np.array(ts)
                nan = np.full(n, np.nan)
                parts.append((arr, np.array(ks, dtype=np.int64), arr if variant != -1 else nan, nan,
                              np.zeros(n, dtype=np.int64), np.full(n, variant, dtype=np.int32),
                              np.full(n, -1, dtype=np.int32)))  # fmt: skip
        self._rej_t, self._rej_k, self._drop_t, self._drop_k = [], [], [], []
        if self._shed:  # refused by the admission: dropped at arrival, by the instance's variant
            t, k, v, w = (np.array(c) for c in zip(*self._shed))
            n = t.size
            parts.append((t, k.astype(np.int64), t, np.full(n, np.nan), np.zeros(n, dtype=np.int64),
                          v.astype(np.int32), w.astype(np.int32)))  # fmt: skip
            self._shed = []
        if parts:
            cols = [np.concatenate([p[i] for p in parts]) for i in range(7)]
            self.recorder.record(*cols)

    def _timeline_tick(self) -> None:
        now = self.env.now
        values: dict[str, float] = {"cost_usd": self.cluster.cost_usd(now)}
        for w in self.cluster.workers:
            k = f"workers_{w.instance_type.name}"
            values[k] = values.get(k, 0) + 1
        for inst in self.cluster.instances.values():
            k = f"replicas_{inst.variant.name}"
            values[k] = values.get(k, 0) + inst.replicas
        self.timeline.sample(now, values)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> None:
        env, s = self.env, self.settings
        self.loop.start()
        env.process(self._control_loop())
        show = s.progress == "on" or (s.progress == "auto" and sys.stderr.isatty() and self.horizon_s >= 30)
        if show:
            from tqdm import tqdm

            self.progress = tqdm(total=self.horizon_s, unit="sim-s", desc="simulating", leave=False)
        try:
            env.run(until=self.horizon_s)
            self._finish()
        finally:
            if self.progress is not None:
                self.progress.close()

    def _finish(self) -> None:
        """Route what is left (arrivals at the horizon itself), then drain every queue."""
        self.advance_to(self.horizon_s)
        self.advance_to(math.inf)
        self.clock[0] = self.horizon_s
        self.loop.close_final_window()
        self.recorder.finalize()

    def hardware_busy(self) -> dict[str, float]:
        """Mean utilisation per device class over live workers (for the summary)."""
        out: dict[str, list[float]] = {}
        for w in self.cluster.workers:
            for d, u in w.utilization.items():
                out.setdefault(d, []).append(u)
        return {d: float(np.mean(v)) for d, v in sorted(out.items(), key=lambda kv: (kv[0] != CPU, kv[0]))}
