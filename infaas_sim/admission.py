"""The real server's admission, in simulated time (``sim.admission``; off by default).

The server's executor (:mod:`infaas_real.executor.instance`, docs/overload-and-supervision.md)
bounds every instance's queue twice; with ``sim.admission`` the simulator applies the same two
rules to the queries the policy routed (``infaas-real validate`` sets them from the server
configuration it validates, so both backends apply the same caps):

- **queue cap** (``max_queue``, the server's ``server.max_queue_per_instance``): a query that
  finds ``max_queue`` queries already waiting at its instance is refused at once (the
  server's 429 "queue full"; reason ``queue_full``). Waiting means not yet taken by a
  replica: the executor hands queries to a serving replica's pipe up to
  ``max_rows_in_flight`` rows before its worker starts them, so of the queries not started
  in the simulator, those that fit in the serving replicas' room
  (``max(max_rows_in_flight, max_batch)`` rows each, less what they serve) are not waiting;
  while no replica serves (a worker slot starting) every query waits;
- **deadline shedding** (``shed_by_deadline``, the server's ``executor.shed_by_deadline``),
  for queries with a finite SLO arriving once the instance has had a ready replica:

  - at admission, the estimated finish (:func:`estimate_finish_ms`: the rows ahead, queued
    and in service, times the time per row of a busy replica, shared by the serving
    replicas, plus the query's own service; 0 with nothing ahead; with no replica serving,
    the rest of the newest replica's start plus its service) past the SLO refuses it at
    once (429; ``deadline_admission``);
  - when a replica takes it, a query that can no longer finish in time even if it started
    then (:func:`late`: waited + own service > SLO) is failed instead of served
    (503; ``deadline_queue``). The executor checks when it hands the query to a replica's
    pipe (and every supervision period while it waits); the simulator checks at its batch's
    start, and only for a query that had to wait at its arrival (one handed over at once
    was checked then, with nothing waited, and passes).

  The time per row is :class:`RowEstimate`: busy time over rows answered over the last
  ``service_estimate_answers`` batches, at least the newest batch's, starting at the
  variant's batch-1 latency — the executor's estimate, except that the simulator counts a
  batch when it starts (its service time is known then) where the server counts it when its
  answer arrives, and a batch's busy time is its service time (the server's "busy time
  between answers" also holds the pipe round trip).

With the front-end stage (``sim.frontend``) a query's SLO counts from its arrival at the
server, as the executor's (``spent_ms``: the front end's share is spent before admission).

Refused and failed queries are dropped (a violation), recorded with the instance's variant
and worker, and counted by reason in ``summary.json``'s ``shed`` (the server's per-instance
``shed`` counters at ``/v2/infaas/state``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infaas_core.errors import ConfigError

QUEUE_FULL = "queue_full"
DEADLINE_ADMISSION = "deadline_admission"
DEADLINE_QUEUE = "deadline_queue"
SHED_REASONS = (QUEUE_FULL, DEADLINE_ADMISSION, DEADLINE_QUEUE)


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """``sim.admission`` (configs/sim/default.yaml)."""

    max_queue: int | None
    """Queries waiting per instance; the next one is refused at once. ``None``: no cap."""
    shed_by_deadline: bool
    """Refuse / fail queries that cannot finish within their SLO (the executor's rule)."""
    service_estimate_answers: int
    """Batches over which a busy replica's time per row is measured."""
    max_rows_in_flight: int
    """Rows one serving replica holds at once (the executor's ``max_rows_in_flight``: its
    pipe takes queries before the worker starts them); the queries within it are not waiting
    for the cap, and are not checked for expiry. 0: one batch (waiting = not started)."""

    @property
    def enabled(self) -> bool:
        return self.max_queue is not None or self.shed_by_deadline

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> AdmissionSettings:
        known = {"max_queue", "shed_by_deadline", "service_estimate_answers", "max_rows_in_flight"}
        extra = set(m) - known
        if extra:
            raise ConfigError(f"sim.admission.{sorted(extra)[0]}", f"unknown key (known: {', '.join(sorted(known))})")
        missing = known - set(m)
        if missing:
            raise ConfigError(f"sim.admission.{sorted(missing)[0]}", "missing")
        cap = m["max_queue"]
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ConfigError("sim.admission.max_queue", f"must be an integer >= 1 or null, got {cap!r}")
        shed = m["shed_by_deadline"]
        if not isinstance(shed, bool):
            raise ConfigError("sim.admission.shed_by_deadline", f"must be true or false, got {shed!r}")
        n = m["service_estimate_answers"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError("sim.admission.service_estimate_answers", f"must be an integer >= 1, got {n!r}")
        depth = m["max_rows_in_flight"]
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ConfigError("sim.admission.max_rows_in_flight", f"must be an integer >= 0, got {depth!r}")
        return cls(cap, shed, n, depth)


def own_ms(profiled_ms: float, rows: int, row_ms: float) -> float:
    """A query's own service once it starts: its rows at the observed time per row, at least
    the profiled latency (``Instance._own_ms``)."""
    return max(profiled_ms, rows * row_ms)


def estimate_finish_ms(ahead_rows: int, serving: int, row_ms: float, own: float, start_left_ms: float) -> float:
    """Milliseconds until a new query would be answered (``Instance.estimate_finish_ms``):
    0 with nothing ahead; with no replica serving, the rest of the newest start-up
    (``start_left_ms``, ``inf`` when none is starting) plus its own service; else the rows
    ahead at ``row_ms`` shared by the serving replicas, plus its own service."""
    if serving == 0:
        return start_left_ms + own if math.isfinite(start_left_ms) else math.inf
    if ahead_rows == 0:
        return 0.0
    return ahead_rows * row_ms / serving + own


def late(waited_ms: float, own: float, slo_ms: float) -> bool:
    """A waiting query can no longer finish within its SLO even if it started now
    (``Instance._late``)."""
    return waited_ms + own > slo_ms


class RowEstimate:
    """A busy replica's time per row: busy ms over rows over the last ``n`` batches, at least
    the newest batch's (the executor's ``_row_ms``); the variant's batch-1 latency before any."""

    __slots__ = ("busy_ms", "ms", "rows", "window")

    def __init__(self, batch1_ms: float, n: int) -> None:
        self.ms = batch1_ms
        self.window: deque[tuple[float, int]] = deque(maxlen=n)
        self.busy_ms = 0.0
        self.rows = 0

    def add(self, busy_ms: float, rows: int) -> None:
        w = self.window
        if len(w) == w.maxlen:
            old_ms, old_rows = w[0]
            self.busy_ms -= old_ms
            self.rows -= old_rows
        w.append((busy_ms, rows))
        self.busy_ms += busy_ms
        self.rows += rows
        self.ms = max(self.busy_ms / self.rows, busy_ms / rows)
