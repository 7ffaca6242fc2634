"""Per-period timeline of a run (``timeline.parquet``).

One row per ``timeline_period_s`` (default 1 s) starting at ``time_s``:

- counts over ``[time_s, time_s + period)``: ``arrivals``, ``rejected`` (by arrival time),
  ``completions`` and ``late`` (by finish time), ``dropped`` (by drop time) and
  ``violations = late + dropped``;
- a sample of the cluster taken at ``time_s``: ``workers_<type>`` (live workers of each
  instance type, starting ones included), ``replicas_<variant>`` (replicas of each
  variant ever loaded), and ``cost_usd`` (cumulative cost so far).

Rows past the trace (queries still draining) carry the last sample. Memory is one counter
per row, independent of the number of queries.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

COUNT_COLUMNS = ("arrivals", "rejected", "completions", "late", "dropped")


class Timeline:
    def __init__(self, period_s: float, horizon_s: float) -> None:
        self.period_s = period_s
        n = max(math.ceil(horizon_s / period_s), 1)
        self.counts: dict[str, np.ndarray] = {c: np.zeros(n, dtype=np.int64) for c in COUNT_COLUMNS}
        self.samples: list[tuple[float, dict[str, float]]] = []

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
        self.samples.append((time_s, values))

    def to_dataframe(self) -> Any:
        import pandas as pd

        n = max(c.size for c in self.counts.values())
        data: dict[str, Any] = {"time_s": np.arange(n) * self.period_s}
        for c, arr in self.counts.items():
            data[c] = np.concatenate([arr, np.zeros(n - arr.size, dtype=np.int64)])
        data["violations"] = data["late"] + data["dropped"]
        keys: list[str] = []
        for _, vals in self.samples:
            keys.extend(k for k in vals if k not in keys)
        keys.sort(key=lambda k: (k != "cost_usd", k))
        sampled = {k: np.zeros(n) for k in keys}
        rows = [(round(t / self.period_s), v) for t, v in self.samples]
        for i, (row, vals) in enumerate(rows):
            end = rows[i + 1][0] if i + 1 < len(rows) else n
            for k in keys:
                sampled[k][row:end] = vals.get(k, 0.0)
        for k in keys:
            data[k] = sampled[k] if k == "cost_usd" else sampled[k].astype(np.int64)
        return pd.DataFrame(data)
