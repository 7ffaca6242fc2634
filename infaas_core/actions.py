"""What policies return; what backends carry out.

Per-query selection returns a :data:`Decision` (``Route``, ``LoadAndRoute`` or
``Reject``). The periodic parts (monitor, model autoscaler, VM autoscaler) return lists of
:data:`Action`. A backend applies actions in order and may refuse one that no longer fits
(e.g. not enough memory left); it never invents actions of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Route:
    """Send the query to an existing (ready or loading) instance."""

    instance_id: int


@dataclass(frozen=True, slots=True)
class LoadAndRoute:
    """Load ``variant`` on ``worker_id`` (one replica) and send the query there; it waits
    for the load to finish (the load latency counts against its SLO)."""

    variant: str
    worker_id: int


class RejectKind(StrEnum):
    """Why a query is refused; :mod:`infaas_core.control.outcomes` maps a kind to its results
    status and HTTP code (the one table both backends use)."""

    INFEASIBLE = "infeasible"
    """No variant can satisfy the requirements (results: ``rejected``; HTTP 422)."""
    NO_CAPACITY = "no_capacity"
    """A variant could, but nothing running has room and nothing can be loaded now
    (results: ``dropped``, a violation; HTTP 503)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """The query is refused at once with ``reason``. ``kind`` says whether no variant can ever
    satisfy it or there is no capacity now; ``suggestion`` names the nearest feasible
    requirement of an infeasible query (paper Algorithm 1, ``suggestVariant``)."""

    reason: str
    suggestion: str | None = None
    kind: RejectKind = RejectKind.INFEASIBLE


Decision = Route | LoadAndRoute | Reject


@dataclass(frozen=True, slots=True)
class LoadVariant:
    """Add ``replicas`` replicas of ``variant`` on ``worker_id`` (creating the instance
    if the variant is not there yet)."""

    variant: str
    worker_id: int
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class UnloadVariant:
    """Remove ``replicas`` replicas of an instance; at zero replicas the instance unloads
    (after its queue drains)."""

    instance_id: int
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class AddWorker:
    """Start a worker of ``instance_type`` (it becomes usable after the type's start-up delay)."""

    instance_type: str


@dataclass(frozen=True, slots=True)
class RemoveWorker:
    """Stop a worker: it takes no new queries, finishes its queue, then stops costing."""

    worker_id: int


@dataclass(frozen=True, slots=True)
class SetFlags:
    """Monitor verdict for one instance (INFaaS's per-(worker, variant) blacklist bit,
    split into its two causes)."""

    instance_id: int
    overloaded: bool
    interfered: bool


@dataclass(frozen=True, slots=True)
class SetScaleDown:
    """Monitor verdict for one worker: models whose accelerator variants should give way to
    CPU variants for loose-SLO queries (INFaaS's per-parent "scaledown" flag)."""

    worker_id: int
    models: frozenset[str]


Action = LoadVariant | UnloadVariant | AddWorker | RemoveWorker | SetFlags | SetScaleDown
