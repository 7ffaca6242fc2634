"""INFaaS per-query selection: which variant, on which worker (INFAAS.md §2).

Rules, in the order they apply (sources: paper §4.1 Algorithm 1 ``GETVARIANT``; code
``queryfe_server.cc`` ``gpar_lat_acc_search`` / ``par_lat_search`` / ``QueryOnline``):

1. Candidates (static, per requirements and query batch, computed once per run): the
   variant itself (exact form), the variants of the architecture (model form), or the
   variants of the use case with accuracy >= ``min_accuracy`` in ascending accuracy order,
   at most ``max(min_search_candidates, floor(search_budget_fraction * SLO /
   metadata_lookup_ms))`` of them (task form; the code's search budget). Each must take the
   query's batch, run on hardware some instance type offers, and have an estimated latency
   (:mod:`~infaas_core.policies.common`) within the SLO. Tight SLOs (<= ``tight_slo_ms``)
   exclude CPU variants for the model form (``queryfe_server.cc:747``, ``par_lat_search``);
   the use-case search does not (``cpu_when_tight``). Variants of equal accuracy come in
   name order, as the code's Redis sorted set returns them (``accuracy_ties``).
2. Running first: among candidates with a ready (or loading) instance that is neither
   overloaded nor interfered, pick the tightest fit (smallest SLO - estimate); loose SLOs
   (> ``loose_slo_ms``) rank CPU variants first, and skip accelerator instances on a worker
   whose ``scale_down_to_cpu`` names the model. Ties go to the least accurate variant. A
   candidate with a ready instance beats one with only loading instances.
3. The worker: round-robin over the ``worker_candidates`` instances of that variant with the
   lowest request rate per replica (code: ``min_qps_name(variant, 3)``), counting only its
   ready instances when it has any (ours: a query sent to a loading instance waits out the
   load while a ready one serves at once); loading ones only when none is ready. Instances
   on blacklisted workers (rule 7) are skipped; if all are, the variant is loaded on another
   worker with room (the code's "not running" worker pick), else they are used anyway.
4. All blacklisted (``when_all_blacklisted: escape``, the code's rule, ``queryfe_server.cc``
   880-905, 946-953, 997-1020): no candidate has a free instance but some have overloaded
   or interfered ones. A blacklisted accelerator variant stays the choice (the tightest
   fit); otherwise (only CPU variants blacklisted) ``blacklisted_share`` (0.1,
   ``blist_skip_thresh``) of these queries go to the fastest blacklisted variant —
   deterministically every 10th per (requirements, batch) — and the rest to the feasible
   variant with the smallest ``max_batch`` covering the batch (CPU variants last, as the
   code's max_batch 128: normally an accelerator plan). The choice goes to the
   least-utilised running worker of its hardware that holds it (routed) or has room
   (``LoadAndRoute``). A blacklisted GPU variant records :attr:`pressure` (the code's
   ``vmscale``). The escape is planned once per view version and replayed by the split's
   accumulator (never as a plain cached route), so the split holds within a version.
   ``load_next`` (our earlier rule) skips this and goes on with rule 5.
5. Else load: the best non-running candidate by ``not_loaded_penalty_ms + load latency +
   estimate`` (code: the "punish non-loaded variants by 1000 ms" score), placed on the
   least-utilised running worker offering its hardware with room for one replica (the core
   resource model, :mod:`infaas_core.control.resources`) and not already holding it. A free running
   variant competes on the same score scale (SLO - estimate), so it wins unless the SLO
   exceeds ~1 s; past that, a load must also be a tighter fit than the running variant
   (ours: without it every miss would load yet another variant).
6. Nothing placeable: route to the least-queued busy instance of the best feasible variant
   (``when_no_room: route_overloaded``; the code's "blacklisted but still routed" path) or
   reject (``reject``, a :class:`~infaas_core.actions.Reject` of kind ``NO_CAPACITY``).
   Either way the hardware is recorded in :attr:`pressure`, which the VM autoscaler reads as
   INFaaS's ``vmscale`` request.
7. The worker blacklist (``worker_blacklist``): the per-worker burst guard
   (``queryfe_server.cc:1606-1657``: ``burst_requests`` (200) requests to one worker within
   ``burst_interval_s`` (1 s) of its count's start blacklist it for ``duration_s`` (2 s),
   with more than one worker and never an Inferentia worker), and the VM daemon's rule
   (:meth:`InfaasSelector.blacklist_busy_workers`, every VM period: CPU above
   ``util_threshold`` (0.8), or a GPU between it and 1). Time is ``view.now_s``.
8. Nothing feasible: a ``Reject`` (kind ``INFEASIBLE``) with the reason and the nearest
   feasible requirement (paper Algorithm 1 L8 ``suggestVariant``; absent in the code).

``ordering: cost`` (this project's improvement, docs/policies.md) ranks running candidates,
and then load candidates, by the hardware $ per query instead of rules 2 and 5's latency
scores; running still beats loading.

Speed: a decision that routes to existing instances stays valid until ``view.version``
changes, so it is cached per (requirements, batch) and replayed round-robin; a cache hit
costs one dict lookup and one ``next`` of the entry's cycle (and, with the burst guard on,
one count per query). A blacklist entry that starts drops the cached decisions routing to
that worker; one that expires drops those decided while it was blacklisted (the rest stay).
A miss walks only the candidates that have instances (memoised per view version). A miss
must still rank busy instances by ``queue_len`` as written (reading a queue advances it,
which fixes the order in which batches draw service-time noise), so decisions are not
replayed across blacklist changes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import cycle
from typing import Literal

from infaas_core.actions import Decision, LoadAndRoute, Reject, RejectKind, Route
from infaas_core.catalog import Catalog
from infaas_core.control.resources import room_of
from infaas_core.errors import InfaasError
from infaas_core.model import CPU, Requirements, Variant
from infaas_core.policies.base import PolicyContext
from infaas_core.policies.common import EstimateConfig, cost_per_query_usd, family
from infaas_core.policies.config import require
from infaas_core.policies.suggest import rejection
from infaas_core.view import ClusterView, InstanceState, InstanceView, WorkerState, WorkerView


@dataclass(frozen=True, slots=True)
class CostConfig:
    accelerator_share: Literal["memory", "device"]


@dataclass(frozen=True, slots=True)
class WorkerBlacklistConfig:
    """Workers selection avoids for a while (INFAAS.md §2.7 point 4, §3.3)."""

    duration_s: float
    burst_guard: bool
    burst_requests: int
    burst_interval_s: float
    utilisation: bool
    util_threshold: float

    def validate(self, key: str) -> None:
        require(self.duration_s >= 0, f"{key}.duration_s", "must be >= 0")
        require(self.burst_requests >= 1, f"{key}.burst_requests", "must be >= 1")
        require(self.burst_interval_s > 0, f"{key}.burst_interval_s", "must be > 0")


@dataclass(frozen=True, slots=True)
class SelectionConfig:
    ordering: Literal["infaas", "cost"]
    loose_slo_ms: float
    tight_slo_ms: float
    not_loaded_penalty_ms: float
    worker_candidates: int
    search_budget_fraction: float
    metadata_lookup_ms: float
    min_search_candidates: int
    truncate: Literal["after_filter", "before_filter"]
    cpu_when_tight: Literal["model_form", "all_forms"]
    accuracy_ties: Literal["name", "batch1_latency"]
    when_no_room: Literal["route_overloaded", "reject"]
    when_all_blacklisted: Literal["escape", "load_next"]
    blacklisted_share: float
    worker_blacklist: WorkerBlacklistConfig
    cost: CostConfig
    requirements_cache_size: int

    def validate(self, key: str) -> None:
        require(self.requirements_cache_size >= 1, f"{key}.requirements_cache_size", "must be >= 1")
        require(self.tight_slo_ms <= self.loose_slo_ms, f"{key}.tight_slo_ms", "must be <= loose_slo_ms")
        require(self.worker_candidates >= 1, f"{key}.worker_candidates", "must be >= 1")
        require(self.min_search_candidates >= 1, f"{key}.min_search_candidates", "must be >= 1")
        require(self.metadata_lookup_ms > 0, f"{key}.metadata_lookup_ms", "must be > 0")
        require(self.search_budget_fraction > 0, f"{key}.search_budget_fraction", "must be > 0")
        require(0.0 <= self.blacklisted_share <= 1.0, f"{key}.blacklisted_share", "must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class _Cand:
    variant: Variant
    name: str
    is_cpu: bool
    est_ms: float
    run_key: tuple[float, float, int]
    run_score_ms: float  # SLO - estimate (INFaaS's score of a running variant)
    load_key: tuple[float, float, int]
    load_score_ms: float  # penalty + load latency + estimate


@dataclass(frozen=True, slots=True)
class _Static:
    reject: Reject | None
    cands: tuple[_Cand, ...]  # in catalog order (ascending accuracy for the task form)
    by_run: tuple[_Cand, ...]  # sorted by run_key
    loads: tuple[_Cand, ...]  # sorted by load_key
    loose: bool
    min_load_score_ms: float
    escape: _Cand | None  # the smallest max_batch covering the batch (accelerators before CPU)
    run_pos: dict[str, int]  # candidate name -> its position in by_run


_BurstState = list[float]
"""A worker's burst-guard count: ``[start_s, count]``; ``start_s = -inf``: never counted."""


class _Entry:
    """A cached decision: routes replayed round-robin until the view's version changes
    (``wids``: the worker of each, for the burst guard).

    ``turns`` cycles through ``(route, burst state of its worker, worker)`` triples (the
    state is ``None`` where nothing is counted: no worker, or the guard off): one C-level
    ``next`` per query gives the round-robin pick and the counter to bump, with no index
    arithmetic or dictionary lookup on the hot path."""

    __slots__ = ("avoided", "loads", "req", "routes", "turns", "wids")

    def __init__(self, req: Requirements, routes: tuple[Decision, ...], wids: tuple[int, ...],
                 avoided: frozenset[int], states: tuple[_BurstState | None, ...]) -> None:
        self.req = req  # holding it keeps id(req) unique while the entry lives
        self.routes = routes
        self.wids = wids
        self.avoided = avoided  # the workers blacklisted when it was decided
        self.turns = cycle(tuple(zip(routes, states, wids)))
        self.loads = LoadAndRoute in map(type, routes)


_Decided = tuple[tuple[Decision, ...], tuple[int, ...], bool]
"""``(decisions, their workers (-1: none), cacheable)``; no decisions: see the escape plan."""


class _Plan:
    """The escape for one (requirements, batch) and view version: the blacklisted route
    (``None``: no split, a blacklisted accelerator variant) and the target, replayed by the
    split's accumulator until the version changes."""

    __slots__ = ("acc", "blacklisted", "bnext", "loads", "target", "tnext")

    def __init__(self, blacklisted: _Entry | None, target: _Entry) -> None:
        self.blacklisted = blacklisted
        self.target = target
        self.acc: list[float] = [0.0]  # the split's accumulator, shared across versions (see select)
        # for select_hits: each side's round-robin, and whether either side may load
        self.tnext = target.turns.__next__
        self.bnext = blacklisted.turns.__next__ if blacklisted is not None else self.tnext
        self.loads = target.loads or (blacklisted is not None and blacklisted.loads)


_Hit = Callable[[], tuple[Decision, _BurstState | None, int]] | _Plan | None
"""What a hit of the identity cache replays (:meth:`InfaasSelector._hit_entries`)."""


@dataclass(frozen=True, slots=True)
class _Running:
    """Of one :class:`_Static`'s candidates, in one view version (:meth:`_Index.running`)."""

    st: _Static
    eligible: tuple[tuple[_Cand, list[InstanceView], list[InstanceView], list[InstanceView]], ...]
    """``(candidate, eligible, busy, ready)`` for those with an eligible instance."""
    busy: tuple[_Cand, ...]
    """Those with an overloaded or interfered instance."""
    eligible_names: frozenset[str]


def _running(view: ClusterView, worker_id: int) -> bool:
    try:
        return view.worker(worker_id).state is WorkerState.RUNNING
    except (KeyError, InfaasError):  # a worker the backend has already dropped
        return False


class _Index:
    """What selection reads of one view version, looked up lazily and memoised: a miss
    touches only its candidates' instances (``view.instances_of`` is an indexed lookup in
    every backend), never the whole cluster."""

    __slots__ = ("_by_hw", "_lists", "_loaded", "_running", "view")

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self._lists: dict[str, tuple[list[InstanceView], list[InstanceView], list[InstanceView]]] = {}
        self._by_hw: dict[str, list[WorkerView]] = {}
        self._running: dict[int, _Running] = {}
        self._loaded: frozenset[str] | None = None

    def lists(self, name: str) -> tuple[list[InstanceView], list[InstanceView], list[InstanceView]]:
        """``(eligible, busy, ready)`` instances of variant ``name`` on running workers:
        eligible = ready or loading and neither overloaded nor interfered; ready = the
        eligible ones that are ready."""
        got = self._lists.get(name)
        if got is not None:
            return got
        eligible: list[InstanceView] = []
        busy: list[InstanceView] = []
        ready: list[InstanceView] = []
        view = self.view
        for inst in view.instances_of(name):
            state = inst.state
            if state is InstanceState.UNLOADING or not _running(view, inst.worker_id):
                continue
            if inst.overloaded or inst.interfered:
                busy.append(inst)
            else:
                eligible.append(inst)
                if state is InstanceState.READY:
                    ready.append(inst)
        got = self._lists[name] = (eligible, busy, ready)
        return got

    def running(self, st: _Static) -> _Running:
        """The candidates of ``st`` that have instances, in ``st.by_run`` order: a miss
        (most come after a blacklist change, within one version) then walks these few,
        not every candidate of the requirements; they are found from the variants the
        workers hold (a few), not by asking each of the candidates (dozens)."""
        got = self._running.get(id(st))
        if got is not None and got.st is st:
            return got
        loaded = self._loaded
        if loaded is None:
            loaded = self._loaded = frozenset(i.variant.name for w in self.view.workers for i in w.instances)
        pos = st.run_pos
        by_run = st.by_run
        present = [by_run[i] for i in sorted([pos[n] for n in loaded if n in pos])]
        lists = self.lists
        eligible = tuple((c, *lists(c.name)) for c in present if lists(c.name)[0])
        busy = tuple(c for c in present if lists(c.name)[1])
        got = self._running[id(st)] = _Running(st, eligible, busy, frozenset(c.name for c, *_ in eligible))
        return got

    def holds(self, worker_id: int, name: str) -> bool:
        return worker_id in [i.worker_id for i in self.view.instances_of(name)]

    def workers_for(self, hardware: str) -> list[WorkerView]:
        """Running workers offering ``hardware``, least utilised (on it) first."""
        ws = self._by_hw.get(hardware)
        if ws is None:
            ws = sorted(
                (w for w in self.view.workers if w.state is WorkerState.RUNNING and w.instance_type.offers(hardware)),
                key=lambda w: (w.utilization.get(hardware, 0.0), w.id),
            )
            self._by_hw[hardware] = ws
        return ws


class InfaasSelector:
    """Per-query selection. One object per run; holds caches, :attr:`pressure`, the escape's
    split counters and the worker blacklist."""

    def __init__(self, ctx: PolicyContext, cfg: SelectionConfig, est: EstimateConfig) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.est = est
        # Hardware some instance type that may ever run offers (max_workers > 0).
        self.offered = frozenset(
            h for t in ctx.cluster.instance_types if ctx.cluster.max_count(t.name) > 0 for h in t.device_classes
        )
        self.pressure: dict[str, float] = {}
        """Hardware class -> last time (view.now_s) a feasible query found no room to load."""
        self.blacklist: dict[int, float] = {}
        """Worker id -> until when (view.now_s) selection avoids it (burst guard, utilisation)."""
        self._bl_expiry = math.inf
        self._escape_acc: dict[tuple[Requirements, int], list[float]] = {}
        self._bursts: dict[int, _BurstState] = {}
        self._burst = cfg.worker_blacklist.burst_guard
        self._burst_interval_s = cfg.worker_blacklist.burst_interval_s
        self._burst_requests = float(cfg.worker_blacklist.burst_requests)
        self._share = cfg.blacklisted_share
        self._version = -1
        # identity cache: id(req) -> (req, its entry); the stored req is compared with `is` on a
        # hit, since a freed Requirements' id is reused by the next one allocated (the server
        # makes one per request), and holding it keeps its id unique while it is cached
        self._cache: dict[int | tuple[int, int], tuple[Requirements, _Entry | _Plan]] = {}
        self._eq_cache: dict[tuple[Requirements, int], _Entry] = {}
        # per-requirements state a client controls the keys of: bounded, least recently used out
        self._static: OrderedDict[tuple[Requirements, int], _Static] = OrderedDict()
        self._plans: dict[tuple[Requirements, int], _Plan] = {}
        self._index: _Index | None = None
        # what _hit_entries last built, for which reqs: valid until the identity cache changes
        # (every change of _cache sets it back to None)
        self._hits: tuple[Sequence[Requirements], list[_Hit]] | None = None

    # -- the hot path --------------------------------------------------------------------
    def select(self, req: Requirements, view: ClusterView, app: str | None = None, batch: int = 1) -> Decision:
        """The decision for one query (``app`` is unused: selection reads the requirements).

        Written for speed (it runs once per query): a cache hit is one dict lookup keyed by
        ``id(req)`` (a tuple with the batch only for batch > 1, so the common key needs no
        allocation), one ``next`` of the entry's round-robin and, with the burst guard on,
        one counter bump inlined from :meth:`_count`."""
        now = view.now_s
        if now >= self._bl_expiry:  # inf while no worker is blacklisted
            self._expire(now)
        if view.version != self._version:
            self._cache.clear()
            self._hits = None
            self._eq_cache.clear()
            self._plans.clear()
            self._index = None
            self._version = view.version
        ikey = id(req) if batch == 1 else (id(req), batch)
        hit = self._cache.get(ikey)
        if hit is not None and hit[0] is req:
            c = hit[1]
        else:
            got = self._lookup(req, view, batch, ikey)
            if not isinstance(got, _Entry | _Plan):
                return got  # a decision that is not cached (a load)
            c = got
        if type(c) is _Plan:
            # The escape's split, inlined (most escaping queries come here): an accumulator
            # per (requirements, batch), kept across view versions, sends exactly every
            # 1/blacklisted_share-th query (every 10th) to the blacklisted variant (the code
            # draws uniform(0, 1) < 0.1); no blacklisted route: the target, no split.
            e = c.target
            if c.blacklisted is not None:
                acc = c.acc
                a = acc[0] + self._share
                if a >= 1.0 - 1e-9:
                    acc[0] = a - 1.0
                    e = c.blacklisted
                else:
                    acc[0] = a
        else:
            e = c  # type: ignore[assignment]  # (a `type() is` test narrows only its own branch)
        d, st, wid = next(e.turns)
        if st is not None:  # :meth:`_bump`, inlined on this per-query path
            if now - st[0] < self._burst_interval_s:
                st[1] += 1.0
                if st[1] >= self._burst_requests:
                    self._trip(wid, view, now, st)
            else:
                self._restart(st, now)
        return d

    def select_hits(self, reqs: Sequence[Requirements], apps: list[int], times_s: list[float], lo: int, hi: int,
                    view: ClusterView, out: list[Decision]) -> int:
        """A run of :meth:`select` calls in one: for queries ``lo, lo+1, ...`` (query ``i``:
        requirements ``reqs[apps[i]]``, batch 1, arriving at ``times_s[i]``), append to
        ``out`` the decision :meth:`select` would return with ``view.now_s == times_s[i]``,
        for as long as each is a hit of the identity cache in the current view version;
        returns the index of the first query not decided (``hi`` when all were).

        A run of hits reads nothing the caller changes between them (no queue length, only
        the time and the policy's own state), so the caller may carry the decisions out after
        the run; a ``LoadAndRoute`` (an escape plan's target) ends the run after it, since
        carrying it out changes the view. The body is :meth:`select`'s hit path, inlined."""
        if view.version != self._version:
            return lo
        interval = self._burst_interval_s
        limit = self._burst_requests
        share = self._share
        append = out.append
        n0 = len(out)
        ents = self._hit_entries(reqs)
        bl = self._bl_expiry
        for now, a in zip(times_s[lo:hi], apps[lo:hi]):
            if now >= bl:
                self._expire(now)
                ents, bl = self._hit_entries(reqs), self._bl_expiry
            c = ents[a]
            if c is None:
                break
            if type(c) is _Plan:  # (select's split, with each side's round-robin at hand)
                if c.blacklisted is not None:
                    acc = c.acc
                    x = acc[0] + share
                    if x >= 1.0 - 1e-9:
                        acc[0] = x - 1.0
                        d, st, wid = c.bnext()
                    else:
                        acc[0] = x
                        d, st, wid = c.tnext()
                else:
                    d, st, wid = c.tnext()
                if c.loads and type(d) is LoadAndRoute:  # (only an escape's target loads)
                    if st is not None:
                        self._bump(st, wid, view, now)
                    append(d)
                    break
            else:
                d, st, wid = c()  # type: ignore[operator]  # (not a _Plan here: an entry's next)
            if st is not None:
                if now - st[0] < interval:
                    st[1] += 1.0
                    if st[1] >= limit:
                        self._trip(wid, view, now, st)
                        ents, bl = self._hit_entries(reqs), self._bl_expiry
                else:
                    self._restart(st, now)
            append(d)
        return lo + len(out) - n0

    def _bump(self, st: _BurstState, wid: int, view: ClusterView, now: float) -> None:
        """:meth:`_count` for a worker whose count ``st`` the caller holds."""
        if now - st[0] < self._burst_interval_s:
            st[1] += 1.0
            if st[1] >= self._burst_requests:
                self._trip(wid, view, now, st)
        else:
            self._restart(st, now)

    def _hit_entries(self, reqs: Sequence[Requirements]) -> list[_Hit]:
        """Per requirements, what a batch-1 hit of the identity cache replays: an entry's
        round-robin (its ``next``), an escape plan, or ``None`` (a miss; also for an entry
        that loads, which :meth:`select` carries out). Built again only after the identity
        cache changed (or for other ``reqs``)."""
        memo = self._hits
        if memo is not None and memo[0] is reqs:
            return memo[1]
        out: list[_Hit] = []
        get = self._cache.get
        for req in reqs:
            hit = get(id(req))
            if hit is None or hit[0] is not req:
                out.append(None)
            else:
                c = hit[1]
                if type(c) is _Plan:
                    out.append(c)
                else:
                    out.append(None if c.loads else c.turns.__next__)  # type: ignore[union-attr]
        self._hits = (reqs, out)
        return out

    def _lookup(self, req: Requirements, view: ClusterView, batch: int,
                ikey: int | tuple[int, int]) -> _Entry | _Plan | Decision:
        """A miss of the identity cache: the equal-requirements caches, else a decision."""
        key = (req, batch)
        e: _Entry | _Plan | None = self._eq_cache.get(key) or self._plans.get(key)
        if e is None:
            decisions, wids, cacheable = self._decide(req, view, batch)
            if decisions and not cacheable:
                if self._burst:
                    self._count(wids[0], view)
                return decisions[0]
            if decisions:
                entry = self._entry(req, (decisions, wids, True))
                if len(self._eq_cache) >= self.cfg.requirements_cache_size:
                    self._eq_cache.clear()
                self._eq_cache[key] = entry
                e = entry
            else:
                plan = self._plans[key]
                plan.acc = self._escape_acc.setdefault(key, [0.0])
                if len(self._escape_acc) > self.cfg.requirements_cache_size:
                    self._escape_acc.pop(next(iter(self._escape_acc)))
                e = plan
        if len(self._cache) >= self.cfg.requirements_cache_size:  # bounded within a view version too
            self._cache.clear()
        self._cache[ikey] = (req, e)
        self._hits = None
        return e

    # -- the worker blacklist (INFAAS.md §2.7 point 4, §3.3) ----------------------------------
    def _state(self, wid: int) -> _BurstState | None:
        """Worker ``wid``'s burst count (created on first use and never replaced, so cached
        entries hold it directly); ``None`` where nothing is counted."""
        if wid < 0 or not self._burst:
            return None
        st = self._bursts.get(wid)
        if st is None:
            st = self._bursts[wid] = [-math.inf, 0.0]
        return st

    def _count(self, wid: int, view: ClusterView) -> None:
        """The code's per-worker burst guard (``queryfe_server.cc:1606-1657``): a worker's
        count restarts whenever a request comes ``burst_interval_s`` or more after the count
        started; at ``burst_requests`` the count restarts and the worker is blacklisted for
        ``duration_s`` (only with more than one worker, never an Inferentia worker).
        :meth:`select` inlines this for cached routes."""
        st = self._state(wid)
        if st is None:
            return
        now = view.now_s
        if now - st[0] < self._burst_interval_s:
            st[1] += 1.0
            if st[1] >= self._burst_requests:
                self._trip(wid, view, now, st)
        else:
            self._restart(st, now)

    @staticmethod
    def _restart(st: _BurstState, now: float) -> None:
        """A request ``burst_interval_s`` or more after the count started: the count restarts
        from it; the code counts a worker's very first request (its map entry is created
        with 1) but not the one that restarts a count (reset to 0)."""
        st[1] = 1.0 if st[0] == -math.inf else 0.0
        st[0] = now

    def _trip(self, wid: int, view: ClusterView, now: float, st: list[float]) -> None:
        """``burst_requests`` within the interval: restart the count, blacklist the worker."""
        st[0], st[1] = now, 0.0
        try:
            w = view.worker(wid)
        except (KeyError, InfaasError):
            return
        live = sum(1 for x in view.workers if x.state is not WorkerState.STOPPING)
        if live > 1 and not any(family(d) == "inferentia" for d in w.instance_type.device_classes):
            self.ban(wid, now)

    def ban(self, wid: int, now_s: float) -> None:
        """Blacklist worker ``wid`` for ``worker_blacklist.duration_s`` from ``now_s``."""
        until = now_s + self.cfg.worker_blacklist.duration_s
        if until <= now_s:
            return
        self.blacklist[wid] = max(self.blacklist.get(wid, until), until)
        self._bl_expiry = min(self._bl_expiry, until)
        # a cached decision that routes to it is redecided; the others avoid it already
        self._drop_cached(lambda e: wid in e.wids)

    def _expire(self, now_s: float) -> None:
        gone = {w for w, t in self.blacklist.items() if t <= now_s}
        self.blacklist = {w: t for w, t in self.blacklist.items() if t > now_s}
        self._bl_expiry = min(self.blacklist.values(), default=math.inf)
        # a cached decision made while one of them was blacklisted may now prefer it
        self._drop_cached(lambda e: not gone.isdisjoint(e.avoided))

    def _drop_cached(self, stale: Callable[[_Entry], bool]) -> None:
        """Forget the cached decisions (entries, escape plans) that ``stale`` says depend on a
        blacklist change; the rest stay valid for this view version."""
        def bad(c: _Entry | _Plan) -> bool:
            if isinstance(c, _Plan):
                return stale(c.target) or (c.blacklisted is not None and stale(c.blacklisted))
            return stale(c)

        for ik in [k for k, (_, c) in self._cache.items() if bad(c)]:
            del self._cache[ik]
        self._hits = None
        for cache in (self._eq_cache, self._plans):
            for k in [k for k, c in cache.items() if bad(c)]:
                del cache[k]
        # (the memoised index holds nothing blacklist-dependent: _ordered applies it per call)

    def blacklist_busy_workers(self, view: ClusterView) -> None:
        """The VM daemon's rule (``master_vm_daemon.cc:224-262``), run with the VM autoscaler:
        a worker above ``util_threshold`` on CPU, or on a GPU class strictly between it and 1
        (the code's ``< 100``), is blacklisted for ``duration_s``."""
        wb = self.cfg.worker_blacklist
        if not wb.utilisation:
            return
        now = view.now_s
        for w in view.workers:
            if w.state is not WorkerState.RUNNING:
                continue
            for d, u in w.utilization.items():
                if (d == CPU and u > wb.util_threshold) or (
                    d != CPU and family(d) == "gpu" and wb.util_threshold < u < 1.0
                ):
                    self.ban(w.id, now)
                    break

    # -- a miss --------------------------------------------------------------------------
    def _decide(self, req: Requirements, view: ClusterView, batch: int) -> _Decided:
        """One decision, or routes to replay round-robin (with their workers)."""
        skey = (req, batch)
        static = self._static
        st = static.get(skey)
        if st is None:
            st = static[skey] = self._build_static(req, batch)
            if len(static) > self.cfg.requirements_cache_size:
                static.popitem(last=False)
        else:
            static.move_to_end(skey)
        if st.reject is not None:
            return (st.reject,), (-1,), True
        idx = self._index
        if idx is None:
            idx = self._index = _Index(view)
        # Candidates in ranking order: the first with a ready, free instance wins and is
        # routed to its ready instances only; one with only loading instances wins only if
        # no candidate has a ready one.
        best: _Cand | None = None
        best_insts: list[InstanceView] = []
        run = idx.running(st)
        for c, insts, _, ready in run.eligible:
            if st.loose and not c.is_cpu:
                model = c.variant.model
                insts = [i for i in insts if model not in view.worker(i.worker_id).scale_down_to_cpu]
                if not insts:
                    continue
                ready = [i for i in insts if i.state is InstanceState.READY]
            if ready:
                best, best_insts = c, ready
                break
            if best is None:
                best, best_insts = c, insts
        infaas = self.cfg.ordering == "infaas"
        if best is not None and (not infaas or best.run_score_ms < st.min_load_score_ms):
            return self._to(idx, best, best_insts)
        if best is None and self.cfg.when_all_blacklisted == "escape" and st.escape is not None:
            busy_cands = list(run.busy)
            if busy_cands:  # every running instance a query could use is blacklisted
                for c in busy_cands:  # a blacklisted GPU variant asks for a GPU worker (the code's vmscale)
                    if family(c.variant.hardware) == "gpu":
                        self.pressure[c.variant.hardware] = view.now_s
                self._plans[(req, batch)] = self._plan(idx, st, req, busy_cands, view)
                return (), (), False  # select replays the plan by the split
        for c in st.loads:
            if c.name in run.eligible_names:
                continue
            # Against a free running variant, load only one that scores better (the code's
            # shared score) AND would rank better once running (a tighter fit): loads then
            # converge on the tightest fit instead of cascading through every candidate.
            if best is not None and not (
                c.load_score_ms < best.run_score_ms and c.run_key[:2] < best.run_key[:2]
            ):
                continue
            w = self._place(idx, c.variant)
            if w is None:
                continue
            return (LoadAndRoute(c.name, w.id),), (w.id,), False
        if best is not None:
            return self._to(idx, best, best_insts)
        want = st.loads[0].variant.hardware if st.loads else st.cands[0].variant.hardware
        return self._no_room(st, idx, want, view)

    def _no_room(self, st: _Static, idx: _Index, want: str, view: ClusterView) -> _Decided:
        """Nothing running fits and nothing can be loaded: ask the VM autoscaler for room
        (rule 6)."""
        self.pressure[want] = view.now_s
        if self.cfg.when_no_room == "route_overloaded":
            for c in st.by_run:
                busy = idx.lists(c.name)[1]
                if busy:
                    ranked = sorted(busy, key=lambda i: (i.queue_len / max(i.replicas, 1), i.id))
                    routes, wids = self._routes(ranked, by_rate=False)
                    return routes, wids, True
        names = ", ".join(c.name for c in st.cands[:3])
        return (
            (Reject(
                f"no capacity: feasible variants ({names}{'...' if len(st.cands) > 3 else ''}) "
                f"are all busy or not loaded, and no running worker has room for one "
                f"(needs {want}); the VM autoscaler has been asked for capacity",
                kind=RejectKind.NO_CAPACITY,
            ),),
            (-1,),
            True,
        )

    def _plan(self, idx: _Index, st: _Static, req: Requirements, busy_cands: list[_Cand],
              view: ClusterView) -> _Plan:
        """INFaaS's way out when every running candidate is blacklisted (rule 4;
        ``queryfe_server.cc:880-905, 946-953, 997-1020``), for this view version: a
        blacklisted accelerator variant (the tightest fit) stays the choice, with no split;
        otherwise the split between the fastest blacklisted variant and
        :attr:`_Static.escape`. The choice goes to the least-utilised running worker of its
        hardware that holds it (routed) or has room (loaded); where it fits nowhere, the
        no-room rule's decision stands in."""
        accel = [c for c in busy_cands if not c.is_cpu]
        if accel:
            v = min(accel, key=lambda c: (c.run_score_ms, c.run_key)).variant
            return _Plan(None, self._entry(req, self._on_worker(idx, v) or self._no_room(st, idx, v.hardware, view)))
        fastest = min(busy_cands, key=lambda c: (c.est_ms, c.run_key))
        inst = min(idx.lists(fastest.name)[1],
                   key=lambda i: (i.worker_id in self.blacklist, i.queue_len / max(i.replicas, 1), i.id))
        assert st.escape is not None
        v = st.escape.variant
        target = self._on_worker(idx, v) or self._no_room(st, idx, v.hardware, view)
        return _Plan(self._entry(req, ((Route(inst.id),), (inst.worker_id,), True)), self._entry(req, target))

    def _entry(self, req: Requirements, d: _Decided) -> _Entry:
        return _Entry(req, d[0], d[1], frozenset(self.blacklist), tuple([self._state(w) for w in d[1]]))

    def _on_worker(self, idx: _Index, v: Variant) -> _Decided | None:
        """``v`` on the least-utilised running worker of its hardware that holds it (routed
        there) or has room for it (loaded there); ``None`` if there is none."""
        held = {i.worker_id: i for i in idx.view.instances_of(v.name) if i.state is not InstanceState.UNLOADING}
        for w in self._ordered(idx, v.hardware):
            h = held.get(w.id)
            if h is not None:
                return (Route(h.id),), (w.id,), False
            if (
                v.name not in idx.view.unservable  # the mechanism gave it up: a load would be refused
                and not idx.holds(w.id, v.name)  # (not while it unloads there)
                and room_of(w).fits(w.instance_type, v)
            ):
                return (LoadAndRoute(v.name, w.id),), (w.id,), False
        return None

    def _to(self, idx: _Index, c: _Cand, insts: list[InstanceView]) -> _Decided:
        """Routes to ``insts`` of candidate ``c``, avoiding blacklisted workers: if all of them
        are, ``c`` is loaded on another worker with room (the code's "not running" worker
        pick), else they are used anyway (a blacklist is a preference, not a refusal)."""
        if self.blacklist:
            ok = [i for i in insts if i.worker_id not in self.blacklist]
            if not ok:
                w = self._place(idx, c.variant)
                if w is not None:
                    return (LoadAndRoute(c.name, w.id),), (w.id,), False
            else:
                insts = ok
        routes, wids = self._routes(insts)
        return routes, wids, True

    def _routes(self, insts: list[InstanceView], by_rate: bool = True) -> tuple[tuple[Decision, ...], tuple[int, ...]]:
        if by_rate:
            insts = sorted(insts, key=lambda i: (i.rate_qps / max(i.replicas, 1), i.id))
        top = insts[: self.cfg.worker_candidates]
        return tuple([Route(i.id) for i in top]), tuple([i.worker_id for i in top])

    def _ordered(self, idx: _Index, hardware: str) -> list[WorkerView]:
        """Running workers offering ``hardware``, least utilised first, blacklisted ones last."""
        ws = idx.workers_for(hardware)
        if not self.blacklist:
            return ws
        return [w for w in ws if w.id not in self.blacklist] + [w for w in ws if w.id in self.blacklist]

    def _place(self, idx: _Index, v: Variant) -> WorkerView | None:
        """The first worker (least utilised) of ``v``'s hardware with room for it that is not
        unloading it; ``None`` there too when the mechanism reported ``v`` unservable (its load
        would be refused), so the next candidate is tried."""
        if v.name in idx.view.unservable:
            return None
        for w in self._ordered(idx, v.hardware):
            if not idx.holds(w.id, v.name) and room_of(w).fits(w.instance_type, v):
                return w
        return None

    # -- static candidate lists ----------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        return self.ctx.catalog

    @property
    def tight_slo_ms(self) -> float:
        return self.cfg.tight_slo_ms

    def excludes_cpu_when_tight(self, form: str) -> bool:
        """Does a tight SLO (<= ``tight_slo_ms``) leave CPU variants out for this query form?
        The code skips them only in ``par_lat_search`` (a query naming the architecture,
        ``queryfe_server.cc:747``); its use-case search ``gpar_lat_acc_search`` tests only batch
        and latency (``cpu_when_tight: model_form``, the default). ``all_forms`` is this
        project's earlier rule."""
        return form == "model" or self.cfg.cpu_when_tight == "all_forms"

    def serves(self, v: Variant, slo_ms: float, batch: int = 1, form: str = "model") -> bool:
        """Would selection send a query of this form with this SLO to ``v``? (The model
        autoscaler asks before it upgrades or downgrades, so it never moves traffic where
        selection will not follow; it asks as for the architecture form, the stricter one.)"""
        if v.hardware == CPU and slo_ms <= self.cfg.tight_slo_ms and self.excludes_cpu_when_tight(form):
            return False
        return self.est.latency_ms(v, batch) <= slo_ms

    def _build_static(self, req: Requirements, batch: int) -> _Static:
        cat = self.ctx.catalog
        cfg = self.cfg
        slo = req.latency_slo_ms
        loose = req.form != "variant" and slo > cfg.loose_slo_ms
        if req.form == "variant":
            pool = [cat.get(req.variant or "")] if req.variant in cat else []
            ok = [v for v in pool if v.max_batch >= batch and v.hardware in self.offered]
        else:
            if req.form == "task":
                pool = [v for v in cat.by_task(req.task or "") if v.accuracy >= req.min_accuracy]
                if cfg.accuracy_ties == "name":
                    # The code's use-case index is a Redis sorted set scored by accuracy: equal
                    # scores come back in the members' lexicographic order (ZRANGEBYSCORE).
                    pool.sort(key=lambda v: (v.accuracy, v.name))
            else:
                pool = [v for v in cat.by_model(req.model or "") if v.accuracy >= req.min_accuracy]
            usable = [v for v in pool if v.max_batch >= batch and v.hardware in self.offered]
            n = len(usable)
            if req.form == "task" and math.isfinite(slo):
                n = max(
                    cfg.min_search_candidates,
                    math.floor(cfg.search_budget_fraction * slo / cfg.metadata_lookup_ms),
                )
            if cfg.truncate == "before_filter":
                usable = usable[:n]
            ok = [v for v in usable if self.serves(v, req.latency_slo_ms, batch, req.form)][:n]
        if not ok:
            reason, suggestion = rejection(self, req, batch)
            return _Static(Reject(reason, suggestion), (), (), (), loose, math.inf, None, {})
        cands = tuple(self._cand(v, i, req, batch, loose) for i, v in enumerate(ok))
        by_run = tuple(sorted(cands, key=lambda c: c.run_key))
        loads = tuple(sorted(cands, key=lambda c: c.load_key))
        # The code's min_valid_batch: the smallest max_batch that covers the batch, first by
        # batch-1 latency among equals (its variant index); CPU variants are registered with
        # max_batch 128 there (profile_model.sh:43), so an accelerator plan wins if feasible.
        escape = min(cands, key=lambda c: (c.is_cpu, c.variant.max_batch, c.variant.latency_ms(1), c.run_key[2]))
        return _Static(None, cands, by_run, loads, loose, min(c.load_score_ms for c in cands), escape,
                       {c.name: i for i, c in enumerate(by_run)})

    def _cand(self, v: Variant, i: int, req: Requirements, batch: int, loose: bool) -> _Cand:
        est = self.est.latency_ms(v, batch)
        slack = req.latency_slo_ms - est
        load_score = self.cfg.not_loaded_penalty_ms + v.load_latency_ms + est
        if self.cfg.ordering == "cost":
            usd = cost_per_query_usd(v, batch, self.ctx.cluster, self.est, self.cfg.cost.accelerator_share)
            run_key = (usd, slack, i)
            load_key = (usd, load_score, i)
        else:
            pref = 1.0 if (loose and v.hardware != CPU) else 0.0
            run_key = (pref, slack, i)
            load_key = (pref, load_score, i)
        return _Cand(v, v.name, v.hardware == CPU, est, run_key, slack, load_key, load_score)
