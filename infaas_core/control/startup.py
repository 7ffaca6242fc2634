"""Start-up validation: refuse a run that cannot work before it starts (issue 10, point 4).

Both backends call :func:`check_run` once, after building the catalog, cluster and
applications and before anything runs (the simulator before its first event, the server
before it binds a port). A failure raises :class:`~infaas_core.errors.ConfigError`
(``<key>: <reason>``), which the command lines print as one line and exit 2. Otherwise such
a run starts, rejects or drops every query of an application and exits 0.

The rules, in the order they are checked:

1. **The cluster can run a worker**: some instance type has ``max_workers`` > 0 (a type
   missing from ``max_workers`` may have its ``initial_workers``), and no type starts more
   workers than its ``max_workers``. Key ``cluster.max_workers`` /
   ``cluster.initial_workers.<type>``.
2. **Every name an application gives exists**: its ``task``, ``model`` or ``variant``
   (``apps.<app>.task`` ...), and — when the policy pins variants — its pin
   (``policy.fixed_variants.<app>``, else ``apps.<app>.fixed_variant``). The reason lists
   the catalog's names (shortened).
3. **What a run needs is placeable.** A catalog row only matters when the run needs it; a
   catalog may hold rows for hardware this cluster does not offer (the imagenet catalog's
   accelerator rows on a CPU-only cluster) and that is fine. An application *needs*:

   - under a policy that pins variants (``static``, ``clipper_plus``, ``sagemaker_plus``, or
     any policy config with ``fixed_variants``): its pinned variant —
     ``policy.fixed_variants.<app>``, else the app's ``fixed_variant``, else its ``variant``;
     with no pin, the rows of its task / model (the policy picks one);
   - otherwise: the rows of its task, model or variant (the app's ``fixed_variant`` is
     ignored: such policies never read it).

   Some needed row must be on hardware a type with ``max_workers`` > 0 offers (else the
   application's key fails, naming the hardware its rows are on and the hardware the
   cluster offers), and some such type must be able to hold one replica of it on an empty
   worker (:func:`~infaas_core.control.resources.can_host`: cores, memory, one device's
   memory; else ``cluster.instance_types`` fails, naming the application and its largest
   need).

Accuracy and SLO are not checked here: a query no variant can satisfy is a per-query
rejection with a reason (``rejected``), part of the results, not a broken configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from infaas_core.catalog import Catalog
from infaas_core.control.resources import can_host
from infaas_core.errors import ConfigError
from infaas_core.model import App, ClusterSpec, InstanceType, Variant

_LIST_AT_MOST = 8
PINNING_POLICIES = frozenset({"static", "clipper_plus", "sagemaker_plus"})
"""Policies that serve each application with one pinned variant (infaas_core/policies/pinned.py);
any other policy config with a ``fixed_variants`` key counts as pinning too."""


def check_run(
    catalog: Catalog,
    cluster: ClusterSpec | None,
    apps: Sequence[App],
    policy: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`ConfigError` if this catalog, cluster, application mix and policy config
    (the ``policy`` group, or ``None``) cannot run; see the module docstring for the rules.

    ``cluster=None`` (a load generator that only sends queries) checks the names alone.
    """
    usable: tuple[InstanceType, ...] = ()
    if cluster is not None:
        usable = _check_cluster(cluster)
    pins = _pins(policy)
    for app in apps:
        needed, key = _needed(catalog, app, pins)
        if cluster is not None:
            _check_placeable(app, needed, key, usable)


def _check_cluster(cluster: ClusterSpec) -> tuple[InstanceType, ...]:
    """The instance types that may run a worker (``max_workers`` > 0)."""
    for t in cluster.instance_types:
        n, most = cluster.initial_count(t.name), cluster.max_count(t.name)
        if n > most:
            raise ConfigError(f"cluster.initial_workers.{t.name}", f"{n} exceeds max_workers {most}")
    usable = tuple(t for t in cluster.instance_types if cluster.max_count(t.name) > 0)
    if not usable:
        raise ConfigError(
            "cluster.max_workers",
            f"every instance type ({_listing(t.name for t in cluster.instance_types)}) has max_workers 0 "
            "and none starts in initial_workers: the cluster can never run a worker",
        )
    return usable


def _pins(policy: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``policy.fixed_variants`` of a policy that pins variants, else ``None``."""
    if policy is None or ("fixed_variants" not in policy and policy.get("name") not in PINNING_POLICIES):
        return None
    fixed = policy.get("fixed_variants")
    if fixed is None:
        return {}
    if not isinstance(fixed, Mapping):
        raise ConfigError("policy.fixed_variants", f"must map application -> variant, got {fixed!r}")
    return fixed


def _needed(catalog: Catalog, app: App, pins: Mapping[str, Any] | None) -> tuple[tuple[Variant, ...], str]:
    """The catalog rows ``app`` needs and the config key that asks for them (rules 2, 3)."""
    req = app.requirements
    form, target = req.form, req.target
    key = f"apps.{app.name}.{form}"
    if form == "task":
        rows = catalog.by_task(target)
        known = catalog.tasks
    elif form == "model":
        rows = catalog.by_model(target)
        known = catalog.models
    else:
        rows = (catalog.get(target),) if target in catalog else ()
        known = tuple(sorted(v.name for v in catalog))
    if not rows:
        raise ConfigError(key, f"no catalog row provides {form} '{target}'{_source(catalog)}; known: {_listing(known)}")
    if pins is None:
        return rows, key
    pin, pin_key = pins.get(app.name), f"policy.fixed_variants.{app.name}"
    if not pin:
        pin, pin_key = app.fixed_variant, f"apps.{app.name}.fixed_variant"
    if not pin:
        return rows, key  # a variant-form app is pinned to its own variant; others get one picked
    if not isinstance(pin, str) or pin not in catalog:
        names = (v.name for v in sorted(catalog, key=lambda v: v.name))
        raise ConfigError(pin_key, f"unknown variant {pin!r}{_source(catalog)}; known: {_listing(names)}")
    return (catalog.get(pin),), pin_key


def _check_placeable(app: App, needed: tuple[Variant, ...], key: str, usable: tuple[InstanceType, ...]) -> None:
    offered = sorted({h for t in usable for h in t.device_classes})
    on_offer = [v for v in needed if v.hardware in offered]
    what = needed[0].name if len(needed) == 1 else f"the {len(needed)} variants of {app.requirements.target}"
    if not on_offer:
        hardware = _listing(sorted({v.hardware for v in needed}))
        raise ConfigError(
            key,
            f"{what} runs only on {hardware}, which no instance type with max_workers > 0 offers "
            f"(the cluster offers {_listing(offered)})",
        )
    if not any(can_host(t, v) for v in on_offer for t in usable):
        small = min(on_offer, key=lambda v: (v.memory_mb, v.cores))
        need = f"{small.cores} cores and {small.memory_mb:.0f} MB" if small.is_cpu else f"{small.memory_mb:.0f} MB of one {small.hardware} device"
        raise ConfigError(
            "cluster.instance_types",
            f"no instance type with max_workers > 0 can hold one replica of any variant application "
            f"'{app.name}' needs ({what}; the smallest, {small.name}, needs {need})",
        )


def _source(catalog: Catalog) -> str:
    return f" in {catalog.source_path}" if catalog.source_path else ""


def _listing(names: Iterable[str]) -> str:
    """``a, b, c`` — at most a few names, then how many there are in all."""
    items = list(names)
    if not items:
        return "none"
    if len(items) <= _LIST_AT_MOST:
        return ", ".join(items)
    return f"{', '.join(items[:_LIST_AT_MOST])}, ... ({len(items)} in all)"
