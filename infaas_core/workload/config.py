"""Build a :class:`Trace` from a config mapping (what Hydra gives after ``OmegaConf.to_container``).

Two shapes::

    {kind: <generator kind>, rate_qps: 2000, duration_s: 120, <generator params>...}
    {path: <file or dir>, format: auto, rate_qps: null, duration_s: null, <loader options>...}

``name`` names the trace; keys starting with ``_`` (Hydra's ``_target_`` and friends) are
ignored. A relative ``path`` is looked up in the current directory, then ``base_dir``, then
the repository root (see :func:`infaas_core.configs.resolve_path`). ``seed`` comes from the
caller (the run's seed), unless the mapping sets its own ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from infaas_core.errors import ConfigError
from infaas_core.workload.generators import check_size, generate
from infaas_core.workload.loaders import load_trace
from infaas_core.workload.trace import Trace


def trace_from_config(cfg: Mapping[str, Any], seed: int, base_dir: Path | None = None, *,
                      max_arrivals: float | None = None, limit_key: str = "max_arrivals") -> Trace:
    """The trace a ``trace`` config group entry describes. With ``max_arrivals``, a trace
    expected to hold more arrivals than that is a ``ConfigError`` naming ``limit_key``,
    raised before any arrival is drawn (:func:`~infaas_core.workload.generators.check_size`)."""
    from infaas_core.configs import resolve_path

    if not isinstance(cfg, Mapping):
        raise ConfigError("trace", f"must be a mapping, got {type(cfg).__name__}")
    params = {k: v for k, v in cfg.items() if not str(k).startswith("_")}
    name = params.pop("name", None)
    if name is not None and not isinstance(name, str):
        raise ConfigError("trace.name", f"must be a string, got {name!r}")
    seed = params.pop("seed", seed)
    has_kind, has_path = "kind" in params, "path" in params
    if has_kind == has_path:
        raise ConfigError(
            "trace", "give exactly one of 'kind' (a generator) or 'path' (a trace file)"
        )
    if has_kind:
        kind = params.pop("kind")
        if not isinstance(kind, str):
            raise ConfigError("trace.kind", f"must be a string, got {kind!r}")
        rate = params.pop("rate_qps", None)
        duration = params.pop("duration_s", None)
        if max_arrivals is not None:
            check_size(kind, rate, duration, params, max_arrivals, limit_key)
        trace = generate(kind, rate_qps=rate, duration_s=duration, seed=seed, **params)
    else:
        raw = params.pop("path")
        if not isinstance(raw, str | Path):
            raise ConfigError("trace.path", f"must be a path, got {raw!r}")
        path = resolve_path(raw, base_dir, key="trace.path")
        fmt = params.pop("format", "auto")
        options = {k: v for k, v in params.items() if v is not None}
        trace = load_trace(path, format=fmt, seed=seed, max_arrivals=max_arrivals, limit_key=limit_key, **options)
    return replace(trace, name=name) if name else trace
