"""Helpers shared by the policies that pin a fixed variant per application
(``static``, ``clipper_plus``, ``sagemaker_plus``): which variant an app is pinned to,
and where to place replicas of it at start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infaas_core.actions import LoadVariant
from infaas_core.control.resources import Free, room_of
from infaas_core.errors import ConfigError
from infaas_core.model import Requirements, Variant
from infaas_core.policies.base import PolicyContext
from infaas_core.view import ClusterView, WorkerState


def pinned_variants(ctx: PolicyContext, params: Mapping[str, Any]) -> dict[str, Variant]:
    """App name -> its pinned variant.

    Taken, in order, from ``policy.fixed_variants[<app>]``, the app's own ``variant``
    requirement, or — for a task/model app — the most accurate variant meeting the app's
    accuracy whose batch-1 latency fits its SLO (the choice a careful user would make),
    on hardware the initial workers offer when one qualifies there.
    """
    fixed: Mapping[str, str] = params.get("fixed_variants") or {}
    out: dict[str, Variant] = {}
    for app in ctx.apps:
        name = fixed.get(app.name) or app.fixed_variant or app.requirements.variant
        if name:
            if name not in ctx.catalog:
                raise ConfigError(f"policy.fixed_variants.{app.name}", f"unknown variant '{name}'")
            out[app.name] = ctx.catalog.get(name)
            continue
        out[app.name] = _default_pin(ctx, app.requirements, app.name)
    return out


def _default_pin(ctx: PolicyContext, req: Requirements, app: str) -> Variant:
    cands = ctx.catalog.by_task(req.task) if req.task else ctx.catalog.by_model(req.model or "")
    spec = ctx.cluster
    hw_ok = {h for t in spec.instance_types if spec.max_count(t.name) > 0 for h in t.device_classes}
    # Prefer hardware the initial workers offer: a pinned baseline loads its replicas at t=0.
    hw_start = {h for t in spec.instance_types if spec.initial_count(t.name) > 0 for h in t.device_classes}
    fits = [
        v
        for v in cands
        if v.accuracy >= req.min_accuracy and v.batch1_latency_ms <= req.latency_slo_ms and v.hardware in hw_ok
    ]
    if not fits:
        raise ConfigError(f"policy.fixed_variants.{app}", f"no variant meets {req} on this cluster; pin one")
    fits = [v for v in fits if v.hardware in hw_start] or fits
    # the choice a careful user would make: the most accurate, then the fastest
    best_acc = max(v.accuracy for v in fits)
    top = [v for v in fits if v.accuracy == best_acc]
    return min(top, key=lambda v: (v.batch1_latency_ms, v.name))


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
