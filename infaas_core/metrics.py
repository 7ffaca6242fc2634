"""Per-query records -> the results schema (``summary.json``, ``queries.parquet``).

Both backends write the same schema (DESIGN.md "Results schema", stable):

- every arrived query ends in exactly one of rejected / dropped / completed; a completed
  query whose latency exceeds its SLO is also ``late``;
- ``admitted = queries - rejected``; ``violations = late + dropped``;
  ``violation_rate = violations / admitted``; ``throughput_qps = completed / duration_s``;
  ``goodput_qps = (completed - late) / duration_s``;
- latency statistics are over completed queries (late ones included); ``mean_accuracy``
  is the profile accuracy of the variant that served each completed query, averaged.

Records are columnar numpy arrays (:class:`QueryTable`). For runs too long to keep every
query, :class:`SummaryAccumulator` keeps counts, sums and a fixed-memory latency sketch
(:class:`LatencySketch`, relative error ``alpha``) — memory does not grow with queries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# status codes of queries.parquet's `status` column
COMPLETED, LATE, DROPPED, REJECTED = 0, 1, 2, 3
STATUS_NAMES: tuple[str, ...] = ("completed", "late", "dropped", "rejected")

SUMMARY_KEYS: tuple[str, ...] = (
    "policy", "trace", "seed", "backend", "duration_s",
    "queries", "rejected", "admitted", "completed", "late", "dropped", "violations", "violation_rate",
    "throughput_qps", "goodput_qps", "latency_ms", "mean_accuracy", "cost_usd", "cost_per_million_queries",
    "wall_s", "queries_per_wall_s",
)  # fmt: skip
WALL_CLOCK_KEYS: frozenset[str] = frozenset({"wall_s", "queries_per_wall_s"})
QUERY_COLUMNS: tuple[str, ...] = (
    "query_id", "app", "arrival_s", "start_s", "finish_s", "latency_ms", "status",
    "variant", "worker", "hardware", "accuracy", "batch_size",
)  # fmt: skip


class LatencySketch:
    """Fixed-memory latency quantile sketch: logarithmic buckets with relative error
    ``alpha`` (the DDSketch construction), over ``[min_ms, max_ms]``; values outside are
    clamped into the end buckets. Memory: ``log(max/min)/log(gamma)`` int64 counters."""

    def __init__(self, alpha: float = 0.005, min_ms: float = 1e-3, max_ms: float = 1e8) -> None:
        self.alpha = alpha
        self.gamma = (1.0 + alpha) / (1.0 - alpha)
        self._log_gamma = math.log(self.gamma)
        self.min_ms = min_ms
        self._offset = math.floor(math.log(min_ms) / self._log_gamma)
        n = math.ceil(math.log(max_ms) / self._log_gamma) - self._offset + 1
        self.counts = np.zeros(n, dtype=np.int64)

    def add(self, latency_ms: np.ndarray) -> None:
        x = np.maximum(np.asarray(latency_ms, dtype=np.float64), self.min_ms)
        idx = np.ceil(np.log(x) / self._log_gamma).astype(np.int64) - self._offset
        np.clip(idx, 0, self.counts.size - 1, out=idx)
        self.counts += np.bincount(idx, minlength=self.counts.size)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        total = self.count
        if total == 0:
            return math.nan
        rank = q * (total - 1)
        i = int(np.searchsorted(np.cumsum(self.counts), rank + 1))
        k = i + self._offset
        # midpoint (in the relative sense) of bucket (gamma^(k-1), gamma^k]
        return 2.0 * self.gamma**k / (self.gamma + 1.0)


@dataclass
class SummaryAccumulator:
    """Counts, sums and a latency sketch; fed chunk by chunk; memory independent of queries."""

    queries: int = 0
    rejected: int = 0
    completed: int = 0
    late: int = 0
    dropped: int = 0
    latency_sum_ms: float = 0.0
    accuracy_sum: float = 0.0
    sketch: LatencySketch = field(default_factory=LatencySketch)

    def add(self, status: np.ndarray, latency_ms: np.ndarray, accuracy: np.ndarray) -> None:
        """Add a chunk of finished queries (``latency_ms``/``accuracy`` may be NaN where n/a)."""
        status = np.asarray(status)
        self.queries += int(status.size)
        self.rejected += int(np.count_nonzero(status == REJECTED))
        self.dropped += int(np.count_nonzero(status == DROPPED))
        done = (status == COMPLETED) | (status == LATE)
        self.completed += int(np.count_nonzero(done))
        self.late += int(np.count_nonzero(status == LATE))
        if done.any():
            lat = np.asarray(latency_ms)[done]
            self.latency_sum_ms += float(lat.sum())
            self.accuracy_sum += float(np.asarray(accuracy)[done].sum())
            self.sketch.add(lat)


@dataclass
class QueryTable:
    """Columnar per-query records (one entry per arrived query)."""

    query_id: np.ndarray  # int64
    app: np.ndarray  # int32 index into app_names
    arrival_s: np.ndarray  # float64
    start_s: np.ndarray  # float64, NaN if never started
    finish_s: np.ndarray  # float64, NaN if not completed
    status: np.ndarray  # int8, one of COMPLETED/LATE/DROPPED/REJECTED
    variant: np.ndarray  # int32 index into variant_names, -1 if none
    worker: np.ndarray  # int32 worker id, -1 if none
    batch_size: np.ndarray  # int32, 0 if not served
    app_names: tuple[str, ...]
    variant_names: tuple[str, ...]
    variant_hardware: tuple[str, ...]
    variant_accuracy: np.ndarray  # float64 per variant index

    def __len__(self) -> int:
        return int(self.query_id.size)

    @property
    def latency_ms(self) -> np.ndarray:
        return (self.finish_s - self.arrival_s) * 1000.0

    @property
    def accuracy(self) -> np.ndarray:
        acc = np.full(self.variant.size, np.nan)
        ok = self.variant >= 0
        acc[ok] = self.variant_accuracy[self.variant[ok]]
        return acc

    def check_exactly_once(self) -> None:
        """Every query ends in exactly one status; fields agree with the status."""
        if not np.isin(self.status, (COMPLETED, LATE, DROPPED, REJECTED)).all():
            raise AssertionError("a query has no final status")
        if np.unique(self.query_id).size != self.query_id.size:
            raise AssertionError("a query id appears twice")
        done = (self.status == COMPLETED) | (self.status == LATE)
        if np.isnan(self.finish_s[done]).any() or (self.finish_s[done] < self.arrival_s[done]).any():
            raise AssertionError("a completed query has no valid finish time")
        if (~np.isnan(self.finish_s[~done])).any():
            raise AssertionError("a query that did not complete has a finish time")

    def accumulate(self) -> SummaryAccumulator:
        acc = SummaryAccumulator()
        acc.add(self.status, self.latency_ms, self.accuracy)
        return acc

    def to_dataframe(self) -> Any:
        import pandas as pd

        hw = np.array((*self.variant_hardware, ""), dtype=object)
        names = np.array((*self.variant_names, ""), dtype=object)
        vidx = np.where(self.variant >= 0, self.variant, len(self.variant_names))
        served = self.variant >= 0
        df = pd.DataFrame(
            {
                "query_id": self.query_id.astype(np.int64),
                "app": pd.Categorical.from_codes(self.app, categories=list(self.app_names)),  # type: ignore[call-overload]
                "arrival_s": self.arrival_s,
                "start_s": self.start_s,
                "finish_s": self.finish_s,
                "latency_ms": self.latency_ms,
                "status": pd.Categorical.from_codes(self.status.astype(np.int8), categories=list(STATUS_NAMES)),  # type: ignore[call-overload]
                "variant": pd.Series(names[vidx]).where(served, None),
                "worker": pd.array(np.where(self.worker >= 0, self.worker, 0), dtype="Int32"),
                "hardware": pd.Series(hw[vidx]).where(served, None),
                "accuracy": self.accuracy,
                "batch_size": pd.array(np.where(self.batch_size > 0, self.batch_size, 0), dtype="Int32"),
            }
        )
        df.loc[self.worker < 0, "worker"] = pd.NA
        df.loc[self.batch_size <= 0, "batch_size"] = pd.NA
        return df


def summarize(
    acc: SummaryAccumulator,
    *,
    policy: str,
    trace: str,
    seed: int,
    backend: str,
    duration_s: float,
    cost_usd: float,
    wall_s: float,
    exact_latency_ms: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` mapping. Quantiles are exact when ``exact_latency_ms`` (the
    completed queries' latencies) is given, else from the sketch (``latency_source`` says which)."""
    admitted = acc.queries - acc.rejected
    violations = acc.late + acc.dropped
    if exact_latency_ms is not None and exact_latency_ms.size:
        p50, p90, p99 = (float(x) for x in np.quantile(exact_latency_ms, [0.5, 0.9, 0.99]))
        source = "exact"
    else:
        p50, p90, p99 = (acc.sketch.quantile(q) for q in (0.5, 0.9, 0.99))
        source = f"sketch(alpha={acc.sketch.alpha})"
    mean = acc.latency_sum_ms / acc.completed if acc.completed else math.nan
    out: dict[str, Any] = {
        "policy": policy,
        "trace": trace,
        "seed": int(seed),
        "backend": backend,
        "duration_s": float(duration_s),
        "queries": acc.queries,
        "rejected": acc.rejected,
        "admitted": admitted,
        "completed": acc.completed,
        "late": acc.late,
        "dropped": acc.dropped,
        "violations": violations,
        "violation_rate": violations / admitted if admitted else 0.0,
        "throughput_qps": acc.completed / duration_s if duration_s > 0 else 0.0,
        "goodput_qps": (acc.completed - acc.late) / duration_s if duration_s > 0 else 0.0,
        "latency_ms": {"mean": mean, "p50": p50, "p90": p90, "p99": p99},
        "mean_accuracy": acc.accuracy_sum / acc.completed if acc.completed else math.nan,
        "cost_usd": float(cost_usd),
        "cost_per_million_queries": cost_usd / acc.completed * 1e6 if acc.completed else math.nan,
        "wall_s": float(wall_s),
        "queries_per_wall_s": acc.queries / wall_s if wall_s > 0 else math.nan,
        "latency_source": source,
    }
    if extra:
        out.update(extra)
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_results(
    run_dir: str | Path,
    summary: dict[str, Any],
    queries: QueryTable | None = None,
    timeline: Any | None = None,
) -> Path:
    """Write ``summary.json`` (NaN/inf as null), ``queries.parquet`` and ``timeline.parquet``."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2, sort_keys=False) + "\n")
    if queries is not None:
        queries.to_dataframe().to_parquet(d / "queries.parquet", index=False)
    if timeline is not None:
        timeline.to_parquet(d / "timeline.parquet", index=False)
    return d


def summary_without_wall_clock(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary minus wall-clock fields (what determinism checks compare)."""
    return {k: v for k, v in summary.items() if k not in WALL_CLOCK_KEYS}


# -- the paper's per-instance cost (§6.2) --------------------------------------------------


def instance_cost_rate_usd_per_s(variant: Any, instance_type: Any, replicas: int = 1) -> float:
    """The paper's cost of running ``replicas`` replicas of ``variant`` on a worker of
    ``instance_type``, in USD per second: the instance type's price times the share of its
    memory the replicas occupy (ATC'21 §6.2: "the cost for a running variant instance ...
    based on AWS EC2 pricing, proportional to its memory footprint"; INFAAS.md §4.1).

    The memory is the variant's device: host memory (``memory_gb``) for a CPU variant, the
    memory of all the type's devices of its class for an accelerator variant (a V100
    variant of 1.6 GB on a p3.2xlarge's one 16 GB V100 costs a tenth of its price). A worker
    holding nothing costs nothing under this metric (unlike ``cost_usd``, VM-hours)."""
    if variant.hardware == "cpu":
        total_mb = float(instance_type.memory_gb) * 1024.0
    else:
        total_mb = instance_type.accelerator_memory_mb(variant.hardware) * instance_type.accelerator_count(
            variant.hardware
        )
    if total_mb <= 0:
        return 0.0
    share = float(variant.memory_mb) * replicas / total_mb  # signed: a removal is a negative change
    return share * float(instance_type.price_usd_per_s)


class InstanceCostMeter:
    """Integrates :func:`instance_cost_rate_usd_per_s` over time, exactly: the backend calls
    :meth:`change` whenever the replicas held in memory change (a load starts, replicas are
    removed, an instance is gone), with the change of the summed rate. Time before
    ``since_s`` (a run's warm-up) is not counted."""

    __slots__ = ("_acc", "_rate", "_t", "since_s")

    def __init__(self, since_s: float = 0.0) -> None:
        self.since_s = since_s
        self._rate = 0.0
        self._t = 0.0
        self._acc = 0.0

    def _advance(self, now_s: float) -> None:
        lo = max(self._t, self.since_s)
        if now_s > lo:
            self._acc += self._rate * (now_s - lo)
        self._t = max(self._t, now_s)

    def change(self, now_s: float, delta_rate_usd_per_s: float) -> None:
        self._advance(now_s)
        self._rate = max(self._rate + delta_rate_usd_per_s, 0.0)

    def total_usd(self, until_s: float) -> float:
        """The cost accrued in ``[since_s, until_s]`` (``until_s`` >= the last change)."""
        lo = max(self._t, self.since_s)
        return self._acc + (self._rate * (until_s - lo) if until_s > lo else 0.0)
