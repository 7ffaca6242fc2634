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
   exclude CPU variants (``queryfe_server.cc:747``).
2. Running first: among candidates with a ready (or loading) instance that is neither
   overloaded nor interfered, pick the tightest fit (smallest SLO - estimate); loose SLOs
   (> ``loose_slo_ms``) rank CPU variants first, and skip accelerator instances on a worker
   whose ``scale_down_to_cpu`` names the model. Ties go to the least accurate variant. A
   candidate with a ready instance beats one with only loading instances.
3. The worker: round-robin over the ``worker_candidates`` instances of that variant with the
   lowest request rate per replica (code: ``min_qps_name(variant, 3)``), counting only its
   ready instances when it has any (ours: a query sent to a loading instance waits out the
   load while a ready one serves at once); loading ones only when none is ready.
4. Else load: the best non-running candidate by ``not_loaded_penalty_ms + load latency +
   estimate`` (code: the "punish non-loaded variants by 1000 ms" score), placed on the
   least-utilised running worker offering its hardware with room for one replica (the core
   resource model, :mod:`infaas_core.control.resources`) and not already holding it. A free running
   variant competes on the same score scale (SLO - estimate), so it wins unless the SLO
   exceeds ~1 s; past that, a load must also be a tighter fit than the running variant
   (ours: without it every miss would load yet another variant).
5. Nothing placeable: route to the least-queued busy instance of the best feasible variant
   (``when_no_room: route_overloaded``; the code's "blacklisted but still routed" path) or
   reject (``reject``, a :class:`~infaas_core.actions.Reject` of kind ``NO_CAPACITY``).
   Either way the hardware is recorded in :attr:`pressure`, which the VM autoscaler reads as
   INFaaS's ``vmscale`` request.
6. Nothing feasible: a ``Reject`` (kind ``INFEASIBLE``) with the reason and the nearest
   feasible requirement (paper Algorithm 1 L8 ``suggestVariant``; absent in the code).

``ordering: cost`` (this project's improvement, docs/policies.md) ranks running candidates,
and then load candidates, by the hardware $ per query instead of rules 2 and 4's latency
scores; running still beats loading.

Speed: a decision that routes to existing instances stays valid until ``view.version``
changes, so it is cached per (requirements, batch) and replayed round-robin; a cache hit
costs one dict lookup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from infaas_core.actions import Decision, LoadAndRoute, Reject, RejectKind, Route
from infaas_core.catalog import Catalog
from infaas_core.control.resources import room_of
from infaas_core.errors import InfaasError
from infaas_core.model import CPU, Requirements, Variant
from infaas_core.policies.base import PolicyContext
from infaas_core.policies.common import EstimateConfig, cost_per_query_usd
from infaas_core.policies.config import require
from infaas_core.policies.suggest import rejection
from infaas_core.view import ClusterView, InstanceState, InstanceView, WorkerState, WorkerView


@dataclass(frozen=True, slots=True)
class CostConfig:
    accelerator_share: Literal["memory", "device"]


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
    when_no_room: Literal["route_overloaded", "reject"]
    cost: CostConfig

    def validate(self, key: str) -> None:
        require(self.tight_slo_ms <= self.loose_slo_ms, f"{key}.tight_slo_ms", "must be <= loose_slo_ms")
        require(self.worker_candidates >= 1, f"{key}.worker_candidates", "must be >= 1")
        require(self.min_search_candidates >= 1, f"{key}.min_search_candidates", "must be >= 1")
        require(self.metadata_lookup_ms > 0, f"{key}.metadata_lookup_ms", "must be > 0")
        require(self.search_budget_fraction > 0, f"{key}.search_budget_fraction", "must be > 0")


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


class _Entry:
    """A cached decision: routes replayed round-robin until the view's version changes."""

    __slots__ = ("i", "req", "routes")

    def __init__(self, req: Requirements, routes: tuple[Decision, ...]) -> None:
        self.req = req  # holding it keeps id(req) unique while the entry lives
        self.routes = routes
        self.i = 0


def _running(view: ClusterView, worker_id: int) -> bool:
    try:
        return view.worker(worker_id).state is WorkerState.RUNNING
    except (KeyError, InfaasError):  # a worker the backend has already dropped
        return False


class _Index:
    """What selection reads of one view version, looked up lazily and memoised: a miss
    touches only its candidates' instances (``view.instances_of`` is an indexed lookup in
    every backend), never the whole cluster."""

    __slots__ = ("_by_hw", "_lists", "view")

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self._lists: dict[str, tuple[list[InstanceView], list[InstanceView], list[InstanceView]]] = {}
        self._by_hw: dict[str, list[WorkerView]] = {}

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

    def holds(self, worker_id: int, name: str) -> bool:
        return any(i.worker_id == worker_id for i in self.view.instances_of(name))

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
    """Per-query selection. One object per run; holds only caches and :attr:`pressure`."""

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
        self._version = -1
        self._cache: dict[tuple[int, int], _Entry] = {}
        self._eq_cache: dict[tuple[Requirements, int], _Entry] = {}
        self._static: dict[tuple[Requirements, int], _Static] = {}
        self._index: _Index | None = None

    # -- the hot path --------------------------------------------------------------------
    def select(self, req: Requirements, view: ClusterView, batch: int = 1) -> Decision:
        if view.version != self._version:
            self._cache.clear()
            self._eq_cache.clear()
            self._index = None
            self._version = view.version
        e = self._cache.get((id(req), batch))
        if e is None:
            e = self._eq_cache.get((req, batch))
            if e is None:
                decisions, cacheable = self._decide(req, view, batch)
                if not cacheable:
                    return decisions[0]
                e = _Entry(req, decisions)
                self._eq_cache[(req, batch)] = e
                self._cache[(id(req), batch)] = e
        routes = e.routes
        n = len(routes)
        if n == 1:
            return routes[0]
        i = e.i
        e.i = i + 1
        return routes[i % n]

    # -- a miss --------------------------------------------------------------------------
    def _decide(
        self, req: Requirements, view: ClusterView, batch: int
    ) -> tuple[tuple[Decision, ...], bool]:
        """``(decisions, cacheable)``: one decision, or routes to replay round-robin."""
        st = self._static.get((req, batch))
        if st is None:
            st = self._static[(req, batch)] = self._build_static(req, batch)
        if st.reject is not None:
            return (st.reject,), True
        idx = self._index
        if idx is None:
            idx = self._index = _Index(view)
        # Candidates in ranking order: the first with a ready, free instance wins and is
        # routed to its ready instances only; one with only loading instances wins only if
        # no candidate has a ready one.
        best: _Cand | None = None
        best_insts: list[InstanceView] = []
        lists = idx.lists
        for c in st.by_run:
            insts, _, ready = lists(c.name)
            if not insts:
                continue
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
            return self._routes(best_insts), True
        for c in st.loads:
            if lists(c.name)[0]:
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
            return (LoadAndRoute(c.name, w.id),), False
        if best is not None:
            return self._routes(best_insts), True
        # Nothing running fits and nothing can be loaded: ask the VM autoscaler for room.
        want = st.loads[0].variant.hardware if st.loads else st.cands[0].variant.hardware
        self.pressure[want] = view.now_s
        if self.cfg.when_no_room == "route_overloaded":
            for c in st.by_run:
                busy = lists(c.name)[1]
                if busy:
                    ranked = sorted(busy, key=lambda i: (i.queue_len / max(i.replicas, 1), i.id))
                    return self._routes(ranked, by_rate=False), True
        names = ", ".join(c.name for c in st.cands[:3])
        return (
            (Reject(
                f"no capacity: feasible variants ({names}{'...' if len(st.cands) > 3 else ''}) "
                f"are all busy or not loaded, and no running worker has room for one "
                f"(needs {want}); the VM autoscaler has been asked for capacity",
                kind=RejectKind.NO_CAPACITY,
            ),),
            True,
        )

    def _routes(self, insts: list[InstanceView], by_rate: bool = True) -> tuple[Decision, ...]:
        if by_rate:
            insts = sorted(insts, key=lambda i: (i.rate_qps / max(i.replicas, 1), i.id))
        return tuple(Route(i.id) for i in insts[: self.cfg.worker_candidates])

    def _place(self, idx: _Index, v: Variant) -> WorkerView | None:
        for w in idx.workers_for(v.hardware):
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

    def serves(self, v: Variant, slo_ms: float, batch: int = 1) -> bool:
        """Would selection send a query with this SLO to ``v``? (The model autoscaler asks
        before it upgrades or downgrades, so it never moves traffic where selection will not
        follow: e.g. a CPU variant for a tight SLO.)"""
        if v.hardware == CPU and slo_ms <= self.cfg.tight_slo_ms:
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
            ok = [v for v in usable if self.serves(v, req.latency_slo_ms, batch)][:n]
        if not ok:
            reason, suggestion = rejection(self, req, batch)
            return _Static(Reject(reason, suggestion), (), (), (), loose, math.inf)
        cands = tuple(self._cand(v, i, req, batch, loose) for i, v in enumerate(ok))
        by_run = tuple(sorted(cands, key=lambda c: c.run_key))
        loads = tuple(sorted(cands, key=lambda c: c.load_key))
        return _Static(None, cands, by_run, loads, loose, min(c.load_score_ms for c in cands))

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
