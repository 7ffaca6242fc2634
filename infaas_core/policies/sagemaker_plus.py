"""``sagemaker_plus``: a fixed variant per application, replica autoscaling on its load,
VM autoscaling on utilisation; it never switches variants.

Rule (every ``model_autoscale_period_s``), per pinned variant over the whole cluster, with
``R`` its replicas (loading ones included), ``rate`` its observed arrival rate and ``T1``
one replica's profiled throughput: the target load per replica is ``T1 / slack``.

- scale out when ``slack * rate > R * T1`` (load per replica above target): add
  ``ceil((slack * rate - R * T1) / T1)`` replicas at once, no more often than
  ``scale_out_cooldown_s``; a replica goes next to an existing one on its worker while under
  ``max_replicas_per_worker`` and room allows, else to the least-utilised running worker
  offering the hardware with room; what cannot be placed is reported to the VM autoscaler
  (as INFaaS's dispatcher ``vmscale`` request);
- back up to ``min_replicas`` whenever fewer remain (e.g. their worker was removed);
- scale in one replica when one fewer would still carry the load (``slack * rate <= (R -
  1) * T1``) for ``scale_in_evaluations[family]`` consecutive evaluations, never below
  ``min_replicas``.

Room is the core resource model's (:mod:`infaas_core.control.resources`) less
``memory_slack_mb``; the delay, the cooldown and the replica arithmetic are the shared rules
of :mod:`~infaas_core.policies.rules`.

Queries go to the least-queued instance of the application's variant. Workers scale with
the INFaaS VM autoscaler (:mod:`~infaas_core.policies.vm_autoscaler`); no monitor runs, so
only its utilisation and placement-pressure rules fire.

Dedicated placement (``policy.placement: dedicated``, SageMaker's model: an endpoint's
instances are machines of its own): the same target tracking per *application* sets how
many replicas it wants, starting from ``replicas`` (one instance); the application's own
workers (:class:`~infaas_core.policies.pinned.DedicatedPool`, at most
``max_replicas_per_worker`` replicas each) are started with ``AddWorker`` when the wanted
replicas do not fit on them and stopped when empty and no longer needed; the INFaaS VM
autoscaler does not run. ``provision_qps`` only steers the pin choice here (the replica count
is the autoscaler's). The cooldown is ``scaling.scale_out_cooldown_s`` (AWS: 300 s by default).

Sources: INFAAS.md §4.1 ("SageMaker+-like = horizontal per-variant autoscaling without
variant switching": INFaaS's INDIVIDUAL worker autoscaler, which "simulate[s] the behavior
of SageMaker", with slack 1.05 and the code's per-family scale-down delays and replica
caps, GPU 2 in that mode) and AWS SageMaker target tracking (add capacity in proportion to
the metric's excess over its target; a cooldown between scale-outs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infaas_core.actions import Action, LoadVariant, UnloadVariant
from infaas_core.control.resources import Free, planning_room, room_of
from infaas_core.model import Variant
from infaas_core.policies.base import PolicyContext, register
from infaas_core.policies.common import FAMILIES, EstimateConfig, family
from infaas_core.policies.config import require
from infaas_core.policies.pinned import DedicatedPool
from infaas_core.policies.rules import (
    Cooldown,
    Sustained,
    apply_bounds,
    one_fewer_carries,
    over_capacity,
    replicas_to_add,
)
from infaas_core.policies.static import StaticConfig, StaticPolicy
from infaas_core.policies.vm_autoscaler import VmAutoscaler, VmAutoscalerConfig
from infaas_core.view import ClusterView, InstanceState, InstanceView, WorkerState


@dataclass(frozen=True, slots=True)
class ReplicaScalingConfig:
    slack: float
    min_replicas: int
    max_replicas_per_worker: dict[str, int]
    scale_out_cooldown_s: float
    scale_in_evaluations: dict[str, int]
    memory_slack_mb: float

    def validate(self, key: str) -> None:
        require(self.slack >= 1.0, f"{key}.slack", "must be >= 1")
        require(self.min_replicas >= 1, f"{key}.min_replicas", "must be >= 1")
        for name in ("max_replicas_per_worker", "scale_in_evaluations"):
            require(set(getattr(self, name)) == set(FAMILIES), f"{key}.{name}", f"needs exactly {FAMILIES}")


@dataclass(frozen=True, slots=True)
class SageMakerPlusConfig(StaticConfig):
    model_autoscale_period_s: float
    vm_autoscale_period_s: float
    estimates: EstimateConfig
    scaling: ReplicaScalingConfig
    vm_autoscaler: VmAutoscalerConfig


@register("sagemaker_plus")
class SageMakerPlusPolicy(StaticPolicy):
    config_cls = SageMakerPlusConfig
    provisions_for_rate = False

    def __init__(self, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(ctx, params)  # pins, initial replicas, least-queue routing
        assert isinstance(self.cfg, SageMakerPlusConfig)
        self.smcfg: SageMakerPlusConfig = self.cfg
        self.model_autoscale_period_s = self.smcfg.model_autoscale_period_s
        self.vm_autoscale_period_s = self.smcfg.vm_autoscale_period_s
        self.vm_scaler = VmAutoscaler(self.smcfg.vm_autoscaler, ctx.cluster)
        self.pressure: dict[str, float] = {}
        self.scale_in: dict[str, Sustained] = {}
        """Variant name -> its consecutive low evaluations."""
        self.scale_out: dict[str, Cooldown] = {}
        """Variant name (application name when dedicated) -> the cooldown since its last scale-out."""
        if self.pool is not None:
            self.vm_autoscale_period_s = None  # dedicated: the application's own workers scale with it

    def _make_pool(self) -> DedicatedPool:
        assert isinstance(self.cfg, SageMakerPlusConfig)
        caps: dict[str, int | None] = {
            a: self.cfg.scaling.max_replicas_per_worker[family(v.hardware)] for a, v in self.pins.items()
        }
        return DedicatedPool(self.ctx.cluster, self.pins, self.replicas, cap=caps, shrink=True)

    def autoscale_models(self, view: ClusterView) -> list[Action]:
        if self.pool is not None:
            for app in self.pool.deps:
                self._track_app(view, app)
            return self.pool.reconcile(view)
        out: list[Action] = []
        rooms: dict[int, Free] = {}
        for v in {p.name: p for p in self.pins.values()}.values():
            out.extend(self._scale_variant(view, v, rooms))
        return out

    def autoscale_vms(self, view: ClusterView) -> list[Action]:
        return self.vm_scaler.run(view, self.pressure)

    def _track_app(self, view: ClusterView, app: str) -> None:
        """Dedicated: target tracking on the replicas the application wants (booting ones
        count, as SageMaker's desired instance count does)."""
        assert self.pool is not None
        sc = self.smcfg.scaling
        d = self.pool.deps[app]
        v = d.variant
        t1 = self.smcfg.estimates.replica_throughput_qps(v, 1)
        rate_qps = sum(i.rate_qps for i in self.pool.instances(view, app) if i.state is not InstanceState.UNLOADING)
        low = self.scale_in.setdefault(app, Sustained(evaluations=sc.scale_in_evaluations[family(v.hardware)]))
        cooldown = self.scale_out.setdefault(app, Cooldown(sc.scale_out_cooldown_s))
        if over_capacity(rate_qps, d.want, t1, sc.slack):
            low.reset()
            if cooldown.ready(view.now_s):
                cooldown.mark(view.now_s)
                d.want = apply_bounds(d.want + replicas_to_add(rate_qps, d.want, t1, sc.slack), lo=sc.min_replicas)
            return
        if low.observe(d.want > sc.min_replicas and one_fewer_carries(rate_qps, d.want, t1, sc.slack), view.now_s):
            low.reset()
            d.want -= 1

    def _scale_variant(self, view: ClusterView, v: Variant, rooms: dict[int, Free]) -> list[Action]:
        sc = self.smcfg.scaling
        insts = [
            i
            for i in view.instances_of(v.name)
            if i.state is not InstanceState.UNLOADING
            and view.worker(i.worker_id).state is WorkerState.RUNNING
        ]
        replicas = sum(i.replicas for i in insts)
        t1 = self.smcfg.estimates.replica_throughput_qps(v, 1)
        rate_qps = sum(i.rate_qps for i in insts)
        low = self.scale_in.setdefault(v.name, Sustained(evaluations=sc.scale_in_evaluations[family(v.hardware)]))
        cooldown = self.scale_out.setdefault(v.name, Cooldown(sc.scale_out_cooldown_s))
        if over_capacity(rate_qps, replicas, t1, sc.slack) or replicas < sc.min_replicas:
            low.reset()
            if not cooldown.ready(view.now_s):
                return []
            cooldown.mark(view.now_s)
            target = replicas + replicas_to_add(rate_qps, replicas, t1, sc.slack)
            n = apply_bounds(target, lo=sc.min_replicas) - replicas
            return self._add(view, v, n, insts, rooms)
        if low.observe(replicas > sc.min_replicas and one_fewer_carries(rate_qps, replicas, t1, sc.slack), view.now_s):
            low.reset()
            victim = max(insts, key=lambda i: (i.replicas, -i.queue_len, i.id))
            return [UnloadVariant(victim.id, 1)]
        return []

    def _add(
        self, view: ClusterView, v: Variant, n: int, insts: list[InstanceView], rooms: dict[int, Free]
    ) -> list[Action]:
        sc = self.smcfg.scaling
        cap = sc.max_replicas_per_worker[family(v.hardware)]
        on: dict[int, int] = {}
        for i in insts:
            on[i.worker_id] = on.get(i.worker_id, 0) + i.replicas
        order = sorted(
            (w for w in view.workers if w.state is WorkerState.RUNNING and w.instance_type.offers(v.hardware)),
            key=lambda w: (w.id not in on, w.utilization.get(v.hardware, 0.0), w.id),
        )
        out: list[Action] = []
        for w in order:
            if n <= 0:
                break
            room = rooms.get(w.id)
            if room is None:
                room = rooms[w.id] = planning_room(room_of(w), sc.memory_slack_mb)
            k = room.most(w.instance_type, v, min(n, cap - on.get(w.id, 0)))
            if k > 0:
                room.take(v, k)
                out.append(LoadVariant(v.name, w.id, k))
                n -= k
        if n > 0:
            self.pressure[v.hardware] = view.now_s
        return out
