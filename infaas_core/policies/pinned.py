"""Helpers shared by the policies that pin a fixed variant per application
(``static``, ``clipper_plus``, ``sagemaker_plus``): which variant an app is pinned to, how
many replicas carry a stated load, and where the replicas go.

**Pin rules** (``policy.pin_rule``), for an application that names no variant:

- ``most_accurate`` (the default of ``static``): the most accurate variant meeting the
  app's accuracy whose batch-1 latency fits its SLO, then the fastest, then by name; on
  hardware the initial workers offer when one qualifies there.
- ``least_accurate`` (``experiment=infaas_paper``: accuracy held equal across policies):
  the *least* accurate variant meeting the floor whose batch-1 latency fits the SLO — the
  accuracy INFaaS itself serves (it picks the least accurate variant meeting the floor,
  INFAAS.md §2.5). Applications are pinned in turn — model-form applications first (their
  architecture is fixed), then by descending accuracy floor, then ascending SLO — and each
  takes an **architecture no earlier application took** (the baselines do not share models
  across applications, which is INFaaS's claim); only when every qualifying architecture is
  taken does an application reuse one (on workers of its own all the same). Among the
  variants of the chosen accuracy the pin is the one whose **dedicated deployment is
  cheapest** for the app's share of ``policy.provision_qps`` (workers of the cheapest type
  that hosts it × that type's price; :func:`deployment`), then the fastest, then by name —
  a careful user provisioning for a stated load.

**Provisioning** (``policy.provision_qps``, the run's stated mean rate): an application
with share ``s`` needs ``ceil(slack * s * provision_qps / T1)`` replicas (at least 1), ``T1``
one replica's throughput at its estimate batch (:class:`~infaas_core.policies.common.EstimateConfig`:
batch 1 on CPU, ``min(32, max_batch)`` on accelerators) — the shared replica arithmetic of
:func:`~infaas_core.policies.rules.replicas_to_add`.

**Placement** (``policy.placement``): ``shared`` places replicas on the running workers in
id order (several applications' replicas, even one instance, on one worker); ``dedicated``
gives each application workers of its own (:class:`DedicatedPool`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infaas_core.actions import Action, AddWorker, LoadVariant, RemoveWorker, UnloadVariant
from infaas_core.control.resources import Free, can_host, capacity, room_of
from infaas_core.errors import ConfigError
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements, Variant
from infaas_core.policies.base import PolicyContext
from infaas_core.policies.common import EstimateConfig
from infaas_core.policies.rules import replicas_to_add
from infaas_core.view import ClusterView, InstanceState, InstanceView, WorkerState

PIN_RULES = ("most_accurate", "least_accurate")
PLACEMENTS = ("shared", "dedicated")
DEFAULT_ESTIMATES = EstimateConfig(max_online_batch=32, accelerator_batch="full")
"""``T1`` for provisioning: MAX_ONLINE_BATCH 32 on accelerators, batch 1 on CPU (as sagemaker_plus)."""


def pinned_variants(ctx: PolicyContext, params: Mapping[str, Any]) -> dict[str, Variant]:
    """App name -> its pinned variant.

    Taken, in order, from ``policy.fixed_variants[<app>]``, the app's own ``variant``
    requirement, or — for a task/model app — the variant ``policy.pin_rule`` derives (module
    docstring).
    """
    fixed: Mapping[str, str] = params.get("fixed_variants") or {}
    rule = params.get("pin_rule") or "most_accurate"
    if rule not in PIN_RULES:
        raise ConfigError("policy.pin_rule", f"must be one of {PIN_RULES}, got {rule!r}")
    out: dict[str, Variant] = {}
    free: list[App] = []
    for app in ctx.apps:
        name = fixed.get(app.name) or app.fixed_variant or app.requirements.variant
        if name:
            if name not in ctx.catalog:
                raise ConfigError(f"policy.fixed_variants.{app.name}", f"unknown variant '{name}'")
            out[app.name] = ctx.catalog.get(name)
        else:
            free.append(app)
    if rule == "most_accurate":
        for app in free:
            out[app.name] = _default_pin(ctx, app.requirements, app.name)
        return {a.name: out[a.name] for a in ctx.apps}
    rate = params.get("provision_qps")
    slack = float(params.get("provision_slack") or 1.0)
    taken = {v.model for v in out.values()}
    order = sorted(free, key=lambda a: (a.requirements.model is None, -a.requirements.min_accuracy,
                                        a.requirements.latency_slo_ms, a.name))
    for app in order:
        fits = _fits(ctx, app.requirements, app.name)
        fresh = [v for v in fits if v.model not in taken] or fits
        low = min(v.accuracy for v in fresh)
        top = [v for v in fresh if v.accuracy == low]

        def key(v: Variant, app: App = app) -> tuple[float, float, int, str]:
            dep_cost = math.inf
            if rate is not None:
                d = deployment(ctx.cluster, v, replicas_for(v, float(rate) * app.share, slack))
                dep_cost = d[0].price_usd_per_hour * d[1] if d is not None else math.inf
            return (dep_cost, v.batch1_latency_ms, -v.max_batch, v.name)

        out[app.name] = min(top, key=key)
        taken.add(out[app.name].model)
    return {a.name: out[a.name] for a in ctx.apps}


def _fits(ctx: PolicyContext, req: Requirements, app: str) -> list[Variant]:
    cands = ctx.catalog.by_task(req.task) if req.task else ctx.catalog.by_model(req.model or "")
    spec = ctx.cluster
    hw_ok = {h for t in spec.instance_types if spec.max_count(t.name) > 0 for h in t.device_classes}
    fits = [
        v
        for v in cands
        if v.accuracy >= req.min_accuracy and v.batch1_latency_ms <= req.latency_slo_ms and v.hardware in hw_ok
    ]
    if not fits:
        raise ConfigError(f"policy.fixed_variants.{app}", f"no variant meets {req} on this cluster; pin one")
    return fits


def _default_pin(ctx: PolicyContext, req: Requirements, app: str) -> Variant:
    fits = _fits(ctx, req, app)
    spec = ctx.cluster
    # Prefer hardware the initial workers offer: a pinned baseline loads its replicas at t=0.
    hw_start = {h for t in spec.instance_types if spec.initial_count(t.name) > 0 for h in t.device_classes}
    fits = [v for v in fits if v.hardware in hw_start] or fits
    # the choice a careful user would make: the most accurate, then the fastest
    best_acc = max(v.accuracy for v in fits)
    top = [v for v in fits if v.accuracy == best_acc]
    return min(top, key=lambda v: (v.batch1_latency_ms, v.name))


def replicas_for(v: Variant, rate_qps: float, slack: float, est: EstimateConfig = DEFAULT_ESTIMATES) -> int:
    """Replicas of ``v`` that carry ``rate_qps`` with ``slack``: ``ceil(slack * rate / T1)``, at least 1."""
    return max(1, replicas_to_add(rate_qps, 0, est.replica_throughput_qps(v, 1), slack))


def dedicated_type(spec: ClusterSpec, v: Variant) -> InstanceType | None:
    """The instance type a dedicated deployment of ``v`` uses: the cheapest that may run
    (``max_workers`` > 0) and can hold a replica; for a CPU variant a type without
    accelerators first (a user does not rent an accelerator machine for its CPU)."""
    ok = [t for t in spec.instance_types if spec.max_count(t.name) > 0 and can_host(t, v)]
    if not ok:
        return None
    return min(ok, key=lambda t: (v.is_cpu and bool(t.accelerators), t.price_usd_per_hour, t.name))


def per_worker(itype: InstanceType, v: Variant, cap: int | None = None) -> int:
    """Replicas of ``v`` one dedicated worker of ``itype`` holds: what fits on an empty one;
    on accelerators at most one per device (replicas on one device share its compute)."""
    n = capacity(itype).most(itype, v, 1024)
    if not v.is_cpu:
        n = min(n, itype.accelerator_count(v.hardware))
    return max(0, min(n, cap) if cap is not None else n)


def deployment(spec: ClusterSpec, v: Variant, replicas: int) -> tuple[InstanceType, int] | None:
    """``(type, workers)`` of a dedicated deployment of ``replicas`` replicas of ``v``."""
    t = dedicated_type(spec, v)
    if t is None:
        return None
    k = per_worker(t, v)
    return (t, math.ceil(replicas / k)) if k else None


@dataclass(slots=True)
class _Deployment:
    app: str
    variant: Variant
    itype: InstanceType
    per_worker: int
    want: int
    workers: list[int] = field(default_factory=list)
    pending: int = 0


class DedicatedPool:
    """``placement: dedicated``: every application on workers of its own, one variant per
    worker (the original's ``ROUNDROBIN_STATIC`` gives each variant its own worker;
    INFAAS.md §4.1: the baselines "use dedicated hardware resources").

    An application wanting ``want`` replicas of its pin needs ``ceil(want / per_worker)``
    workers of its :func:`dedicated_type`. At start it takes unowned initial workers of that
    type, and asks for the rest with ``AddWorker`` (:meth:`initial_actions`); workers that
    appear in the view after such a request are claimed in the order asked, by type. Each
    :meth:`reconcile` (the policy's periodic part) loads the missing replicas on its running
    workers, unloads surplus ones, asks for missing workers and — with ``shrink`` — stops a
    worker of its own that holds nothing and is no longer needed. No worker ever serves two
    applications; an initial worker no application needs stays idle (it costs VM-hours,
    and nothing under the per-instance metric).
    """

    def __init__(self, spec: ClusterSpec, pins: Mapping[str, Variant], want: Mapping[str, int],
                 cap: Mapping[str, int | None] | None = None, shrink: bool = False) -> None:
        self.spec = spec
        self.shrink = shrink
        self.deps: dict[str, _Deployment] = {}
        for app, v in pins.items():
            t = dedicated_type(spec, v)
            k = per_worker(t, v, (cap or {}).get(app)) if t is not None else 0
            if t is None or k == 0:
                raise ConfigError(f"policy.fixed_variants.{app}", f"no instance type can hold {v.name}")
            self.deps[app] = _Deployment(app, v, t, k, max(1, int(want[app])))
        self.owner: dict[int, str] = {}
        self._asked: list[str] = []  # apps, one entry per AddWorker not yet seen, in order
        self._seen = -1

    def owns(self, app: str, worker_id: int) -> bool:
        return self.owner.get(worker_id) == app

    def instances(self, view: ClusterView, app: str) -> list[InstanceView]:
        d = self.deps[app]
        return [i for i in view.instances_of(d.variant.name) if self.owner.get(i.worker_id) == app]

    def initial_actions(self, view: ClusterView) -> list[Action]:
        self._seen = max((w.id for w in view.workers), default=-1)
        spare = sorted(view.workers, key=lambda w: w.id)
        for d in self.deps.values():
            need = math.ceil(d.want / d.per_worker)
            for w in [w for w in spare if w.instance_type.name == d.itype.name][:need]:
                self.owner[w.id] = d.app
                d.workers.append(w.id)
                spare.remove(w)
        return self.reconcile(view)

    def _claim(self, view: ClusterView) -> None:
        for w in sorted((w for w in view.workers if w.id > self._seen), key=lambda w: w.id):
            self._seen = w.id
            for k, app in enumerate(self._asked):
                d = self.deps[app]
                if d.itype.name == w.instance_type.name:
                    del self._asked[k]
                    d.pending -= 1
                    d.workers.append(w.id)
                    self.owner[w.id] = app
                    break

    def reconcile(self, view: ClusterView) -> list[Action]:
        self._claim(view)
        live = {w.id: w for w in view.workers}
        out: list[Action] = []
        counts: dict[str, int] = {}
        for w in view.workers:
            counts[w.instance_type.name] = counts.get(w.instance_type.name, 0) + 1
        for app in self._asked:
            t = self.deps[app].itype.name
            counts[t] = counts.get(t, 0) + 1
        for d in self.deps.values():
            d.workers = [i for i in d.workers if i in live and live[i].state is not WorkerState.STOPPING]
            insts = [i for i in self.instances(view, d.app) if i.state is not InstanceState.UNLOADING]
            have = sum(i.replicas for i in insts)
            on = {i.worker_id: i.replicas for i in insts}
            if have < d.want:
                left = d.want - have
                for wid in d.workers:
                    w = live[wid]
                    if left == 0:
                        break
                    if w.state is not WorkerState.RUNNING:
                        continue
                    n = room_of(w).most(w.instance_type, d.variant, min(left, d.per_worker - on.get(wid, 0)))
                    if n > 0:
                        out.append(LoadVariant(d.variant.name, wid, n))
                        left -= n
            elif have > d.want:
                extra = have - d.want
                for i in sorted(insts, key=lambda i: (-i.replicas, i.queue_len, i.id)):
                    if extra == 0:
                        break
                    n = min(extra, i.replicas)
                    out.append(UnloadVariant(i.id, n))
                    extra -= n
            need = math.ceil(d.want / d.per_worker)
            short = need - len(d.workers) - d.pending
            t = d.itype.name
            while short > 0 and counts.get(t, 0) < self.spec.max_count(t):
                out.append(AddWorker(t))
                self._asked.append(d.app)
                d.pending += 1
                counts[t] = counts.get(t, 0) + 1
                short -= 1
            if self.shrink and short < 0:
                for wid in [i for i in d.workers if i not in on]:
                    if short == 0:
                        break
                    if not live[wid].instances:
                        out.append(RemoveWorker(wid))
                        d.workers.remove(wid)
                        short += 1
        return out


def place_replicas(
    view: ClusterView, variant: Variant, replicas: int, rooms: dict[int, Free]
) -> list[LoadVariant]:
    """Spread ``replicas`` replicas of ``variant`` over running workers that offer its
    hardware and have room (the core resource model, :mod:`infaas_core.control.resources`),
    filling workers in id order. ``rooms`` holds, per worker id, what is still free after the
    earlier placements of the same batch of actions; it is filled in as workers are used."""
    actions: list[LoadVariant] = []
    left = replicas
    for w in sorted(view.workers, key=lambda w: w.id):
        if left == 0:
            break
        if w.state is not WorkerState.RUNNING or not w.instance_type.offers(variant.hardware):
            continue
        room = rooms.get(w.id)
        if room is None:
            room = rooms[w.id] = room_of(w)
        n = room.most(w.instance_type, variant, left)
        if n:
            room.take(variant, n)
            actions.append(LoadVariant(variant.name, w.id, n))
            left -= n
    if left:
        raise ConfigError(
            "policy.replicas",
            f"cannot place {replicas} replicas of {variant.name} ({variant.hardware}, {variant.cores} cores, "
            f"{variant.memory_mb:.0f} MB) on the initial workers; {left} do not fit",
        )
    return actions
