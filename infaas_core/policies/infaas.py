"""The ``infaas`` policy: selection + monitor + model autoscaler + VM autoscaler, and its
variants ``infaas_cost`` ($-cost ordering) and ``infaas_no_model_autoscale``.

Each part lives in its own module with the rule it implements and its source:
:mod:`~infaas_core.policies.infaas_selection` (per-query selection, INFAAS.md §2),
:mod:`~infaas_core.policies.monitor` (§3.1), :mod:`~infaas_core.policies.model_autoscaler`
(§3.2), :mod:`~infaas_core.policies.vm_autoscaler` (§3.3). This module only wires them to
one config (``configs/policy/<name>.yaml``) and to the :class:`Policy` interface.

``infaas_no_model_autoscale`` is INFaaS with ``model_autoscale_period_s: null``: variants
are still loaded on demand by selection (and unloaded never), workers still scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infaas_core.actions import Action, Decision
from infaas_core.model import Requirements
from infaas_core.policies.base import Policy, PolicyContext, register
from infaas_core.policies.common import EstimateConfig
from infaas_core.policies.config import parse_config, require
from infaas_core.policies.infaas_selection import InfaasSelector, SelectionConfig
from infaas_core.policies.model_autoscaler import ModelAutoscaler, ModelAutoscalerConfig
from infaas_core.policies.monitor import Monitor, MonitorConfig
from infaas_core.policies.vm_autoscaler import VmAutoscaler, VmAutoscalerConfig
from infaas_core.view import ClusterView


@dataclass(frozen=True, slots=True)
class InfaasConfig:
    name: str
    monitor_period_s: float
    model_autoscale_period_s: float | None
    vm_autoscale_period_s: float | None
    estimates: EstimateConfig
    selection: SelectionConfig
    monitor: MonitorConfig
    model_autoscaler: ModelAutoscalerConfig | None
    vm_autoscaler: VmAutoscalerConfig | None

    def validate(self, key: str) -> None:
        require(self.monitor_period_s > 0, f"{key}.monitor_period_s", "must be > 0")
        for period, part in (
            ("model_autoscale_period_s", "model_autoscaler"),
            ("vm_autoscale_period_s", "vm_autoscaler"),
        ):
            p, c = getattr(self, period), getattr(self, part)
            require((p is None) == (c is None), f"{key}.{part}", f"must be null exactly when {period} is null")
            require(p is None or p > 0, f"{key}.{period}", "must be > 0 or null")


@register("infaas")
class InfaasPolicy(Policy):
    """INFaaS (Romero et al., ATC'21) as the paper and the public code describe it."""

    def __init__(self, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(ctx, params)
        self.cfg = parse_config(InfaasConfig, self.params, "policy")
        require(self.cfg.name == self.name, "policy.name", f"this yaml is for '{self.cfg.name}', not '{self.name}'")
        self.check(self.cfg)
        self.monitor_period_s = self.cfg.monitor_period_s
        self.model_autoscale_period_s = self.cfg.model_autoscale_period_s
        self.vm_autoscale_period_s = self.cfg.vm_autoscale_period_s
        self.selector = InfaasSelector(ctx, self.cfg.selection, self.cfg.estimates)
        self._monitor = Monitor(self.cfg.monitor)
        self.model_scaler = (
            ModelAutoscaler(self.cfg.model_autoscaler, self.cfg.estimates, ctx.catalog, self.selector.serves)
            if self.cfg.model_autoscaler is not None
            else None
        )
        self.vm_scaler = (
            VmAutoscaler(self.cfg.vm_autoscaler, ctx.cluster) if self.cfg.vm_autoscaler is not None else None
        )
        # The hot path: the selector's select (same signature) replaces this object's
        # method, so a query costs one Python call, not two.
        self.select = self.selector.select  # type: ignore[method-assign]

    def check(self, cfg: InfaasConfig) -> None:
        """Subclasses pin what their name promises."""
        require(cfg.model_autoscaler is not None, "policy.model_autoscaler", f"'{self.name}' needs a model autoscaler")

    def select(self, req: Requirements, view: ClusterView, app: str | None = None, batch: int = 1) -> Decision:
        return self.selector.select(req, view, app, batch)  # (shadowed per instance in __init__)

    def monitor(self, view: ClusterView) -> list[Action]:
        return self._monitor.run(view)

    def autoscale_models(self, view: ClusterView) -> list[Action]:
        return [] if self.model_scaler is None else self.model_scaler.run(view)

    def autoscale_vms(self, view: ClusterView) -> list[Action]:
        if self.vm_scaler is None:
            return []
        self.selector.blacklist_busy_workers(view)  # the VM daemon's per-iteration worker blacklist
        return self.vm_scaler.run(view, self.selector.pressure)


@register("infaas_cost")
class InfaasCostPolicy(InfaasPolicy):
    """INFaaS with this project's explicit $-cost ordering (``selection.ordering: cost``)."""

    def check(self, cfg: InfaasConfig) -> None:
        super().check(cfg)
        require(cfg.selection.ordering == "cost", "policy.selection.ordering", "infaas_cost orders by cost")


@register("infaas_no_model_autoscale")
class InfaasNoModelAutoscalePolicy(InfaasPolicy):
    """INFaaS without the model-level autoscaler (a baseline of the paper's ablation)."""

    def check(self, cfg: InfaasConfig) -> None:
        require(cfg.model_autoscaler is None, "policy.model_autoscaler", "must be null for this policy")
