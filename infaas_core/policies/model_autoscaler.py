"""INFaaS model-level autoscaler: per worker, every period, replicate / upgrade / downgrade /
unload the variants it runs (INFAAS.md §3.2).

Sources: paper §4.2.1-4.2.2 and §5 (slack 1.05; scale down after sustained low load; the
objective "replicate or upgrade, pick the cheaper"); code ``autoscaler.cc`` ``checkModvar``
(154-256) and ``InfaasScaler`` (427-697).

Per ready instance of variant ``v`` on worker ``w`` (``T1`` = one replica's throughput at
the estimate batch: ``min(max_online_batch, max_batch)`` on accelerators, the observed
mean batch on CPU; demand = observed rate):

- **needs more** when ``slack * demand > replicas * T1``: ``up = ceil((slack * demand -
  replicas * T1) / T1)`` replicas;
- **scale-down request** when ``slack * demand <= (replicas - 1) * T1`` (one replica fewer
  would do), or, for a single replica, when a smaller variant of the same model (lower
  ``T1``, accuracy no lower, one selection would use for the traffic's mean SLO) would do:
  ``slack * demand <= T1(d)``.

Per model on the worker, when some instance needs more:

- (a) replicate each: objective ``sum(load_latency * up)``, plus ``replica_cap_penalty *
  load_latency`` for each that would pass ``max_replicas`` of its family;
- (b) upgrade: the variant ``u`` of the same model with a higher ``T1`` that carries the
  model's whole demand on this worker in the fewest load-milliseconds, ``n_u`` replicas;
  objective ``load_latency(u) * n_u``;
- choose (b) when (a) passes a cap or does not fit memory, or ``cost(a) >
  upgrade_cost_ratio * cost(b)`` (the code's 1.5x rule); otherwise (a), clipped to the cap
  and the free room. An upgrade loads ``u`` first; the replaced instances are unloaded once
  ``u`` is ready (as the code: load the new plan, then unload).

Scale-down requests execute after they are sustained: ``scale_down.rule: requests`` counts
consecutive requests against ``scale_down.requests[family]`` (code: CPU 10, GPU 20,
Inferentia 15 at a 1 s period); ``load_latency`` waits the variant's own load latency
``T_v`` (paper §4.2.2). Then: drop one replica; at one replica, a downgrade loads the
smaller variant (and replaces this one once it is ready); an idle single replica unloads.

Every load checks the worker's free capacity minus ``memory_slack_mb`` of memory, with the
core resource model (:mod:`infaas_core.control.resources`: cores and host memory on CPU; the
device class's memory on accelerators, one replica on one device), counting what earlier
actions of the same tick already took. The delay and the replica arithmetic are the shared
rules of :mod:`~infaas_core.policies.rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from infaas_core.actions import Action, LoadVariant, UnloadVariant
from infaas_core.catalog import Catalog
from infaas_core.control.resources import Free, planning_room, room_of
from infaas_core.model import CPU, InstanceType, Variant
from infaas_core.policies.common import FAMILIES, EstimateConfig, family
from infaas_core.policies.config import require
from infaas_core.policies.rules import (
    Sustained,
    apply_bounds,
    one_fewer_carries,
    over_capacity,
    replicas_needed,
    replicas_to_add,
)
from infaas_core.view import ClusterView, InstanceState, InstanceView, WorkerState, WorkerView


@dataclass(frozen=True, slots=True)
class ScaleDownConfig:
    rule: Literal["requests", "load_latency"]
    requests: dict[str, int]


@dataclass(frozen=True, slots=True)
class ModelAutoscalerConfig:
    slack: float
    max_replicas: dict[str, int]
    upgrade_cost_ratio: float
    replica_cap_penalty: float
    memory_slack_mb: float
    scale_down: ScaleDownConfig

    def validate(self, key: str) -> None:
        require(self.slack >= 1.0, f"{key}.slack", "must be >= 1")
        for name, table in (("max_replicas", self.max_replicas), ("scale_down.requests", self.scale_down.requests)):
            require(set(table) == set(FAMILIES), f"{key}.{name}", f"needs exactly the keys {', '.join(FAMILIES)}")
            for fam, n in table.items():
                require(n >= 1, f"{key}.{name}.{fam}", "must be >= 1")


class ModelAutoscaler:
    def __init__(
        self,
        cfg: ModelAutoscalerConfig,
        est: EstimateConfig,
        catalog: Catalog,
        serves: Callable[[Variant, float], bool],
    ) -> None:
        self.cfg = cfg
        self.est = est
        self.catalog = catalog
        self.serves = serves
        """``serves(v, slo_ms)``: selection would route a query with that SLO to ``v``."""
        self.low: dict[int, Sustained] = {}
        """Instance id -> its sustained scale-down requests."""
        self.replacing: dict[tuple[int, str], tuple[int, ...]] = {}
        """(worker, new variant) -> instance ids to unload once the new one is ready."""
        self._t1: dict[tuple[str, int], tuple[Variant, float]] = {}
        self._up: dict[tuple[str, float, float, str, float], tuple[tuple[Variant, ...], InstanceType, list[tuple[float, Variant]]]] = {}
        self._down: dict[tuple[str, float, str, float], tuple[Variant, InstanceType, list[tuple[float, Variant]]]] = {}

    def t1(self, v: Variant, inst: InstanceView | None = None) -> float:
        b = max(1, round(inst.batch)) if (inst is not None and v.hardware == CPU) else 1
        # memoised: a pure function of the (immutable) variant and the batch, asked many
        # times per tick; the variant is kept beside its value and compared by identity
        key = (v.name, b)
        got = self._t1.get(key)
        if got is not None and got[0] is v:
            return got[1]
        t1 = self.est.replica_throughput_qps(v, b)
        self._t1[key] = (v, t1)
        return t1

    def cap(self, v: Variant) -> int:
        return self.cfg.max_replicas[family(v.hardware)]

    def _sustained(self, inst: InstanceView) -> Sustained:
        """The scale-down delay of one instance: its family's request count, or its
        variant's load latency (``scale_down.rule``)."""
        low = self.low.get(inst.id)
        if low is None:
            sd = self.cfg.scale_down
            v = inst.variant
            low = self.low[inst.id] = (
                Sustained(evaluations=sd.requests[family(v.hardware)])
                if sd.rule == "requests"
                else Sustained(duration_s=v.load_latency_ms / 1000.0)
            )
        return low

    # -- one tick ------------------------------------------------------------------------
    def run(self, view: ClusterView) -> list[Action]:
        out: list[Action] = self._finish_replacements(view)
        retiring = {i for ids in self.replacing.values() for i in ids}
        seen: set[int] = set()
        for w in view.workers:
            if w.state is not WorkerState.RUNNING:
                continue
            room = planning_room(room_of(w), self.cfg.memory_slack_mb)
            groups: dict[str, list[InstanceView]] = {}
            for inst in w.instances:
                seen.add(inst.id)
                if inst.state is InstanceState.READY and inst.id not in retiring:
                    groups.setdefault(inst.variant.model, []).append(inst)
            for model, insts in groups.items():
                out.extend(self._scale_model(view, w, model, insts, room))
        for gone in set(self.low) - seen:
            del self.low[gone]
        return out

    def _finish_replacements(self, view: ClusterView) -> list[Action]:
        out: list[Action] = []
        for (wid, name), old in list(self.replacing.items()):
            news = [i for i in view.instances_of(name) if i.worker_id == wid]
            if any(i.state is InstanceState.READY for i in news) or not news:
                del self.replacing[(wid, name)]
                if news:  # the new variant is serving: retire the old ones
                    live = {i.id: i for i in view.worker(wid).instances}
                    out.extend(UnloadVariant(i, live[i].replicas) for i in old if i in live)
        return out

    def _scale_model(
        self, view: ClusterView, w: WorkerView, model: str, insts: list[InstanceView], room: Free
    ) -> list[Action]:
        cfg = self.cfg
        needs: list[tuple[InstanceView, int]] = []
        cost_a = 0.0
        blocked = False
        for inst in insts:
            v = inst.variant
            t1 = self.t1(v, inst)
            want = cfg.slack * inst.rate_qps
            low = self._sustained(inst)
            if over_capacity(inst.rate_qps, inst.replicas, t1, cfg.slack):
                up = replicas_to_add(inst.rate_qps, inst.replicas, t1, cfg.slack)
                needs.append((inst, up))
                cost_a += v.load_latency_ms * up
                if inst.replicas + up > self.cap(v):
                    cost_a += cfg.replica_cap_penalty * v.load_latency_ms
                    blocked = True
                if not room.fits(w.instance_type, v, up):
                    blocked = True
                low.observe(False, view.now_s)
            else:
                low.observe(
                    one_fewer_carries(inst.rate_qps, inst.replicas, t1, cfg.slack)
                    or (inst.replicas == 1 and self._downgrade_target(w, inst, room, want) is not None),
                    view.now_s,
                )
        if needs:
            return self._scale_up(w, insts, needs, cost_a, blocked, room)
        return self._scale_down(view, w, insts, room)

    # -- up ------------------------------------------------------------------------------
    def _scale_up(
        self,
        w: WorkerView,
        insts: list[InstanceView],
        needs: list[tuple[InstanceView, int]],
        cost_a: float,
        blocked: bool,
        room: Free,
    ) -> list[Action]:
        upgrade = self._upgrade_target(w, insts, room)
        if upgrade is not None:
            u, n_u = upgrade
            if blocked or cost_a > self.cfg.upgrade_cost_ratio * u.load_latency_ms * n_u:
                room.take(u, n_u)
                old = tuple(i.id for i in insts if i.variant.name != u.name)
                if old:
                    self.replacing[(w.id, u.name)] = old
                return [LoadVariant(u.name, w.id, n_u)]
        out: list[Action] = []
        for inst, up in needs:
            v = inst.variant
            n = room.most(w.instance_type, v, apply_bounds(inst.replicas + up, hi=self.cap(v)) - inst.replicas)
            if n > 0:
                room.take(v, n)
                out.append(LoadVariant(v.name, w.id, n))
        return out

    def _upgrade_target(
        self, w: WorkerView, insts: list[InstanceView], room: Free
    ) -> tuple[Variant, int] | None:
        """The faster variant of this model that carries the model's whole demand here in
        the fewest load-milliseconds, and how many replicas of it to add."""
        demand_qps = sum(i.rate_qps for i in insts)
        floor_t1 = max(self.t1(i.variant, i) for i in insts)
        min_acc = min(i.variant.accuracy for i in insts)
        slo = min(i.slo_ms for i in insts)
        have = {i.variant.name: i.replicas for i in insts}
        v0, itype = insts[0].variant, w.instance_type
        # the tests that depend only on the model, the floor, the type and the SLO, memoised
        # as in _downgrade_target
        key = (v0.model, min_acc, floor_t1, itype.name, slo)
        got = self._up.get(key)
        if got is None or got[0] is not self._same_model(v0) or got[1] is not itype:
            same = self._same_model(v0)
            cands = [
                (t1, u)
                for u in same
                if not u.accuracy < min_acc and itype.offers(u.hardware)
                and not (t1 := self.t1(u)) <= floor_t1 and self.serves(u, slo)
            ]  # fmt: skip
            got = self._up[key] = (same, itype, cands)
        best: tuple[float, Variant, int] | None = None
        for t1, u in got[2]:
            total = replicas_needed(demand_qps, t1, self.cfg.slack)
            n = total - have.get(u.name, 0)
            if n <= 0 or total > self.cap(u) or not room.fits(w.instance_type, u, n):
                continue
            cost = u.load_latency_ms * n
            if best is None or (cost, -t1) < (best[0], -self.t1(best[1])):
                best = (cost, u, n)
        return None if best is None else (best[1], best[2])

    def _same_model(self, v: Variant) -> tuple[Variant, ...]:
        return self.catalog.by_model(v.model)

    # -- down ----------------------------------------------------------------------------
    def _scale_down(
        self, view: ClusterView, w: WorkerView, insts: list[InstanceView], room: Free
    ) -> list[Action]:
        out: list[Action] = []
        for inst in insts:
            low = self.low[inst.id]
            if not low.due(view.now_s):
                continue
            low.reset()
            want = self.cfg.slack * inst.rate_qps
            if inst.replicas > 1 or want <= 0.0:
                out.append(UnloadVariant(inst.id, 1))
                continue
            d = self._downgrade_target(w, inst, room, want)
            if d is not None:
                room.take(d, 1)
                self.replacing[(w.id, d.name)] = (inst.id,)
                out.append(LoadVariant(d.name, w.id, 1))
        return out

    def _downgrade_target(self, w: WorkerView, inst: InstanceView, room: Free, want: float) -> Variant | None:
        """The smallest variant of the same model (lower T1, accuracy no lower, meeting the
        SLO) that still carries ``want`` with one replica and fits here."""
        v = inst.variant
        t1_v = self.t1(v, inst)
        present = {i.variant.name for i in w.instances}
        itype = w.instance_type
        # the tests that depend only on the variants, the type and the SLO, memoised: the
        # same candidates in the same order (the rest are tested here, as before)
        key = (v.name, t1_v, itype.name, inst.slo_ms)
        got = self._down.get(key)
        if got is None or got[0] is not v or got[1] is not itype:
            cands = [
                (t1, d)
                for d in self._same_model(v)
                if not d.accuracy < v.accuracy and itype.offers(d.hardware)
                and (t1 := self.t1(d)) < t1_v and self.serves(d, inst.slo_ms)
            ]  # fmt: skip
            got = self._down[key] = (v, itype, cands)
        best: tuple[float, Variant] | None = None
        for t1, d in got[2]:
            if d.name in present or not want <= t1 or not room.fits(itype, d):
                continue
            if best is None or t1 < best[0]:
                best = (t1, d)
        return None if best is None else best[1]
