"""The simulator's mechanism under the control layer's cluster: start-up delays, load
latencies, queues, drains and accelerator sharing in simulated time.

What an action means, what fits where (:mod:`infaas_core.control.resources`), what a worker
costs and how window statistics are computed all live in :mod:`infaas_core.control`; this
module only makes things happen at the right simulated time:

- a worker added with a start-up delay becomes RUNNING ``startup_s`` later;
- a new instance's replicas serve from ``load_latency_ms`` (+ ``sim.load_extra_ms``) after
  the load (its queue accepts queries at once; they wait for the load), and so do replicas
  added to it; service times are the latency model's x ``sim.service_scale`` + ``sim.service_extra_ms`` (the machine
  the catalog runs on; the policy still reads the catalog as profiled, as a real server's does), or a measured
  service profile's for the variants it lists (``sim.service_profile``);
- a retired replica leaves the instance's heap of replicas (the ones freeing first go);
- an unloading instance is gone once its last started batch has finished and nothing waits;
- accelerator replicas on one worker share the devices' compute (processor sharing at the
  window scale): when the nominal busy time of a device class over the last window exceeds
  ``devices * window``, its service times stretch by that ratio (``sim.accelerator_sharing``).
  CPU replicas never share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from infaas_core.catalog import Catalog
from infaas_core.control.cluster import Cluster, Instance, Worker
from infaas_core.model import InstanceType
from infaas_sim.admission import RowEstimate
from infaas_sim.dataplane import Queue
from infaas_sim.latency import LatencyModel, NoiseStream
from infaas_sim.service_profile import ServiceProfile
from infaas_sim.sharing import EventSharing, stretcher

Schedule = Callable[[float, Callable[[], None]], None]


class SimMechanism:
    """Implements :class:`infaas_core.control.cluster.Mechanism` in simulated time."""

    def __init__(self, catalog: Catalog, model: LatencyModel, schedule: Schedule, clock: list[float],
                 sharing: bool, recheck_s: float) -> None:
        self.catalog = catalog
        self.model = model
        self.schedule = schedule
        self.clock = clock  # clock[0] is the view's now_s
        self.sharing = sharing
        self.recheck_s = recheck_s  # how soon to look again at an unloading instance that still has queries
        self.cluster: Cluster | None = None
        self._tables: dict[str, tuple[list[float], list[float]]] = {}
        self.accel_factor: dict[int, dict[str, float]] = {}
        self.on_collect: Callable[[float, float], None] = lambda t0_s, now_s: None  # the engine counts [t0, now)
        self.on_gone: Callable[[Instance], None] = lambda inst: None  # ... and keeps a gone one's
        self._last_collect_s = 0.0
        self.advance_args: tuple[NoiseStream, float, bool] | None = None  # lets a queue bring itself to the view's time
        self.shed_answers: int | None = None  # deadline shedding (sim.admission): batches of each queue's row estimate
        # shared cores (sim.frontend.machine_cores): (cores, front-end CPU s per query, cores per
        # loading replica, other work in cores)
        self.cpu_share: tuple[int, float, float, float] | None = None
        self.routed = 0  # queries that reached the policy since the last window (the engine counts them)
        # the machine the catalog is run on (sim.service_scale, sim.load_extra_ms): service times and
        # load latencies of the data plane; the policy reads the catalog as it is
        self.service_scale = 1.0
        self.service_extra_s = 0.0
        self.load_extra_s = 0.0
        self.service_profile: ServiceProfile = {}  # sim.service_profile: measured times by variant
        self.event_share: EventSharing | None = None  # sim.frontend.sharing=event: each CPU batch's own stretch

    def _c(self) -> Cluster:
        assert self.cluster is not None, "SimMechanism used before its cluster was attached"
        return self.cluster

    # -- workers ---------------------------------------------------------------------------
    def admit_worker(self, itype: InstanceType) -> str | None:
        return None

    def start_worker(self, w: Worker, startup_s: float) -> None:
        self.accel_factor[w.id] = {d: 1.0 for d in w.instance_type.device_classes if d != "cpu"}
        if startup_s > 0:
            self.schedule(w.started_s, partial(self._c().worker_ready, w))

    def stop_worker(self, w: Worker) -> None:
        self.accel_factor.pop(w.id, None)

    # -- instances -------------------------------------------------------------------------
    def start_instance(self, inst: Instance) -> Queue:
        v = inst.variant
        tables = self._tables.get(v.name)
        if tables is None:
            measured = self.service_profile.get(v.name)
            if measured is not None:  # sim.service_profile: this machine's times for the variant
                tables = self.model.tables_ms(*measured)
            else:
                tables = self.model.tables(v)
                if self.service_scale != 1.0 or self.service_extra_s:
                    # (a log-sd is scale-free; the fixed per-call part is given the batch's noise too)
                    p50 = [0.0] + [x * self.service_scale + self.service_extra_s for x in tables[0][1:]]
                    tables = (p50, tables[1])
            self._tables[v.name] = tables
        q = Queue(inst.id, v, inst.worker_id, tables, self.clock)
        q._adv = self.advance_args
        if not v.is_cpu:
            q.factor = self.accel_factor[inst.worker_id].get(v.hardware, 1.0)
        elif self.event_share is not None:
            q.stretch = stretcher(self.event_share, inst)
            if self.event_share.transfer_on_loop:
                q.hold = self.event_share.loop_free
        ready_s = self.clock[0] + v.load_latency_ms / 1000.0 + self.load_extra_s
        q.servers = [(ready_s, 0)] * inst.replicas
        q.first_ready_s = ready_s
        if self.shed_answers is not None:
            q.rows = RowEstimate(v.batch1_latency_ms, self.shed_answers)  # the profile's, as the executor
        self.schedule(ready_s, partial(self._c().instance_ready, inst))
        return q

    def add_replicas(self, inst: Instance, n: int) -> None:
        q: Queue = inst.mech
        ready_s = self.clock[0] + inst.variant.load_latency_ms / 1000.0 + self.load_extra_s
        q.servers.extend([(ready_s, 0)] * n)
        q.servers.sort()  # a replica added at ready_s may be later than busy ones; keep the heap valid

    def remove_replicas(self, inst: Instance, n: int) -> None:
        q: Queue = inst.mech
        q.servers.sort()
        del q.servers[:n]

    def start_unload(self, inst: Instance) -> None:
        q: Queue = inst.mech
        drained = q.drained_at_s
        now = self.clock[0]
        self.schedule(max(now, drained if math.isfinite(drained) else now), partial(self._try_finish, inst))

    def _try_finish(self, inst: Instance) -> None:
        """At (or after) the drain time; looks again while queries still wait."""
        q: Queue = inst.mech
        drained = q.drained_at_s
        now = self.clock[0]
        if drained > now:
            # (the least tuple holds the least free time)
            nxt = drained if math.isfinite(drained) else max(min(q.servers)[0], now + self.recheck_s)
            self.schedule(nxt, partial(self._try_finish, inst))
            return
        self.on_gone(inst)
        self._c().instance_gone(inst)

    # -- observation -----------------------------------------------------------------------
    def collect(self, now_s: float) -> None:
        """The engine counts each queue's window (and records its finished queries); then the
        sharing stretch of the next window is set from this window's nominal demand."""
        t0_s, self._last_collect_s = self._last_collect_s, now_s
        window_s = now_s - t0_s
        self.on_collect(t0_s, now_s)
        if self.cpu_share is not None:
            self._share_cpu(t0_s, now_s)
        self.routed = 0
        for w in self._c().workers:
            factors = self.accel_factor.get(w.id)
            if not factors:
                for inst in w.instances:
                    inst.mech.busy_s = 0.0
                continue
            nominal = dict.fromkeys(factors, 0.0)
            for inst in w.instances:
                q: Queue = inst.mech
                if not inst.variant.is_cpu:
                    nominal[inst.variant.hardware] += q.busy_s
                q.busy_s = 0.0
            t = w.instance_type
            for d, busy in nominal.items():
                cap = t.accelerator_count(d) * window_s
                factors[d] = max(busy / cap, 1.0) if (self.sharing and cap > 0) else 1.0
            for inst in w.instances:
                if not inst.variant.is_cpu:
                    inst.mech.factor = factors[inst.variant.hardware]

    def _share_cpu(self, t0_s: float, now_s: float) -> None:
        """Shared cores (:mod:`infaas_sim.frontend`): the window's CPU demand on each worker —
        its CPU replicas' nominal service, the front end's CPU for the queries that reached the
        policy, the replicas loading, other work — over the machine's cores stretches the CPU replicas'
        service of the next window by the ratio (never below 1). Reads ``busy_s`` before
        :meth:`collect` resets it."""
        assert self.cpu_share is not None
        cores, fe_s, loading, background = self.cpu_share
        window_s = now_s - t0_s
        routed, self.routed = self.routed, 0
        if window_s <= 0:
            return
        for w in self._c().workers:
            demand = routed * fe_s + background * window_s
            cpu = [inst for inst in w.instances if inst.variant.is_cpu]
            for inst in cpu:
                q: Queue = inst.mech
                demand += q.busy_s
                load_s = inst.variant.load_latency_ms / 1000.0 + self.load_extra_s
                for free, b in q.servers:
                    if b == 0 and free > t0_s:  # a replica loading (or ready and not yet served)
                        demand += loading * max(min(free, now_s) - max(free - load_s, t0_s), 0.0)
            factor = max(demand / (cores * window_s), 1.0)
            for inst in cpu:
                inst.mech.factor = factor
