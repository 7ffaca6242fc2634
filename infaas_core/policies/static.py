"""``static``: a pinned variant per application, a fixed replica count, nothing moves.

Rule: at time 0 load ``policy.replicas`` replicas of each application's pinned variant;
route each query to the instance of its pinned variant with the shortest queue; never
autoscale. Source: this project's validation baseline (queueing-theory checks need a
system whose capacity does not change), not a system from the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infaas_core.actions import Action, Decision, Reject, Route
from infaas_core.errors import ConfigError
from infaas_core.model import Requirements, Variant
from infaas_core.policies.base import Policy, PolicyContext, register
from infaas_core.policies.pinned import pinned_variants, place_replicas
from infaas_core.view import ClusterView, InstanceState


@register("static")
class StaticPolicy(Policy):
    def __init__(self, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(ctx, params)
        self.pins: dict[str, Variant] = pinned_variants(ctx, self.params)
        replicas = self.params.get("replicas", 1)
        self.replicas: dict[str, int] = (
            {a: int(replicas.get(a, 1)) for a in self.pins}
            if isinstance(replicas, Mapping)
            else dict.fromkeys(self.pins, int(replicas))
        )
        for app, n in self.replicas.items():
            if n < 1:
                raise ConfigError(f"policy.replicas.{app}", f"must be >= 1, got {n}")

    def initial_actions(self, view: ClusterView) -> list[Action]:
        wanted: dict[str, int] = {}
        for app, v in self.pins.items():
            wanted[v.name] = max(wanted.get(v.name, 0), self.replicas[app])
        reserved: dict[int, tuple[int, float]] = {}
        actions: list[Action] = []
        for name, n in wanted.items():
            actions.extend(place_replicas(view, self.ctx.catalog.get(name), n, reserved))
        return actions

    def select(self, req: Requirements, view: ClusterView, app: str | None = None, batch: int = 1) -> Decision:
        v = self.pins.get(app) if app is not None else None
        name = v.name if v is not None else req.variant
        if name is None:
            return Reject(f"static policy: application '{app}' has no pinned variant")
        best = None
        for inst in view.instances_of(name):
            if inst.state is InstanceState.UNLOADING:
                continue
            if best is None or inst.queue_len / inst.replicas < best.queue_len / best.replicas:
                best = inst
        if best is None:
            return Reject(f"static policy: no instance of pinned variant '{name}' is loaded")
        return Route(best.id)
