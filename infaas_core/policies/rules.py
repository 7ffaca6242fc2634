"""Small scaling rules the autoscaling policies compose (STYLE habit 14).

Each rule is written once here and called by every policy that applies it, the way Ray
Serve's ``autoscaling_policy.py`` composes "apply delay" and "apply bounds":

- :class:`Sustained` — act only after a condition held for N consecutive evaluations or
  for a duration (INFaaS's scale-down delays; the VM autoscaler's scale-in count);
- :class:`Cooldown` — at most one action per period (the VM autoscaler's back-off, the
  SageMaker-like scale-out cooldown);
- :func:`over_capacity`, :func:`one_fewer_carries`, :func:`replicas_to_add`,
  :func:`replicas_needed` — the replica arithmetic of INFaaS's ``checkModvar`` with its
  slack (``slack * demand`` against ``replicas * T1``);
- :func:`apply_bounds` — clip a replica target to a floor and a cap.

The rules hold no policy state of their own beyond what one counter or one timer needs;
a policy keeps one object per thing it scales (an instance, a variant, the cluster).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class Sustained:
    """A condition that must hold on consecutive evaluations before a policy acts on it.

    :meth:`observe` records one evaluation and answers whether the condition is now due:
    it has held for ``evaluations`` consecutive evaluations, or since at least
    ``duration_s`` ago (whichever is given; with both, whichever comes first). An
    evaluation where it does not hold starts the count again; so does :meth:`reset`, which
    a policy calls once it has acted.

    Used by the INFaaS model autoscaler (scale down after ``scale_down.requests[family]``
    consecutive requests, code ``autoscaler.cc``; or after the variant's load latency,
    paper §4.2.2), the INFaaS VM autoscaler (scale in after ``sustained_evaluations`` low
    evaluations, code ``master_vm_daemon.cc``) and ``sagemaker_plus`` (scale in after
    ``scale_in_evaluations[family]`` low evaluations).
    """

    evaluations: int | None = None
    duration_s: float | None = None
    count: int = 0
    since_s: float | None = None

    def __post_init__(self) -> None:
        assert self.evaluations is not None or self.duration_s is not None, "give evaluations or duration_s"

    def observe(self, holds: bool, now_s: float) -> bool:
        """Record one evaluation at ``now_s``; ``True`` when the condition is due."""
        if holds:
            self.count += 1
            if self.since_s is None:
                self.since_s = now_s
        else:
            self.reset()
        return self.due(now_s)

    def due(self, now_s: float) -> bool:
        if self.evaluations is not None and self.count >= self.evaluations:
            return True
        return self.duration_s is not None and self.since_s is not None and now_s - self.since_s >= self.duration_s

    def reset(self) -> None:
        self.count = 0
        self.since_s = None


@dataclass(slots=True)
class Cooldown:
    """At most one action per ``period_s``: :meth:`ready` until :meth:`mark` is called, then
    again once ``period_s`` has passed since the mark.

    Used by the INFaaS VM autoscaler (``backoff_s`` after any worker added or removed;
    code ``master_vm_daemon.cc``, a 15-iteration back-off) and ``sagemaker_plus``
    (``scale_out_cooldown_s`` between scale-outs of one variant; AWS target tracking's
    scale-out cooldown).
    """

    period_s: float
    last_s: float | None = None

    def ready(self, now_s: float) -> bool:
        return self.last_s is None or now_s - self.last_s >= self.period_s

    def mark(self, now_s: float) -> None:
        self.last_s = now_s


def over_capacity(demand_qps: float, replicas: int, per_replica_qps: float, slack: float) -> bool:
    """``slack * demand > replicas * T1``: the replicas do not carry the demand with slack.

    Used by the INFaaS model autoscaler (an instance "needs more", code ``checkModvar``,
    paper §5's slack 1.05) and ``sagemaker_plus`` (load per replica above its target).
    """
    return slack * demand_qps > replicas * per_replica_qps


def one_fewer_carries(demand_qps: float, replicas: int, per_replica_qps: float, slack: float) -> bool:
    """``slack * demand <= (replicas - 1) * T1``: one replica fewer would still do.

    Used by the INFaaS model autoscaler (a scale-down request, code ``checkModvar``) and
    ``sagemaker_plus`` (a low evaluation).
    """
    return slack * demand_qps <= (replicas - 1) * per_replica_qps


def replicas_to_add(demand_qps: float, replicas: int, per_replica_qps: float, slack: float) -> int:
    """``ceil((slack * demand - replicas * T1) / T1)``, at least 0: the replicas to add so
    that the demand, with slack, is carried.

    Used by the INFaaS model autoscaler (replicate, code ``checkModvar``) and
    ``sagemaker_plus`` (add capacity in proportion to the excess, AWS target tracking).
    """
    return max(0, math.ceil((slack * demand_qps - replicas * per_replica_qps) / per_replica_qps))


def replicas_needed(demand_qps: float, per_replica_qps: float, slack: float) -> int:
    """``ceil(slack * demand / T1)``: replicas that carry the demand with slack on their own.

    Used by the INFaaS model autoscaler (how many replicas an upgrade target needs).
    """
    return math.ceil(slack * demand_qps / per_replica_qps)


def apply_bounds(target: int, lo: int = 0, hi: int | None = None) -> int:
    """``target`` clipped to ``[lo, hi]`` (no cap when ``hi`` is ``None``; the floor wins
    when ``lo > hi``).

    Used by the INFaaS model autoscaler (never past ``max_replicas[family]``) and
    ``sagemaker_plus`` (never below ``min_replicas``). Ray Serve's "apply bounds".
    """
    if hi is not None:
        target = min(target, hi)
    return max(target, lo)
