"""The :class:`Trace` value: sorted arrival times with a name and a provenance string.

Scaling to a target rate (``scale_to_rate``) keeps the trace's duration and its shape:

- down (target below the current mean rate): keep exactly ``round(n * f)`` arrivals chosen
  uniformly at random without replacement (``f`` = target / current rate). Independent
  thinning of a point process keeps its rate shape and, for a renewal process, its
  burstiness at time scales above the mean gap;
- up: superpose ``floor(f)`` copies of the trace — the original plus ``floor(f) - 1``
  copies whose every arrival is moved by an independent uniform jitter in
  ``[-g, +g]`` (``g`` = the original mean inter-arrival gap, so bursts stay bursts) — and a
  thinned jittered copy holding the remaining ``round(n * f) - n * floor(f)`` arrivals.
  Jittered times are clipped to the trace window.

Both are deterministic for a seed (``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from infaas_core.errors import ConfigError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    """Arrival times in seconds from 0 (sorted, float64, read-only).

    ``end_s`` is the end of the observation window (a generated 60 s trace ends at 60 s
    even if its last arrival is at 59.98 s); ``None`` means "at the last arrival".
    ``source`` says how the trace was made (generator and parameters, or file and format).
    """

    arrivals_s: FloatArray
    name: str = "trace"
    source: str = ""
    end_s: float | None = None

    def __post_init__(self) -> None:
        a = np.ascontiguousarray(self.arrivals_s, dtype=np.float64)
        if a.ndim != 1:
            raise ValueError(
                f"trace {self.name}: arrivals_s must be one-dimensional, got shape {a.shape}"
            )
        if a.size:
            if not np.isfinite(a[0]) or not np.isfinite(a[-1]) or a[0] < 0:
                raise ValueError(f"trace {self.name}: arrivals must be finite and >= 0")
            if a.size > 1 and not bool(np.all(a[1:] >= a[:-1])):
                raise ValueError(f"trace {self.name}: arrivals_s must be sorted")
        if self.end_s is not None and a.size and self.end_s < a[-1]:
            raise ValueError(
                f"trace {self.name}: end_s {self.end_s} before the last arrival {a[-1]}"
            )
        if a is self.arrivals_s and a.flags.writeable:
            a = a.copy()
        a.flags.writeable = False
        object.__setattr__(self, "arrivals_s", a)

    def __len__(self) -> int:
        return int(self.arrivals_s.size)

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, arrivals={len(self)}, duration_s={self.duration_s:.3f}, "
            f"source={self.source!r})"
        )

    @property
    def duration_s(self) -> float:
        """Length of the observation window in seconds."""
        if self.end_s is not None:
            return float(self.end_s)
        return float(self.arrivals_s[-1]) if self.arrivals_s.size else 0.0

    def mean_rate_qps(self) -> float:
        """Arrivals per second over the window (0 for an empty or zero-length trace)."""
        d = self.duration_s
        return len(self) / d if d > 0 else 0.0

    def cv(self) -> float:
        """Coefficient of variation (std / mean) of the inter-arrival times; NaN below 2 gaps."""
        if self.arrivals_s.size < 3:
            return math.nan
        gaps = np.diff(self.arrivals_s)
        mean = float(gaps.mean())
        return float(gaps.std()) / mean if mean > 0 else math.nan

    def rate_per_second(self, bin_s: float = 1.0) -> FloatArray:
        """Arrival rate (queries per second) in consecutive bins of ``bin_s`` over the window."""
        if not bin_s > 0:
            raise ConfigError("bin_s", f"must be > 0, got {bin_s}")
        n_bins = max(1, math.ceil(self.duration_s / bin_s - 1e-9))
        idx = np.minimum((self.arrivals_s // bin_s).astype(np.int64), n_bins - 1)
        return np.bincount(idx, minlength=n_bins).astype(np.float64) / bin_s

    def cut(self, duration_s: float) -> Trace:
        """The arrivals before ``duration_s``; the window ends there (or earlier, if it did)."""
        if not duration_s > 0:
            raise ConfigError("duration_s", f"must be > 0, got {duration_s}")
        k = int(np.searchsorted(self.arrivals_s, duration_s, side="left"))
        end = min(float(duration_s), self.duration_s)
        return Trace(self.arrivals_s[:k], self.name, f"{self.source} | cut {duration_s}s", end)

    def scale_to_rate(self, rate_qps: float, seed: int = 0) -> Trace:
        """This trace thinned or replicated (see the module docstring) to a mean rate of ``rate_qps``."""
        if not rate_qps > 0 or not math.isfinite(rate_qps):
            raise ConfigError("rate_qps", f"must be a positive number, got {rate_qps}")
        n = len(self)
        d = self.duration_s
        if n == 0 or d <= 0:
            raise ConfigError("rate_qps", f"trace {self.name} has no arrivals to scale")
        target = round(rate_qps * d)
        rng = np.random.default_rng(seed)
        a = self.arrivals_s
        if target <= n:
            keep = np.sort(rng.choice(n, size=target, replace=False))
            out = a[keep]
        else:
            copies = target // n
            rest = target - copies * n
            gap = d / n
            parts = [a]
            for _ in range(copies - 1):
                parts.append(a + rng.uniform(-gap, gap, size=n))
            if rest:
                pick = np.sort(rng.choice(n, size=rest, replace=False))
                parts.append(a[pick] + rng.uniform(-gap, gap, size=rest))
            hi = np.nextafter(d, 0.0) if self.end_s is not None else d
            out = np.clip(np.concatenate(parts), 0.0, hi)
            out.sort(kind="stable")
        return Trace(
            out, self.name, f"{self.source} | scaled to {rate_qps} qps (seed {seed})", self.end_s
        )
