"""Synthetic arrival processes, generated in fixed-size vectorised blocks.

Kinds (``rate_qps`` is the long-run mean rate unless said otherwise):

- ``poisson``: exponential inter-arrival times.
- ``gamma``: a renewal process with gamma inter-arrival times of coefficient of variation
  ``cv`` (shape ``1/cv**2``); ``cv > 1`` is burstier than Poisson, ``cv = 1`` is Poisson.
- ``diurnal``: non-homogeneous Poisson with rate ``rate_qps * (1 + amplitude *
  sin(2*pi*(t + phase_s)/period_s))``, drawn by thinning a homogeneous process at the peak
  rate (Lewis & Shedler 1979).
- ``spike``: ``rate_qps`` is the *base* rate; for ``spike_len_s`` seconds starting at each
  spike start (every ``spike_every_s`` from ``first_spike_s``, or the list
  ``spike_starts_s``) the rate is ``spike_rate_qps`` (or ``spike_factor * rate_qps``).
- ``mmpp``: two-state Markov-modulated Poisson; the state alternates with exponential
  sojourns of mean ``mean_high_s`` / ``mean_low_s`` and starts in its stationary
  distribution. Rates: ``ratio`` = high / low with the mean held at ``rate_qps``, or
  ``rate_high_qps`` + ``rate_low_qps`` taken as given (then ``rate_qps`` must be ``None``).
- ``rate_shape``: any piecewise-constant rate ``rates_qps`` (one per ``step_s``),
  non-homogeneous Poisson; with ``rate_qps`` the shape is rescaled to that mean; with a
  ``duration_s`` longer than the shape the shape repeats.

Piecewise-constant rates are drawn exactly: a Poisson count per piece, then uniform order
statistics inside it. Every process is produced in blocks whose sizes depend only on the
parameters, so :func:`generate_chunks` with any ``chunk_size`` concatenates to exactly
:func:`generate`'s array for the same seed, and a 100-million-query trace never has to sit
in memory at once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from infaas_core.errors import ConfigError, UnknownNameError
from infaas_core.workload.trace import FloatArray, Trace

BLOCK = 1 << 16
"""Arrivals drawn per internal block (a bound on the expected count for Poisson pieces)."""

PARAMS: dict[str, tuple[str, ...]] = {
    "poisson": (),
    "gamma": ("cv",),
    "diurnal": ("period_s", "amplitude", "phase_s"),
    "spike": (
        "spike_rate_qps",
        "spike_factor",
        "spike_len_s",
        "spike_every_s",
        "first_spike_s",
        "spike_starts_s",
    ),
    "mmpp": ("ratio", "rate_high_qps", "rate_low_qps", "mean_high_s", "mean_low_s"),
    "rate_shape": ("rates_qps", "step_s"),
}
"""Parameters each kind accepts (besides rate_qps, duration_s, seed)."""

KINDS: tuple[str, ...] = tuple(PARAMS)


def expected_size(
    kind: str, rate_qps: float | None, duration_s: float | None, params: Mapping[str, Any]
) -> tuple[float, float]:
    """``(arrivals, pieces)`` a generator of ``kind`` is expected to produce, from its
    parameters alone and without drawing anything: the mean number of arrivals (for
    ``diurnal`` the candidates drawn at the peak rate, for ``mmpp`` with explicit rates the
    higher rate throughout) and the number of rate pieces it plans (spike intervals, MMPP
    sojourns, rate-shape steps; 1 for a renewal process). NaN where a parameter is missing
    or not a number: :func:`generate` then reports that parameter."""

    def num(v: Any, default: float = math.nan) -> float:
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float):
            return math.nan
        return float(v)

    d = num(duration_s)
    rate = num(rate_qps)
    if kind == "rate_shape":
        raw = params.get("rates_qps")
        step = num(params.get("step_s"), 1.0)
        if raw is None or isinstance(raw, str) or not isinstance(raw, Sequence | np.ndarray) or len(raw) == 0:
            return math.nan, math.nan
        rates = [num(r) for r in raw]
        mean = sum(rates) / len(rates)
        if duration_s is None:
            d = len(rates) * step
        per_s = rate if rate_qps is not None else mean
        return per_s * d, d / step if step > 0 else math.nan
    if kind == "diurnal":
        return rate * (1.0 + abs(num(params.get("amplitude"), 0.5))) * d, 1.0
    if kind == "spike":
        high = (num(params["spike_rate_qps"]) if "spike_rate_qps" in params
                else rate * num(params.get("spike_factor"), 1.0))  # fmt: skip
        every = num(params.get("spike_every_s"), 60.0)
        pieces = 2.0 * (len(params["spike_starts_s"]) if isinstance(params.get("spike_starts_s"), Sequence)
                        else d / every if every > 0 else math.nan) + 1.0  # fmt: skip
        return max(rate, high) * d, pieces
    if kind == "mmpp":
        m = num(params.get("mean_high_s"), 10.0) + num(params.get("mean_low_s"), 30.0)
        if rate_qps is None:
            rate = max(num(params.get("rate_high_qps")), num(params.get("rate_low_qps")))
        return rate * d, 2.0 * d / m if m > 0 else math.nan
    return rate * d, 1.0


def check_size(
    kind: str,
    rate_qps: float | None,
    duration_s: float | None,
    params: Mapping[str, Any],
    max_arrivals: float,
    limit_key: str,
) -> None:
    """A ``ConfigError`` naming ``limit_key`` when a generator of ``kind`` is expected to
    produce more than ``max_arrivals`` arrivals or plan more rate pieces than that (each
    costs memory before the first arrival is drawn); checked before anything is drawn."""
    n, pieces = expected_size(kind, rate_qps, duration_s, params)
    if n > max_arrivals:  # NaN compares false: a bad parameter is generate()'s to report
        raise ConfigError(
            limit_key,
            f"trace kind '{kind}' is expected to make {n:.3g} arrivals (rate_qps {_g(rate_qps)} over "
            f"duration_s {_g(duration_s)}), above the limit of {max_arrivals:.3g}; lower the rate or the "
            f"duration, or raise {limit_key} (e.g. {limit_key}={_raise_to(n)})",
        )
    if pieces > max_arrivals:
        raise ConfigError(
            limit_key,
            f"trace kind '{kind}' would plan {pieces:.3g} rate pieces over duration_s {_g(duration_s)}, "
            f"above the limit of {max_arrivals:.3g}; shorten the duration or lengthen the pieces",
        )


def _g(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) and not isinstance(x, bool) else repr(x)


def _raise_to(n: float) -> str:
    """A round number above ``n`` to suggest as a new limit."""
    return f"{10 ** math.ceil(math.log10(max(n, 1.0)) + 1e-12):.0e}".replace("e+", "e")


def generate(
    kind: str, *, rate_qps: float | None, duration_s: float | None, seed: int, **params: Any
) -> Trace:
    """A synthetic :class:`Trace` of ``kind`` (see the module docstring)."""
    blocks, end_s, source = _plan(kind, rate_qps, duration_s, seed, params)
    parts = list(blocks)
    arr = np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
    arr.flags.writeable = False
    return Trace(arr, name=kind, source=source, end_s=end_s)


def generate_chunks(
    kind: str,
    *,
    rate_qps: float | None,
    duration_s: float | None,
    seed: int,
    chunk_size: int = 1 << 20,
    **params: Any,
) -> Iterator[FloatArray]:
    """Arrival times of the same process as :func:`generate`, as float64 arrays of at most
    ``chunk_size`` arrivals, in order. Parameters are checked before the first chunk."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError("chunk_size", f"must be an integer >= 1, got {chunk_size!r}")
    blocks, _, _ = _plan(kind, rate_qps, duration_s, seed, params)
    return _rechunk(blocks, chunk_size)


def _rechunk(blocks: Iterator[FloatArray], chunk_size: int) -> Iterator[FloatArray]:
    pending: list[FloatArray] = []
    held = 0
    for b in blocks:
        while b.size:
            take = min(chunk_size - held, b.size)
            pending.append(b[:take])
            held += take
            b = b[take:]
            if held == chunk_size:
                yield np.concatenate(pending)
                pending, held = [], 0
    if held:
        yield np.concatenate(pending)


# -- parameter checking -------------------------------------------------------------------


def _number(
    key: str, value: Any, *, lo: float | None = None, lo_open: bool = False, hi: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"trace.{key}", f"must be a finite number, got {value!r}")
    x = float(value)
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise ConfigError(f"trace.{key}", f"must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and x > hi:
        raise ConfigError(f"trace.{key}", f"must be <= {hi}, got {value!r}")
    return x


def _positive(key: str, value: Any) -> float:
    return _number(key, value, lo=0.0, lo_open=True)


def _plan(
    kind: str,
    rate_qps: float | None,
    duration_s: float | None,
    seed: int,
    params: Mapping[str, Any],
) -> tuple[Iterator[FloatArray], float, str]:
    """Check everything, then return (block iterator, window end, provenance string)."""
    if kind not in PARAMS:
        raise UnknownNameError("trace kind", kind, KINDS)
    for key in params:
        if key not in PARAMS[kind]:
            known = ", ".join(PARAMS[kind]) or "none"
            raise ConfigError(
                f"trace.{key}", f"unknown parameter for kind '{kind}'; known: {known}"
            )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError("seed", f"must be an integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    shown = ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()) if k != "rates_qps")
    source = f"generate({kind}, rate_qps={rate_qps}, duration_s={duration_s}, seed={seed}{', ' if shown else ''}{shown})"
    if kind == "rate_shape":
        blocks, end = _rate_shape(rng, rate_qps, duration_s, params)
        return blocks, end, source
    if rate_qps is None:
        if kind != "mmpp":
            raise ConfigError("trace.rate_qps", f"required for kind '{kind}'")
    else:
        rate_qps = _positive("rate_qps", rate_qps)
    if duration_s is None:
        raise ConfigError("trace.duration_s", f"required for kind '{kind}'")
    d = _positive("duration_s", duration_s)
    if kind == "poisson":
        assert rate_qps is not None
        scale = 1.0 / rate_qps
        return _renewal(lambda n: rng.exponential(scale, n), d), d, source
    if kind == "gamma":
        assert rate_qps is not None
        cv = _positive("cv", params.get("cv", 1.0))
        shape, gscale = 1.0 / cv**2, cv**2 / rate_qps
        return _renewal(lambda n: rng.gamma(shape, gscale, n), d), d, source
    if kind == "diurnal":
        assert rate_qps is not None
        return _diurnal(rng, rate_qps, d, params), d, source
    if kind == "spike":
        assert rate_qps is not None
        return _piecewise(rng, *_spike_segments(rate_qps, d, params)), d, source
    return _piecewise(rng, *_mmpp_segments(rng, rate_qps, d, params)), d, source


# -- processes ----------------------------------------------------------------------------


def _renewal(draw_gaps: Callable[[int], FloatArray], duration_s: float) -> Iterator[FloatArray]:
    t = 0.0
    while True:
        times = t + np.cumsum(draw_gaps(BLOCK))
        if times[-1] >= duration_s:
            yield times[: int(np.searchsorted(times, duration_s, side="left"))]
            return
        t = float(times[-1])
        yield times


def _diurnal(
    rng: np.random.Generator, rate: float, d: float, params: Mapping[str, Any]
) -> Iterator[FloatArray]:
    period = _positive("period_s", params.get("period_s", d))
    amp = _number("amplitude", params.get("amplitude", 0.5), lo=0.0, hi=1.0)
    phase = _number("phase_s", params.get("phase_s", 0.0))
    peak = rate * (1.0 + amp)
    for cand in _renewal(lambda n: rng.exponential(1.0 / peak, n), d):
        lam = rate * (1.0 + amp * np.sin(2.0 * np.pi * (cand + phase) / period))
        yield cand[rng.uniform(0.0, peak, cand.size) < lam]


def _piecewise(
    rng: np.random.Generator, starts: FloatArray, ends: FloatArray, rates: FloatArray
) -> Iterator[FloatArray]:
    """Exact non-homogeneous Poisson for a piecewise-constant rate, in bounded groups."""
    lens = ends - starts
    expected = rates * lens
    pieces = np.maximum(1, np.ceil(expected / BLOCK)).astype(np.int64)
    # split long segments into pieces of expected count <= BLOCK
    seg = np.repeat(np.arange(starts.size), pieces)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    k = np.arange(seg.size) - first
    plen = lens[seg] / pieces[seg]
    pstart = starts[seg] + k * plen
    prate = rates[seg]
    group = (np.cumsum(prate * plen) // BLOCK).astype(np.int64)
    bounds = np.flatnonzero(np.diff(group)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, group.size], strict=True):
        counts = rng.poisson(prate[lo:hi] * plen[lo:hi])
        total = int(counts.sum())
        if total == 0:
            continue
        out = np.repeat(pstart[lo:hi], counts) + rng.uniform(0.0, 1.0, total) * np.repeat(
            plen[lo:hi], counts
        )
        out.sort()
        yield out


def _spike_segments(
    rate: float, d: float, params: Mapping[str, Any]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    has_rate, has_factor = "spike_rate_qps" in params, "spike_factor" in params
    if has_rate == has_factor:
        raise ConfigError(
            "trace.spike_rate_qps", "give exactly one of spike_rate_qps / spike_factor"
        )
    high = (
        _number("spike_rate_qps", params["spike_rate_qps"], lo=0.0)
        if has_rate
        else rate * _number("spike_factor", params["spike_factor"], lo=0.0)
    )
    length = _positive("spike_len_s", params.get("spike_len_s", 10.0))
    if "spike_starts_s" in params:
        if "spike_every_s" in params or "first_spike_s" in params:
            raise ConfigError(
                "trace.spike_starts_s", "give spike_starts_s or spike_every_s, not both"
            )
        raw = params["spike_starts_s"]
        if not isinstance(raw, Sequence) or isinstance(raw, str):
            raise ConfigError("trace.spike_starts_s", f"must be a list of times, got {raw!r}")
        starts = sorted(_number("spike_starts_s", s, lo=0.0) for s in raw)
    else:
        every = _positive("spike_every_s", params.get("spike_every_s", 60.0))
        first = _number("first_spike_s", params.get("first_spike_s", every), lo=0.0)
        starts = list(np.arange(first, d, every)) if first < d else []
    for a, b in itertools.pairwise(starts):
        if b < a + length:
            raise ConfigError(
                "trace.spike_len_s", f"spikes at {a} s and {b} s overlap (length {length} s)"
            )
    edges: list[tuple[float, float, float]] = []
    t = 0.0
    for s in starts:
        if s >= d:
            break
        if s > t:
            edges.append((t, s, rate))
        edges.append((s, min(s + length, d), high))
        t = min(s + length, d)
    if t < d:
        edges.append((t, d, rate))
    arr = np.array(edges, dtype=np.float64).reshape(-1, 3)
    return arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy()


def _mmpp_segments(
    rng: np.random.Generator, rate: float | None, d: float, params: Mapping[str, Any]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    m_hi = _positive("mean_high_s", params.get("mean_high_s", 10.0))
    m_lo = _positive("mean_low_s", params.get("mean_low_s", 30.0))
    explicit = "rate_high_qps" in params or "rate_low_qps" in params
    if explicit:
        if "ratio" in params:
            raise ConfigError("trace.ratio", "give ratio or rate_high_qps/rate_low_qps, not both")
        if rate is not None:
            raise ConfigError(
                "trace.rate_qps", "must be null when rate_high_qps/rate_low_qps are given"
            )
        r_hi = _number("rate_high_qps", params.get("rate_high_qps"), lo=0.0)
        r_lo = _number("rate_low_qps", params.get("rate_low_qps"), lo=0.0)
    else:
        if rate is None:
            raise ConfigError(
                "trace.rate_qps",
                "required for kind 'mmpp' unless rate_high_qps/rate_low_qps are given",
            )
        ratio = _number("ratio", params.get("ratio", 10.0), lo=1.0)
        r_lo = rate * (m_hi + m_lo) / (ratio * m_hi + m_lo)
        r_hi = ratio * r_lo
    high = bool(rng.uniform() < m_hi / (m_hi + m_lo))
    starts: list[float] = []
    rates: list[float] = []
    t = 0.0
    while t < d:
        # sojourns in blocks, alternating states
        soj = rng.exponential(1.0, 1024)
        for s in soj:
            starts.append(t)
            rates.append(r_hi if high else r_lo)
            t += float(s) * (m_hi if high else m_lo)
            high = not high
            if t >= d:
                break
    st = np.array(starts, dtype=np.float64)
    en = np.append(st[1:], d).astype(np.float64)
    return st, en, np.array(rates, dtype=np.float64)


def _rate_shape(
    rng: np.random.Generator,
    rate_qps: float | None,
    duration_s: float | None,
    params: Mapping[str, Any],
) -> tuple[Iterator[FloatArray], float]:
    raw = params.get("rates_qps")
    if raw is None or isinstance(raw, str) or not isinstance(raw, Sequence | np.ndarray):
        raise ConfigError("trace.rates_qps", f"must be a list of rates, got {raw!r}")
    rates = np.array([_number("rates_qps", r, lo=0.0) for r in raw], dtype=np.float64)
    if rates.size == 0:
        raise ConfigError("trace.rates_qps", "is empty")
    step = _positive("step_s", params.get("step_s", 1.0))
    if rate_qps is not None:
        target = _positive("rate_qps", rate_qps)
        mean = float(rates.mean())
        if mean <= 0:
            raise ConfigError("trace.rates_qps", "all rates are 0: cannot rescale to rate_qps")
        rates = rates * (target / mean)
    d = rates.size * step if duration_s is None else _positive("duration_s", duration_s)
    n_steps = math.ceil(d / step - 1e-9)
    idx = np.arange(n_steps)
    starts = (idx * step).astype(np.float64)
    ends = np.minimum(starts + step, d).astype(np.float64)
    return _piecewise(rng, starts, ends, rates[idx % rates.size]), d
