"""Offline queries in the simulator: batch jobs as a low-priority stream on idle replicas.

The rule is the core's (:mod:`infaas_core.policies.offline`, docs/offline.md); this module is
its mechanism. A job (``sim.offline.jobs``: ``arrival_s``, ``inputs``, ``task``,
``min_accuracy``) is dispatched at its arrival by one SimPy event (none per batch or input):
the master picks the variant (:func:`offline_variant`) and the worker
(:func:`offline_worker`); when the worker does not hold the variant, a
:class:`~infaas_core.actions.LoadVariant` goes through the control layer (it shows in the
decision trace as a ``load``). A job that finds no running worker with room waits and is
dispatched again at the next control instant; one whose instance is unloaded or lost is
dispatched again the same way.

Its batches (``offline.batch`` inputs, the last one smaller) run on that instance's replicas,
one batch at a time per instance, in the gaps online queries leave:

- **Online first.** A batch starts at ``s`` only when no online query waits at ``s`` on the
  instance. The instance's queue becomes a :class:`SharedQueue` (the data plane's queue with
  the same slots; only ``advance`` differs): every advance of it — the engine's, and the lazy
  one a view read makes — walks online and offline batch starts in time order, the online
  one first at a tie, so the interleaving is exact at any routing window (a test checks that
  results do not depend on ``sim.route_period_s``). :meth:`OfflineStream.fill`, called from
  the engine's ``_advance_queues``, brings the queues of running jobs to ``t`` even when no
  online query is there. A started batch occupies its replica until it finishes (the
  replica's free time in the queue's heap), so an online query that arrives meanwhile waits
  behind it: the interference is modelled, not assumed away. One offline batch at a time per
  instance; jobs sharing an instance go in submission order. (With ``sim.batch_timeout_ms``
  > 0 an online query whose batch waits to fill holds offline work off from its arrival.)
- **Only while allowed.** After the control parts of each instant run (window, monitor...),
  :meth:`OfflineStream.check` evaluates :func:`may_run_offline` on the job's worker with the
  utilisation and flags just published; a job is paused from that instant until a later one
  allows it (a batch in service runs to completion).
- **Service time**: the variant's profiled latency at the batch size under the run's latency
  model, from a noise stream of its own (so online queries draw the same noise with and
  without offline work), stretched like any batch on the worker.
- **Utilisation**: an offline batch is busy time of its instance, so it counts in the
  worker's CPU utilisation (as ``/proc/stat`` counts it in the original) — offline work can
  push its own worker over the bound and pause itself.

Work stops at the horizon: no batch starts after it (one in service finishes); a job with
inputs left is reported unfinished. :meth:`OfflineStream.summary` gives, per job, inputs
done, completion time from submission, busy replica-seconds, their cost (the worker's price
times the variant's core share of it) and share of the run's cost, and time paused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from heapq import heapreplace
from typing import TYPE_CHECKING, Any

import numpy as np

from infaas_core.actions import LoadVariant
from infaas_core.control.cluster import Cluster, Instance
from infaas_core.errors import ConfigError
from infaas_core.model import Variant
from infaas_core.policies.offline import (
    OfflineConfig,
    flagged,
    may_run_offline,
    offline_variant,
    offline_worker,
)
from infaas_core.view import InstanceState
from infaas_sim.dataplane import Queue
from infaas_sim.latency import NOISE_EXPONENTIAL, NOISE_NONE, NoiseStream

if TYPE_CHECKING:  # the engine builds the stream; typing only, no import cycle
    from infaas_sim.engine import Simulation

_JOB_KEYS = ("arrival_s", "inputs", "task", "min_accuracy")
UTILISATION, FLAGGED, NO_WORKER = "utilisation", "flagged", "no_worker"
PAUSE_REASONS = (UTILISATION, FLAGGED, NO_WORKER)
"""Why a job did not run: its worker's CPU utilisation over the bound; a model on its worker
flagged; no running worker with room for its variant (or its instance went away)."""
NOISE_SPAWN_KEY = 2
"""The offline noise stream's child index of the run's seed (the engine's streams are 0, 1)."""


@dataclass(frozen=True, slots=True)
class OfflineJob:
    """One offline job of ``sim.offline.jobs``."""

    arrival_s: float
    inputs: int
    task: str
    min_accuracy: float


@dataclass(frozen=True, slots=True)
class OfflineJobs:
    """The ``sim.offline`` group: the jobs of the run (empty: no offline work at all)."""

    jobs: tuple[OfflineJob, ...]

    @classmethod
    def from_mapping(cls, m: Any, key: str = "sim.offline") -> OfflineJobs:
        if not isinstance(m, Mapping):
            raise ConfigError(key, f"must be a mapping, got {type(m).__name__}")
        for k in m:
            if k != "jobs":
                raise ConfigError(f"{key}.{k}", "unknown key; known: jobs")
        if "jobs" not in m:
            raise ConfigError(f"{key}.jobs", "missing key (configs/sim/default.yaml sets it)")
        raw = m["jobs"] if m["jobs"] is not None else []
        if not isinstance(raw, list | tuple):
            raise ConfigError(f"{key}.jobs", f"must be a list, got {type(raw).__name__}")
        return cls(tuple(_job(j, f"{key}.jobs[{i}]") for i, j in enumerate(raw)))


def _job(j: Any, key: str) -> OfflineJob:
    if not isinstance(j, Mapping):
        raise ConfigError(key, f"must be a mapping of {', '.join(_JOB_KEYS)}, got {j!r}")
    for k in j:
        if k not in _JOB_KEYS:
            raise ConfigError(f"{key}.{k}", f"unknown key; known: {', '.join(_JOB_KEYS)}")
    for k in _JOB_KEYS:
        if k not in j:
            raise ConfigError(f"{key}.{k}", "missing key")
    a, n, task, acc = j["arrival_s"], j["inputs"], j["task"], j["min_accuracy"]
    if isinstance(a, bool) or not isinstance(a, int | float) or not math.isfinite(a) or a < 0:
        raise ConfigError(f"{key}.arrival_s", f"must be a number >= 0, got {a!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{key}.inputs", f"must be an integer >= 1, got {n!r}")
    if not isinstance(task, str) or not task:
        raise ConfigError(f"{key}.task", f"must name a task, got {task!r}")
    if isinstance(acc, bool) or not isinstance(acc, int | float) or not 0.0 <= acc <= 1.0:
        raise ConfigError(f"{key}.min_accuracy", f"must be in [0, 1], got {acc!r}")
    return OfflineJob(float(a), n, task, float(acc))


class _Run:
    """The state of one job in a run."""

    __slots__ = ("busy_s", "cost_usd", "done", "done_s", "finish_s", "inst", "job", "pause_reason", "paused_by",
                 "paused_since", "started", "status", "variant")  # fmt: skip

    def __init__(self, job: OfflineJob) -> None:
        self.job = job
        self.variant: Variant | None = None
        self.inst: Instance | None = None
        self.started = 0  # inputs in batches started so far
        self.done = 0  # inputs in batches finished by the last window
        self.finish_s = -math.inf  # when the last started batch finishes
        self.done_s: float | None = None  # the whole job's completion time
        self.busy_s = 0.0
        self.cost_usd = 0.0
        self.paused_by: dict[str, float] = dict.fromkeys(PAUSE_REASONS, 0.0)  # closed pauses, s per reason
        self.paused_since: float | None = None  # paused (or waiting for a worker) since
        self.pause_reason: str | None = None  # why, while paused
        self.status = "submitted"  # submitted | running | paused | waiting | infeasible | finished


class OfflineStream:
    """The offline jobs of one run (built by the engine only when there are jobs)."""

    def __init__(self, sim: Simulation, cfg: OfflineConfig, jobs: tuple[OfflineJob, ...]) -> None:
        self.cfg = cfg
        self.cluster: Cluster = sim.cluster
        self.catalog = sim.inputs.catalog
        self.horizon_s = sim.horizon_s
        self.advance_args = sim.mechanism.advance_args
        model_noise = sim.noise.kind
        self.noise = NoiseStream(model_noise, np.random.default_rng(
            np.random.SeedSequence(sim.inputs.seed, spawn_key=(NOISE_SPAWN_KEY,))))
        self.runs = [_Run(j) for j in jobs]
        self._active: list[_Run] = []  # dispatched, allowed, inputs left
        self._free_s: dict[int, float] = {}  # instance id -> when its offline batch in service finishes
        self._batches: list[tuple[float, float, Instance]] = []  # started, not yet counted whole
        self.unfinished = len(self.runs)
        for r in self.runs:
            sim._schedule(r.job.arrival_s, partial(self._arrive, r))

    def _arrive(self, r: _Run) -> None:
        """The job's submission (one SimPy event per job)."""
        self._dispatch(r, self.cluster.now_s)

    @staticmethod
    def build(sim: Simulation) -> OfflineStream | None:
        """The run's stream, or ``None`` when ``sim.offline.jobs`` is empty (nothing changes then)."""
        jobs = sim.settings.offline.jobs
        if not jobs:
            return None
        cfg = sim.inputs.offline
        if cfg is None:
            raise ConfigError("offline", "sim.offline.jobs needs the offline rule (the top-level offline: block)")
        return OfflineStream(sim, cfg, jobs)

    # -- the master: where a job runs ------------------------------------------------------
    def _dispatch(self, r: _Run, now_s: float) -> None:
        if r.variant is None:
            r.variant = offline_variant(self.catalog, r.job.task, r.job.min_accuracy, self.cfg)
            if r.variant is None:
                r.status = "infeasible"
                self.unfinished -= 1
                return
        chosen = offline_worker(self.cluster, r.variant)
        if chosen is None:
            self._pause(r, now_s, "waiting", NO_WORKER)
            return
        w = self.cluster.worker(chosen.id)  # the control layer's worker behind the view
        inst = next((i for i in w.instances if i.variant.name == r.variant.name
                     and i.state is not InstanceState.UNLOADING), None)  # fmt: skip
        if inst is None:
            if self.cluster.apply_one(LoadVariant(r.variant.name, w.id, 1)) is not None:
                self._pause(r, now_s, "waiting", NO_WORKER)
                return
            inst = next(i for i in w.instances if i.variant.name == r.variant.name
                        and i.state is not InstanceState.UNLOADING)  # fmt: skip
        r.inst = inst
        self._attach(inst)
        self._gate(r, now_s)

    def _pause(self, r: _Run, now_s: float, status: str, reason: str) -> None:
        if r.paused_since is not None and r.pause_reason != reason:
            self._resume(r, now_s)  # a new reason: the pause so far is the old reason's
        if r.paused_since is None:
            r.paused_since, r.pause_reason = now_s, reason
        r.status = status
        if r in self._active:
            self._active.remove(r)

    def _gate(self, r: _Run, now_s: float) -> None:
        """Allow or pause a dispatched job from ``now_s`` on (the core's rule)."""
        inst = r.inst
        assert inst is not None
        w = inst.worker
        if may_run_offline(w, self.cfg):
            self._resume(r, now_s)
            if r not in self._active:
                self._active.append(r)
                # the first batch may start no earlier than this instant
                q: Queue = inst.mech
                self._free_s[q.id] = max(self._free_s.get(q.id, -math.inf), now_s)
            r.status = "running"
        else:
            self._pause(r, now_s, "paused", FLAGGED if flagged(w) else UTILISATION)

    @staticmethod
    def _resume(r: _Run, now_s: float) -> None:
        if r.paused_since is not None and r.pause_reason is not None:
            r.paused_by[r.pause_reason] += now_s - r.paused_since
        r.paused_since = r.pause_reason = None

    def check(self, now_s: float) -> None:
        """After the control parts of instant ``now_s``: re-dispatch jobs whose instance went,
        re-evaluate the run condition of every dispatched job."""
        for r in self.runs:
            if r.status in ("infeasible", "finished", "submitted") or r.started >= r.job.inputs:
                continue
            inst = r.inst
            if inst is None or inst.state is InstanceState.UNLOADING or self.cluster.instances.get(inst.id) is not inst:
                r.inst = None
                self._pause(r, now_s, "waiting", NO_WORKER)
                self._dispatch(r, now_s)
            else:
                self._gate(r, now_s)

    # -- the worker: batches in the gaps ---------------------------------------------------
    def _attach(self, inst: Instance) -> None:
        """Make ``inst``'s queue interleave offline batches with its online ones (once)."""
        q: Queue = inst.mech
        if type(q) is not SharedQueue:
            q.__class__ = SharedQueue  # the same slots: only advance differs
            q._adv = _Feed(q._adv or (), self)

    def fill(self, t: float) -> None:
        """Bring the queue of every running job to ``t`` (every arrival before ``t`` is routed):
        the offline batches due in idle time before ``t`` start, interleaved with online ones."""
        for r in list(self._active):
            q = r.inst.mech if r.inst is not None else None
            if q is not None and type(q) is SharedQueue and q._adv:
                q.advance(t, *q._adv)

    def next_start_s(self, q: Queue) -> tuple[float, _Run | None]:
        """When the next offline batch could start on ``q`` (``inf`` and ``None`` if none can)."""
        for r in self._active:
            inst = r.inst
            if inst is not None and inst.mech is q:
                if inst.state is InstanceState.UNLOADING or self.cluster.instances.get(inst.id) is not inst:
                    return math.inf, None  # going or gone: the next check dispatches the job again
                s = q.servers[0][0] if q.servers else math.inf
                free = self._free_s.get(q.id, -math.inf)
                if s < free:
                    s = free
                return (s, r) if s < self.horizon_s else (math.inf, None)
        return math.inf, None

    def start_batch(self, q: Queue, r: _Run, s: float) -> None:
        """Start ``r``'s next batch at ``s`` on ``q``'s earliest-free replica."""
        inst = r.inst
        assert inst is not None
        b = min(self.cfg.batch, r.job.inputs - r.started)
        svc = self._service_s(q, b) * q.factor
        fin = s + svc
        heapreplace(q.servers, (fin, 0))  # the replica is busy; queue_len counts online queries only
        self._free_s[q.id] = fin
        r.started += b
        r.busy_s += svc
        r.finish_s = fin
        r.cost_usd += svc * _cpu_share_usd_per_s(inst)
        self._batches.append((s, fin, inst))
        if r.started >= r.job.inputs:
            r.done_s = fin
            r.status = "finished"
            self.unfinished -= 1
            self._active.remove(r)

    def _service_s(self, q: Queue, b: int) -> float:
        noise = self.noise
        p50 = q.p50_s[b]
        if noise.kind == NOISE_NONE:
            return p50
        buf = noise.ensure(1)
        x = buf[noise.pos]
        noise.pos += 1
        return p50 * x if noise.kind == NOISE_EXPONENTIAL else p50 * math.exp(q.sig[b] * x)

    def collect(self, t0_s: float, now_s: float) -> None:
        """A window ``[t0_s, now_s)`` closes: offline busy time in it counts in its
        instance's busy replica-seconds (hence in the worker's CPU utilisation)."""
        if not self._batches:
            return
        keep: list[tuple[float, float, Instance]] = []
        for s, fin, inst in self._batches:
            overlap = min(fin, now_s) - max(s, t0_s)
            if overlap > 0.0 and self.cluster.instances.get(inst.id) is inst:
                inst.counters.busy_s += overlap
            if fin > now_s:
                keep.append((s, fin, inst))
        self._batches = keep

    @property
    def idle(self) -> bool:
        """No job is left that could still run (the engine may then fast-forward idle time)."""
        return self.unfinished == 0

    # -- results -----------------------------------------------------------------------------
    def summary(self, run_cost_usd: float) -> dict[str, Any]:
        """The ``offline`` block of ``summary.json``."""
        jobs: list[dict[str, Any]] = []
        for i, r in enumerate(self.runs):
            paused = dict(r.paused_by)
            if r.paused_since is not None and r.pause_reason is not None and r.status != "finished":
                paused[r.pause_reason] += max(self.horizon_s - r.paused_since, 0.0)
            done_s = r.done_s
            jobs.append({
                "job": i, "task": r.job.task, "min_accuracy": r.job.min_accuracy, "arrival_s": r.job.arrival_s,
                "variant": r.variant.name if r.variant is not None else None,
                "worker": r.inst.worker_id if r.inst is not None else None,
                "status": r.status, "inputs": r.job.inputs, "inputs_done": r.started,
                "completion_s": done_s - r.job.arrival_s if done_s is not None else None,
                "busy_replica_s": r.busy_s, "cost_usd": r.cost_usd,
                "cost_share": r.cost_usd / run_cost_usd if run_cost_usd > 0 else 0.0,
                "paused_s": sum(paused.values()), **{f"paused_{k}_s": x for k, x in paused.items()},
            })  # fmt: skip
        c = self.cfg
        out: dict[str, Any] = {
            "max_cpu_utilisation": c.max_cpu_utilisation, "batch": c.batch, "framework": c.framework,
            # totals over the jobs (scalars, so the report table has them as offline.<key> columns)
            "jobs_finished": sum(j["status"] == "finished" for j in jobs),
            "inputs": sum(j["inputs"] for j in jobs),
            "inputs_done": sum(j["inputs_done"] for j in jobs),
            "busy_replica_s": sum(j["busy_replica_s"] for j in jobs),
            "cost_usd": sum(j["cost_usd"] for j in jobs),
            "cost_share": sum(j["cost_share"] for j in jobs),
            "paused_s": sum(j["paused_s"] for j in jobs),
        }  # fmt: skip
        if jobs and all(j["completion_s"] is not None for j in jobs):
            out["completion_s"] = max(j["completion_s"] for j in jobs)  # the slowest job's
        out["jobs"] = jobs
        return out


def _cpu_share_usd_per_s(inst: Instance) -> float:
    """What one busy replica of ``inst`` costs per second: its cores' share of the worker's price."""
    t = inst.worker.instance_type
    return t.price_usd_per_s * min(inst.variant.cores / t.vcpus, 1.0) if t.vcpus > 0 else 0.0


class _Feed(tuple):  # type: ignore[type-arg]
    """A shared queue's advance arguments (noise, batch timeout, drop_late), as the data plane
    keeps them for its lazy advance, with the offline stream that feeds the queue."""

    stream: OfflineStream

    def __new__(cls, args: tuple[Any, ...], stream: OfflineStream) -> _Feed:
        self = super().__new__(cls, args)
        self.stream = stream
        return self


class SharedQueue(Queue):
    """The queue of an instance that offline jobs use: online queries first, offline batches
    in the idle time between them, in time order (the module docstring). Every advance of the
    queue — the engine's and the lazy one a view read makes — goes through here, so the
    interleaving is exact at any routing window."""

    __slots__ = ()

    def advance(self, t_end: float, noise: NoiseStream, timeout_s: float, drop_late: bool) -> None:
        feed = self._adv
        stream = feed.stream if isinstance(feed, _Feed) else None
        while True:
            s_off, r = stream.next_start_s(self) if stream is not None else (math.inf, None)
            if r is None or s_off >= t_end:
                Queue.advance(self, t_end, noise, timeout_s, drop_late)
                return
            h = self.head
            if h < len(self.pt):
                s_on = max(self.servers[0][0], self.pt[h])
                if s_on <= s_off:  # an online query waits when offline could start: it goes first
                    before = (h, self.servers[0])
                    Queue.advance(self, math.nextafter(s_on, math.inf), noise, timeout_s, drop_late)
                    if (self.head, self.servers[0]) == before:
                        # its batch waits for a timeout to fill: offline stays behind it
                        Queue.advance(self, t_end, noise, timeout_s, drop_late)
                        return
                    continue
            stream.start_batch(self, r, s_off)  # type: ignore[union-attr]
