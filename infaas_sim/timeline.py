"""Per-period timeline of a run (``timeline.parquet``).

One row per period (``timeline_period_s``, default 1 s) starting at ``time_s``:

- counts over ``[time_s, time_s + period)``: ``arrivals``, ``rejected`` (by arrival time),
  ``completions`` and ``late`` (by finish time), ``dropped`` (by drop time) and
  ``violations = late + dropped``;
- a sample of the cluster taken at ``time_s``: ``workers_<type>`` (live workers of each
  instance type, starting ones included), ``replicas_<variant>`` (replicas of each
  variant ever loaded), and ``cost_usd`` (cumulative cost so far).

Rows past the trace (queries still draining) carry the last sample.

Memory is bounded in simulated time, not only in queries: a run longer than
``timeline_period_s x timeline_max_rows`` gets rows of the smallest whole multiple of
``timeline_period_s`` that keeps it within ``max_rows`` (:attr:`Timeline.period_s`; a normal
run is unchanged), and a sample keeps its cluster counts only when they differ from the
previous sample's (one float of cost per row otherwise), so a long idle stretch costs 8 bytes
of cost per row and nothing per count.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

import numpy as np

COUNT_COLUMNS = ("arrivals", "rejected", "completions", "late", "dropped")


def row_period_s(period_s: float, horizon_s: float, max_rows: int) -> float:
    """The row length: ``period_s``, or the smallest whole multiple of it that keeps a run of
    ``horizon_s`` within ``max_rows`` rows."""
    n = max(math.ceil(horizon_s / period_s), 1)
    return period_s * max(math.ceil(n / max_rows), 1)


class Timeline:
    def __init__(self, period_s: float, horizon_s: float, max_rows: int | None = None) -> None:
        self.period_s = period_s if max_rows is None else row_period_s(period_s, horizon_s, max_rows)
        n = max(math.ceil(horizon_s / self.period_s), 1)
        self.counts: dict[str, np.ndarray] = {c: np.zeros(n, dtype=np.int64) for c in COUNT_COLUMNS}
        self._rows = array("q")  # row of each sample
        self._cost = array("d")  # cost_usd of each sample
        self._changes: list[tuple[int, dict[str, float]]] = []  # (sample index, counts) where they changed

    @property
    def samples(self) -> list[tuple[float, dict[str, float]]]:
        """Every sample as ``(time_s, values)`` (rebuilt; for inspection and tests)."""
        out: list[tuple[float, dict[str, float]]] = []
        k = -1
        for i, (row, cost) in enumerate(zip(self._rows, self._cost, strict=True)):
            while k + 1 < len(self._changes) and self._changes[k + 1][0] <= i:
                k += 1
            vals = dict(self._changes[k][1]) if k >= 0 else {}
            out.append((row * self.period_s, {"cost_usd": cost, **vals}))
        return out

    def add(self, column: str, times_s: np.ndarray) -> None:
        if times_s.size == 0:
            return
        idx = (times_s / self.period_s).astype(np.int64)
        np.maximum(idx, 0, out=idx)
        col = self.counts[column]
        top = int(idx.max()) + 1
        if top > col.size:
            for c, arr in self.counts.items():
                self.counts[c] = np.concatenate([arr, np.zeros(top - arr.size, dtype=np.int64)])
            col = self.counts[column]
        col += np.bincount(idx, minlength=col.size)

    def sample(self, time_s: float, values: dict[str, float]) -> None:
        """The cluster at ``time_s``: ``cost_usd`` and counts (workers, replicas)."""
        counts = {k: v for k, v in values.items() if k != "cost_usd"}
        if not self._changes or self._changes[-1][1] != counts:
            self._changes.append((len(self._rows), counts))
        self._rows.append(round(time_s / self.period_s))
        self._cost.append(float(values.get("cost_usd", 0.0)))

    def to_dataframe(self) -> Any:
        import pandas as pd

        n = max(c.size for c in self.counts.values())
        data: dict[str, Any] = {"time_s": np.arange(n) * self.period_s}
        for c, arr in self.counts.items():
            data[c] = np.concatenate([arr, np.zeros(n - arr.size, dtype=np.int64)])
        data["violations"] = data["late"] + data["dropped"]
        keys: list[str] = ["cost_usd"] if self._rows else []
        for _, vals in self._changes:
            keys.extend(k for k in vals if k not in keys)
        keys.sort(key=lambda k: (k != "cost_usd", k))
        sampled = {k: np.zeros(n) for k in keys}
        rows = self._rows
        starts = [i for i, _ in self._changes]
        for j, (i, vals) in enumerate(self._changes):  # counts hold from a change to the next one
            lo = rows[i]
            hi = rows[starts[j + 1]] if j + 1 < len(starts) else n
            for k in keys:
                if k != "cost_usd":
                    sampled[k][lo:hi] = vals.get(k, 0.0)
        if rows:
            cost = sampled["cost_usd"]
            for i, row in enumerate(rows):
                end = rows[i + 1] if i + 1 < len(rows) else n
                cost[row:end] = self._cost[i]
        for k in keys:
            data[k] = sampled[k] if k == "cost_usd" else sampled[k].astype(np.int64)
        return pd.DataFrame(data)
