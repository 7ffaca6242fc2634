"""Where finished queries go: per-query arrays (``queries.parquet``), or — in streaming
mode — only counters, sums and a fixed-memory latency sketch, overall and per application.

Queries arrive here in bulk at each stats tick (the instances' flushed batches and the
rejections since the previous tick), never one by one.

Warm-up (``sim.warmup_s``, :attr:`Recorder.warmup_s`): a query that arrived before it is
simulated and kept in the per-query arrays (``queries.parquet`` still holds every query,
each with exactly one final status) but left out of the counters, sketches and so of every
summary metric. The timeline keeps everything.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from infaas_core.metrics import COMPLETED, DROPPED, LATE, REJECTED, QueryTable, SummaryAccumulator
from infaas_core.model import App, Variant
from infaas_sim.dataplane import KEY_BITS, KEY_MASK
from infaas_sim.frontend import count_from_client_arrival
from infaas_sim.timeline import Timeline

DROPPED_NO_VARIANT = -2
"""``variant`` of a query dropped before any instance took it (refused for lack of capacity)."""


class Recorder:
    def __init__(self, apps: Sequence[App], variants: Sequence[Variant], n_queries: int | None,
                 timeline: Timeline) -> None:
        self.app_names = tuple(a.name for a in apps)
        self.slo_ms = np.array([a.requirements.latency_slo_ms for a in apps], dtype=np.float64)
        self.variant_names = tuple(v.name for v in variants)
        self.variant_hardware = tuple(v.hardware for v in variants)
        self.variant_accuracy = np.array([v.accuracy for v in variants], dtype=np.float64)
        self.timeline = timeline
        self.warmup_s = 0.0
        """Arrivals before this are left out of the summary (set before the run starts)."""
        self.client_arrival_s: np.ndarray | None = None
        """With the front-end stage (set before the run starts): each query's arrival at the
        client, in arrival order; the recorded arrivals are those the policy saw, and
        :meth:`finalize` counts each query from its client's arrival instead."""
        self.total = SummaryAccumulator()
        self.per_app = [SummaryAccumulator() for _ in apps]
        self.arrived = 0
        self.last_finish_s = 0.0
        self.stream = n_queries is None
        n = 0 if n_queries is None else n_queries
        self.arrival_s = np.full(n, np.nan)
        self.app = np.zeros(n, dtype=np.int32)
        self.start_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.status = np.full(n, -1, dtype=np.int8)
        self.variant = np.full(n, -1, dtype=np.int32)
        self.worker = np.full(n, -1, dtype=np.int32)
        self.batch = np.zeros(n, dtype=np.int32)

    def arrivals(self, times_s: np.ndarray, keys: np.ndarray) -> None:
        self.arrived += int(times_s.size)
        self.timeline.add("arrivals", times_s)
        if not self.stream:
            ids = keys >> KEY_BITS
            self.arrival_s[ids] = times_s
            self.app[ids] = keys & KEY_MASK

    def record(self, arrival_s: np.ndarray, keys: np.ndarray, start_s: np.ndarray, finish_s: np.ndarray,
               batch: np.ndarray, variant: np.ndarray, worker: np.ndarray) -> None:
        """Finished queries: served (``batch > 0``), dropped (``batch == 0`` with a start
        time, the drop time; ``variant`` is ``DROPPED_NO_VARIANT`` for a query no instance
        took) or rejected (``variant == -1``, no start)."""
        if keys.size == 0:
            return
        app = (keys & KEY_MASK).astype(np.int64)
        latency_ms = (finish_s - arrival_s) * 1000.0
        status = np.full(keys.size, REJECTED, dtype=np.int8)
        served = batch > 0
        status[served] = np.where(latency_ms[served] > self.slo_ms[app[served]], LATE, COMPLETED)
        dropped = (~served) & (variant != -1)
        status[dropped] = DROPPED
        variant = np.where(variant >= 0, variant, -1).astype(np.int32)
        self.timeline.add("dropped", start_s[dropped])  # by drop time (not kept per query)
        if fin_max := (float(finish_s[served].max()) if served.any() else 0.0):
            self.last_finish_s = max(self.last_finish_s, fin_max)
        if not self.stream:
            # per-query arrays only; counters, sketches and the timeline are computed once
            # from them in finalize()
            ids = keys >> KEY_BITS
            self.start_s[ids] = np.where(served, start_s, np.nan)
            self.finish_s[ids] = np.where(served, finish_s, np.nan)
            self.status[ids] = status
            self.variant[ids] = variant
            self.worker[ids] = worker
            self.batch[ids] = batch
            return
        self._accumulate(app, status, latency_ms, variant, arrival_s, start_s, finish_s)

    def _accumulate(self, app: np.ndarray, status: np.ndarray, latency_ms: np.ndarray, variant: np.ndarray,
                    arrival_s: np.ndarray, start_s: np.ndarray, finish_s: np.ndarray) -> None:
        tl = self.timeline
        tl.add("rejected", arrival_s[status == REJECTED])
        served = (status == COMPLETED) | (status == LATE)
        tl.add("completions", finish_s[served])
        tl.add("late", finish_s[status == LATE])
        if self.warmup_s > 0:
            keep = arrival_s >= self.warmup_s
            app, status, latency_ms, variant = app[keep], status[keep], latency_ms[keep], variant[keep]
            served = served[keep]
        acc = np.full(status.size, np.nan)
        acc[served] = self.variant_accuracy[variant[served]]
        self.total.add(status, latency_ms, acc)
        # the applications present, ascending (as np.unique, which sorts every query)
        for a in np.flatnonzero(np.bincount(app)).tolist():
            m = app == a
            self.per_app[a].add(status[m], latency_ms[m], acc[m])

    def finalize(self) -> None:
        """Recorded mode: the counters, sketches and timeline counts, from the arrays."""
        if self.stream:
            return
        if (self.status < 0).any():
            raise AssertionError("a query has no final status")  # internal invariant
        if self.client_arrival_s is not None:
            count_from_client_arrival(self.arrival_s, self.finish_s, self.batch, self.app, self.status,
                                      self.slo_ms, self.client_arrival_s, COMPLETED, LATE)
        lat = (self.finish_s - self.arrival_s) * 1000.0
        self._accumulate(self.app.astype(np.int64), self.status, lat, self.variant, self.arrival_s,
                         self.start_s, self.finish_s)

    def counted(self) -> np.ndarray | None:
        """Recorded mode: which rows of :meth:`table` the summary counts (arrived at or after
        the warm-up); ``None`` in streaming mode."""
        return None if self.stream else self.arrival_s >= self.warmup_s

    def table(self) -> QueryTable | None:
        if self.stream:
            return None
        n = self.arrival_s.size
        return QueryTable(
            query_id=np.arange(n, dtype=np.int64),
            app=self.app,
            arrival_s=self.arrival_s,
            start_s=self.start_s,
            finish_s=self.finish_s,
            status=self.status,
            variant=self.variant,
            worker=self.worker,
            batch_size=self.batch,
            app_names=self.app_names,
            variant_names=self.variant_names,
            variant_hardware=self.variant_hardware,
            variant_accuracy=self.variant_accuracy,
        )
