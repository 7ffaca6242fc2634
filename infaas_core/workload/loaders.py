"""Trace files -> :class:`Trace`. Every parse error is an ``InputError`` with file:line, column, reason.

Formats (``format=``; ``auto`` detects from the header / first line):

- ``azure_functions_2019``: ``HashOwner,HashApp,HashFunction,Trigger,1,...,N`` — invocations
  per minute of each function. Default: the sum over all rows; ``function=<HashFunction>``
  and/or ``app=<HashApp>`` select rows. Arrivals inside a minute are spread by ``spread=``
  ``poisson`` (uniform order statistics: a Poisson process conditioned on the count; the
  default), ``uniform`` (evenly spaced, the half-gap from each edge) or ``gamma`` (gamma
  gaps of coefficient of variation ``cv``, normalised to fill the minute).
- ``azure_llm_2023``: ``TIMESTAMP,ContextTokens,GeneratedTokens`` with timestamps like
  ``2023-11-16 18:15:46.6805900`` (any number of fractional digits, kept to the nanosecond);
  arrivals relative to the earliest timestamp.
- ``rate_shape``: one rate (queries/s) per line for consecutive steps of ``step_s`` seconds
  (default 1.0), drawn as a non-homogeneous Poisson process (the INFless shapes).
- ``proteus``: per-request lines ``arrival_ms,qos_level,deadline_ms`` without a header.
- ``arrivals_csv``: a header ``arrival_s`` then one arrival time (seconds) per line.

Lines starting with ``#`` are comments in ``rate_shape`` and ``arrivals_csv`` files. Every
time must be a finite number >= 0 (``nan``, ``inf`` or a negative time is an ``InputError``
naming its line); times need not be in order (a trace is the set of its arrival times, sorted
on loading); a file with a header and no arrival is an ``InputError``. Options
common to all formats: ``duration_s`` (cut), then ``rate_qps`` (scale, see
:meth:`Trace.scale_to_rate`), and ``seed`` (for spreading, drawing and scaling; default 0).
A directory ``path`` loads every file in it (sorted by name) in the given format and
superposes them (e.g. Proteus's per-model-family Twitter files).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.errors import ConfigError, InputError
from infaas_core.profile_io import parse_float_cell, read_text_file
from infaas_core.workload.generators import generate
from infaas_core.workload.trace import FloatArray, Trace

FORMATS: tuple[str, ...] = (
    "azure_functions_2019",
    "azure_llm_2023",
    "rate_shape",
    "proteus",
    "arrivals_csv",
)
_AF_FIXED = ("HashOwner", "HashApp", "HashFunction", "Trigger")
_SPREADS = ("poisson", "uniform", "gamma")
_TS = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?$")
_FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    "azure_functions_2019": ("function", "app", "spread", "cv"),
    "azure_llm_2023": (),
    "rate_shape": ("step_s",),
    "proteus": (),
    "arrivals_csv": (),
}
_COMMON_OPTIONS = ("rate_qps", "duration_s", "seed")


def load_trace(
    path: str | Path,
    format: str = "auto",
    *,
    max_arrivals: float | None = None,
    limit_key: str = "max_arrivals",
    **options: Any,
) -> Trace:
    """Read a trace file (or a directory of them) into a :class:`Trace`.

    A cut (``duration_s``) that leaves no arrival is a ``ConfigError``. With
    ``max_arrivals``, scaling (``rate_qps``) to more arrivals than that is a ``ConfigError``
    naming ``limit_key``, raised before anything is drawn (the file itself is read whole)."""
    p = Path(path)
    if format != "auto" and format not in FORMATS:
        raise ConfigError(
            "trace.format", f"unknown trace format '{format}'; known: auto, {', '.join(FORMATS)}"
        )
    seed = options.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("trace.seed", f"must be an integer, got {seed!r}")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise InputError(str(p), None, None, "directory holds no trace file")
        parts = [_load_one(f, format, options, seed + i) for i, f in enumerate(files)]
        arr = np.sort(np.concatenate([t.arrivals_s for t in parts]), kind="stable")
        end = max(t.duration_s for t in parts)
        trace = Trace(
            arr, p.name, f"{p} ({len(files)} files, {parts[0].source.rsplit(':', 1)[-1]})", end
        )
    else:
        trace = _load_one(p, format, options, seed)
    duration = options.get("duration_s")
    if duration is not None:
        whole = trace
        trace = trace.cut(_opt_positive("duration_s", duration))
        if len(whole) and not len(trace):
            raise ConfigError(
                "trace.duration_s",
                f"{p}: no arrival in the first {duration} s (the first is at {whole.arrivals_s[0]} s)",
            )
    rate = options.get("rate_qps")
    if rate is not None:
        rate = _opt_positive("rate_qps", rate)
        target = round(rate * trace.duration_s) if math.isfinite(rate * trace.duration_s) else math.inf
        if max_arrivals is not None and target > max_arrivals:
            raise ConfigError(
                limit_key,
                f"{p} scaled to rate_qps {rate:g} over its {trace.duration_s:g} s makes {float(target):.3g} "
                f"arrivals, above the limit of {max_arrivals:.3g}; lower trace.rate_qps or raise {limit_key}",
            )
        trace = trace.scale_to_rate(rate, seed=seed)
    return trace


def _opt_positive(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"trace.{key}", f"must be a positive number, got {value!r}")
    return float(value)


def _load_one(p: Path, format: str, options: Mapping[str, Any], seed: int) -> Trace:
    lines = read_text_file(p).splitlines()
    fmt = detect_format(str(p), lines) if format == "auto" else format
    for key in options:
        if key not in _COMMON_OPTIONS and key not in _FORMAT_OPTIONS[fmt]:
            known = ", ".join(_COMMON_OPTIONS + _FORMAT_OPTIONS[fmt])
            raise ConfigError(f"trace.{key}", f"unknown option for format '{fmt}'; known: {known}")
    arr, end = _READERS[fmt](str(p), lines, options, seed)
    arr.flags.writeable = False
    return Trace(arr, p.stem, f"{p}:{fmt}", end)


def _first_content(lines: list[str]) -> tuple[int, str]:
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            return i, s
    return 0, ""


def detect_format(path: str, lines: list[str]) -> str:
    """The format of a trace file from its first non-comment line."""
    line_no, first = _first_content(lines)
    if not first:
        raise InputError(path, 1, None, "empty trace file")
    head = [c.strip().lstrip("\ufeff") for c in first.split(",")]
    if tuple(head[:3]) == _AF_FIXED[:3]:
        return "azure_functions_2019"
    if head[0].upper() == "TIMESTAMP":
        return "azure_llm_2023"
    if head[0] == "arrival_s":
        return "arrivals_csv"
    if all(_is_number(c) for c in head):
        if len(head) == 1:
            return "rate_shape"
        return "proteus"
    raise InputError(
        path, line_no, None,
        f"cannot detect the trace format from '{first[:60]}'; pass format= one of {', '.join(FORMATS)}",
    )  # fmt: skip


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _float_cell(path: str, line: int, col: str, raw: str, *, lo: float = 0.0) -> float:
    x = parse_float_cell(path, line, col, raw)
    if x < lo:
        raise InputError(path, line, col, f"must be >= {lo}, got {x}")
    return x


def _int_cell(path: str, line: int, col: str, raw: str) -> int:
    s = raw.strip()
    try:
        v = int(s)
    except ValueError:
        reason = "empty cell" if not s else f"not an integer: '{raw}'"
        raise InputError(path, line, col, reason) from None
    if v < 0:
        raise InputError(path, line, col, f"must be >= 0, got {v}")
    return v


# -- readers: (path, lines, options, seed) -> (sorted arrivals, window end or None) ----------

Reader = Callable[[str, list[str], Mapping[str, Any], int], tuple[FloatArray, float | None]]


def _read_arrivals_csv(
    path: str, lines: list[str], options: Mapping[str, Any], seed: int
) -> tuple[FloatArray, float | None]:
    header_seen = False
    values: list[float] = []
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if not header_seen:
            if s != "arrival_s":
                raise InputError(path, i, None, f"expected the header 'arrival_s', got '{s[:40]}'")
            header_seen = True
            continue
        if "," in s:
            raise InputError(path, i, "arrival_s", f"expected one column, got {s.count(',') + 1}")
        values.append(_float_cell(path, i, "arrival_s", s))
    if not header_seen:
        raise InputError(path, 1, None, "empty trace file")
    if not values:
        raise InputError(path, _first_content(lines)[0], None, "no arrivals after the header 'arrival_s'")
    arr = np.array(values, dtype=np.float64)
    arr.sort(kind="stable")
    return arr, None


def _read_proteus(
    path: str, lines: list[str], options: Mapping[str, Any], seed: int
) -> tuple[FloatArray, float | None]:
    cols = ("arrival_ms", "qos_level", "deadline_ms")
    values: list[float] = []
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            continue
        cells = s.split(",")
        if len(cells) > len(cols):
            raise InputError(
                path,
                i,
                None,
                f"expected at most {len(cols)} cells (arrival_ms,qos_level,deadline_ms), got {len(cells)}",
            )
        values.append(_float_cell(path, i, "arrival_ms", cells[0]))
        if len(cells) > 1:
            _int_cell(path, i, "qos_level", cells[1])
        if len(cells) > 2:
            _float_cell(path, i, "deadline_ms", cells[2])
    arr = np.array(values, dtype=np.float64) / 1000.0
    arr.sort(kind="stable")
    return arr, None


def _read_rate_shape(
    path: str, lines: list[str], options: Mapping[str, Any], seed: int
) -> tuple[FloatArray, float | None]:
    step = options.get("step_s", 1.0)
    rates: list[float] = []
    for i, line in enumerate(lines, start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "," in s:
            raise InputError(path, i, "rate_qps", f"expected one rate per line, got '{s[:40]}'")
        rates.append(_float_cell(path, i, "rate_qps", s))
    if not rates:
        raise InputError(path, 1, None, "empty trace file")
    t = generate(
        "rate_shape", rate_qps=None, duration_s=None, seed=seed, rates_qps=rates, step_s=step
    )
    return np.array(t.arrivals_s), t.duration_s


def _read_azure_llm(
    path: str, lines: list[str], options: Mapping[str, Any], seed: int
) -> tuple[FloatArray, float | None]:
    rows = csv.reader(lines)
    header_line, _ = _first_content(lines)
    header: list[str] | None = None
    stamps: list[int] = []
    idx: dict[str, int] = {}
    for i, cells in enumerate(rows, start=1):
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if header is None:
            if i < header_line:
                continue
            header = [c.strip().lstrip("\ufeff") for c in cells]
            idx = {name: k for k, name in enumerate(header)}
            if "TIMESTAMP" not in idx:
                raise InputError(path, i, "TIMESTAMP", "missing column")
            continue
        if len(cells) != len(header):
            raise InputError(path, i, None, f"expected {len(header)} cells, got {len(cells)}")
        stamps.append(_timestamp_ns(path, i, cells[idx["TIMESTAMP"]]))
        for col in ("ContextTokens", "GeneratedTokens"):
            if col in idx:
                _int_cell(path, i, col, cells[idx[col]])
    if not stamps:
        raise InputError(path, header_line or 1, None, "no rows after the header")
    ns = np.array(stamps, dtype=np.int64)
    ns -= ns.min()
    arr = ns.astype(np.float64) / 1e9
    arr.sort(kind="stable")
    return arr, None


def _timestamp_ns(path: str, line: int, raw: str) -> int:
    """Nanoseconds since the epoch (naive timestamps read as UTC); exact for >6 fractional digits."""
    m = _TS.match(raw.strip())
    if m is None:
        raise InputError(
            path, line, "TIMESTAMP", f"not a timestamp 'YYYY-MM-DD HH:MM:SS[.fff...]': '{raw}'"
        )
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or ""
    try:
        whole = dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC)
    except ValueError as e:
        raise InputError(path, line, "TIMESTAMP", f"invalid date/time '{raw}': {e}") from None
    frac_ns = int((frac + "000000000")[:9]) if frac else 0
    return int(whole.timestamp()) * 1_000_000_000 + frac_ns


def _read_azure_functions(
    path: str, lines: list[str], options: Mapping[str, Any], seed: int
) -> tuple[FloatArray, float | None]:
    function, app = options.get("function"), options.get("app")
    spread = options.get("spread", "poisson")
    if spread not in _SPREADS:
        raise ConfigError(
            "trace.spread", f"unknown spread '{spread}'; known: {', '.join(_SPREADS)}"
        )
    rows = csv.reader(lines)
    header = next(rows, None)
    if header is None:
        raise InputError(path, 1, None, "empty trace file")
    header = [c.strip().lstrip("\ufeff") for c in header]
    for k, name in enumerate(_AF_FIXED):
        if k >= len(header) or header[k] != name:
            raise InputError(
                path, 1, name, f"missing column (expected {','.join(_AF_FIXED)},1,2,...)"
            )
    minutes = header[len(_AF_FIXED) :]
    if not minutes:
        raise InputError(path, 1, None, "no per-minute columns")
    for k, name in enumerate(minutes, start=1):
        if name != str(k):
            raise InputError(path, 1, name, f"expected minute column '{k}'")
    total = np.zeros(len(minutes), dtype=np.int64)
    matched = 0
    for i, cells in enumerate(rows, start=2):
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if len(cells) != len(header):
            raise InputError(path, i, None, f"expected {len(header)} cells, got {len(cells)}")
        if function is not None and cells[2].strip() != function:
            continue
        if app is not None and cells[1].strip() != app:
            continue
        matched += 1
        total += _minute_counts(path, i, cells[len(_AF_FIXED) :], minutes)
    if matched == 0:
        what = ", ".join(
            f"{k}={v}" for k, v in (("function", function), ("app", app)) if v is not None
        )
        raise ConfigError(
            "trace.function" if function is not None else "trace.app",
            f"no row matches {what or 'anything'} in {path}",
        )
    cv = options.get("cv", 1.0)
    if "cv" in options and spread != "gamma":
        raise ConfigError("trace.cv", "only used with spread=gamma")
    if isinstance(cv, bool) or not isinstance(cv, int | float) or not cv > 0:
        raise ConfigError("trace.cv", f"must be a positive number, got {cv!r}")
    return spread_counts(total, 60.0, spread, np.random.default_rng(seed), float(cv)), len(
        minutes
    ) * 60.0


def _minute_counts(path: str, line: int, cells: list[str], names: list[str]) -> np.ndarray:
    try:
        counts = np.array(cells, dtype=np.int64)
    except ValueError:
        counts = None
    if counts is None or (counts < 0).any():
        for raw, name in zip(cells, names, strict=True):
            _int_cell(path, line, name, raw)
        raise AssertionError("unreachable: a bad cell was not located")  # pragma: no cover
    return counts


def spread_counts(
    counts: np.ndarray, step_s: float, spread: str, rng: np.random.Generator, cv: float = 1.0
) -> FloatArray:
    """Arrival times for ``counts[k]`` arrivals in each step ``[k*step_s, (k+1)*step_s)``."""
    n = int(counts.sum())
    starts = np.repeat(np.arange(counts.size, dtype=np.float64) * step_s, counts)
    if spread == "poisson":
        out = starts + rng.uniform(0.0, step_s, n)
        out.sort()
        return out
    first = np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.arange(n) - first  # index of each arrival inside its step
    if spread == "uniform":
        return starts + (pos + 0.5) * (step_s / np.repeat(counts, counts))
    # gamma: c + 1 gaps per non-empty step; arrival j sits at (g_1 + ... + g_j) / (g_1 + ... + g_{c+1})
    nz = counts > 0
    c = counts[nz]
    gaps = rng.gamma(1.0 / cv**2, 1.0, int(c.sum() + c.size))
    csum = np.cumsum(gaps)
    gstart = np.cumsum(c + 1) - (c + 1)  # first gap of each step
    base = np.where(gstart > 0, csum[np.maximum(gstart - 1, 0)], 0.0)
    span = csum[gstart + c] - base
    arr_idx = np.repeat(gstart, c) + (np.arange(n) - np.repeat(np.cumsum(c) - c, c))
    frac = (csum[arr_idx] - np.repeat(base, c)) / np.repeat(span, c)
    out = starts + np.minimum(frac, np.nextafter(1.0, 0.0)) * step_s
    out.sort()
    return out


_READERS: dict[str, Reader] = {
    "azure_functions_2019": _read_azure_functions,
    "azure_llm_2023": _read_azure_llm,
    "rate_shape": _read_rate_shape,
    "proteus": _read_proteus,
    "arrivals_csv": _read_arrivals_csv,
}
