"""``static``: a pinned variant per application, a fixed replica count, nothing moves.

Rule: at time 0 load ``policy.replicas`` replicas of each application's pinned variant
(or, with ``policy.provision_qps`` set, the replicas that carry the app's share of that
stated mean rate: ``ceil(provision_slack * share * provision_qps / T1)``,
:func:`~infaas_core.policies.pinned.replicas_for`); route each query to the instance of its
pinned variant with the shortest queue per replica; never autoscale.

Placement (``policy.placement``, :mod:`~infaas_core.policies.pinned`): ``shared`` loads the
replicas on the initial workers at time 0, applications that pin the same variant sharing
its instance; ``dedicated`` gives each application workers of its own, taken from the
initial workers or started by the initial actions (``AddWorker``), and loads each app's
replicas on them once they run (a 1 s reconcile, the only periodic part; it never changes
the replica count). Source: this project's validation baseline (queueing-theory
checks need a system whose capacity does not change), not a system from the paper.

``clipper_plus`` (:mod:`~infaas_core.policies.clipper_plus`) is the same mechanism under
the name of the paper's static-provisioning baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from infaas_core.actions import Action, Decision, Reject, RejectKind, Route
from infaas_core.control.resources import Free
from infaas_core.model import Requirements, Variant
from infaas_core.policies.base import Policy, PolicyContext, register
from infaas_core.policies.config import parse_config, require
from infaas_core.policies.pinned import DedicatedPool, pinned_variants, place_replicas, replicas_for
from infaas_core.view import ClusterView, InstanceState, InstanceView


@dataclass(frozen=True, slots=True)
class StaticConfig:
    name: str
    replicas: int | dict[str, int]
    fixed_variants: dict[str, str]
    pin_rule: Literal["most_accurate", "least_accurate"]
    placement: Literal["shared", "dedicated"]
    provision_qps: float | None
    provision_slack: float

    def validate(self, key: str) -> None:
        require(self.provision_qps is None or self.provision_qps > 0, f"{key}.provision_qps", "must be > 0 or null")
        require(self.provision_slack >= 1.0, f"{key}.provision_slack", "must be >= 1")
        table = self.replicas if isinstance(self.replicas, dict) else {"*": self.replicas}
        for app, n in table.items():
            require(n >= 1, f"{key}.replicas" + ("" if app == "*" else f".{app}"), f"must be >= 1, got {n}")


def least_queued(instances: Sequence[InstanceView]) -> InstanceView | None:
    best: InstanceView | None = None
    for inst in instances:
        if inst.state is InstanceState.UNLOADING:
            continue
        if best is None or inst.queue_len * best.replicas < best.queue_len * inst.replicas:
            best = inst
    return best


@register("static")
class StaticPolicy(Policy):
    config_cls: ClassVar[type[StaticConfig]] = StaticConfig
    provisions_for_rate: ClassVar[bool] = True
    """``provision_qps`` sets the replica count (a subclass that scales starts from ``replicas``)."""

    def __init__(self, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(ctx, params)
        self.cfg = parse_config(self.config_cls, self.params, "policy")
        require(self.cfg.name == self.name, "policy.name", f"this yaml is for '{self.cfg.name}', not '{self.name}'")
        self.pins: dict[str, Variant] = pinned_variants(ctx, self.params)
        r = self.cfg.replicas
        self.replicas: dict[str, int] = (
            {a: int(r.get(a, 1)) for a in self.pins} if isinstance(r, dict) else dict.fromkeys(self.pins, r)
        )
        if self.cfg.provision_qps is not None and self.provisions_for_rate:
            share = {a.name: a.share for a in ctx.apps}
            self.replicas = {
                a: replicas_for(v, self.cfg.provision_qps * share.get(a, 0.0), self.cfg.provision_slack)
                for a, v in self.pins.items()
            }
        self.pool: DedicatedPool | None = None
        if self.cfg.placement == "dedicated":
            self.pool = self._make_pool()
            self.model_autoscale_period_s = 1.0  # the reconcile that loads replicas once workers run

    def _make_pool(self) -> DedicatedPool:
        return DedicatedPool(self.ctx.cluster, self.pins, self.replicas)

    def autoscale_models(self, view: ClusterView) -> list[Action]:
        return self.pool.reconcile(view) if self.pool is not None else []

    def initial_actions(self, view: ClusterView) -> list[Action]:
        if self.pool is not None:
            return self.pool.initial_actions(view)
        wanted: dict[str, int] = {}
        for app, v in self.pins.items():
            wanted[v.name] = max(wanted.get(v.name, 0), self.replicas[app])
        rooms: dict[int, Free] = {}
        actions: list[Action] = []
        for name, n in wanted.items():
            actions.extend(place_replicas(view, self.ctx.catalog.get(name), n, rooms))
        return actions

    def pinned_name(self, req: Requirements, app: str | None) -> str | None:
        v = self.pins.get(app) if app is not None else None
        return v.name if v is not None else req.variant

    def select(self, req: Requirements, view: ClusterView, app: str | None = None, batch: int = 1) -> Decision:
        name = self.pinned_name(req, app)
        if name is None:
            return Reject(f"{self.name} policy: application '{app}' has no pinned variant", kind=RejectKind.INFEASIBLE)
        if self.pool is not None and app in self.pool.deps:
            best = least_queued(self.pool.instances(view, app))
        else:
            best = least_queued(view.instances_of(name))
        if best is not None:
            return Route(best.id)
        if any(v.name == name for v in self.pins.values()):  # the pin exists, with no instance now
            return Reject(
                f"{self.name} policy: no instance of pinned variant '{name}' is loaded", kind=RejectKind.NO_CAPACITY
            )
        # a variant no application is pinned to: this policy never loads it
        return Reject(f"{self.name} policy: variant '{name}' is pinned to no application and has no instance")
