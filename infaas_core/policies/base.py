"""The policy interface both backends drive, and the registry of policies by name.

A policy is one object per run. The backend calls, with a view of the cluster
(:class:`infaas_core.view.ClusterView`):

- ``initial_actions(view)`` once at time 0 (e.g. a baseline pre-loads its variants);
- ``select(req, view, app=...)`` for each query -> ``Route`` / ``LoadAndRoute`` / ``Reject``;
- ``monitor(view)`` every ``monitor_period_s`` -> ``SetFlags`` / ``SetScaleDown``;
- ``autoscale_models(view)`` every ``model_autoscale_period_s`` -> load / unload actions;
- ``autoscale_vms(view)`` every ``vm_autoscale_period_s`` -> add / remove worker actions.

A period of ``None`` means that part never runs. When each part runs is decided by the
control loop (:mod:`infaas_core.control.loop`), not by the backend. What a policy remembers
between calls lives in typed state on the object; it never reads a clock.

Every policy's params carry ``observation`` (:class:`~infaas_core.control.observe.ObservationConfig`:
how the view's window statistics are computed, the same for every backend); the base class
parses it and hands the rest of the params to the subclass as :attr:`Policy.params`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from infaas_core.actions import Action, Decision
from infaas_core.catalog import Catalog
from infaas_core.control.observe import ObservationConfig
from infaas_core.errors import ConfigError, UnknownNameError
from infaas_core.model import App, ClusterSpec, Requirements
from infaas_core.view import ClusterView


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What a policy knows of its run besides the live view."""

    catalog: Catalog
    cluster: ClusterSpec
    apps: tuple[App, ...] = ()

    def app(self, name: str) -> App | None:
        for a in self.apps:
            if a.name == name:
                return a
        return None


class Policy:
    """Base class: every part does nothing until a subclass says otherwise."""

    name: ClassVar[str] = "base"
    monitor_period_s: float | None = None
    model_autoscale_period_s: float | None = None
    vm_autoscale_period_s: float | None = None

    def __init__(self, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> None:
        from infaas_core.policies.config import parse_config

        self.ctx = ctx
        given = dict(params or {})
        if "observation" not in given:
            raise ConfigError("policy.observation", "missing key (compose the policy's config with Hydra)")
        self.observation: ObservationConfig = parse_config(ObservationConfig, given.pop("observation"),
                                                           "policy.observation")
        self.params = given

    def initial_actions(self, view: ClusterView) -> list[Action]:
        return []

    def select(self, req: Requirements, view: ClusterView, app: str | None = None, batch: int = 1) -> Decision:
        raise NotImplementedError

    def monitor(self, view: ClusterView) -> list[Action]:
        return []

    def autoscale_models(self, view: ClusterView) -> list[Action]:
        return []

    def autoscale_vms(self, view: ClusterView) -> list[Action]:
        return []


PolicyFactory = Callable[[PolicyContext, Mapping[str, Any]], Policy]
_REGISTRY: dict[str, type[Policy]] = {}


def register(name: str) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator: make a policy available by ``name`` (``policy=<name>`` in configs)."""

    def deco(cls: type[Policy]) -> type[Policy]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"policy name '{name}' registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def known_policies() -> tuple[str, ...]:
    _load_builtin()
    return tuple(sorted(_REGISTRY))


def make_policy(name: str, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> Policy:
    """Build the policy registered as ``name``; an unknown name lists the known ones."""
    _load_builtin()
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("policy", name, list(_REGISTRY)) from None
    return cls(ctx, params or {})


def _load_builtin() -> None:
    # Importing the package registers every built-in policy (each module's @register).
    import infaas_core.policies  # noqa: F401
