"""Plain config mappings (Hydra's output after ``OmegaConf.to_container``) -> validated core types.

Every bad value raises :class:`~infaas_core.errors.ConfigError` naming the dotted key
(``cluster.instance_types.m5.large.vcpus``) and the reason; unknown keys are rejected so a
typo never passes silently.

- :func:`cluster_from_mapping` — the ``cluster`` group (DESIGN.md shape).
- :func:`apps_from_mapping` — the ``apps`` group: ``name: {task|model|variant, min_accuracy,
  latency_slo_ms, share, fixed_variant}``; ``share`` defaults to 1 and shares are normalised.
- :func:`resolve_path` — a relative path looked up in the current directory, then a base
  directory, then the repository root.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infaas_core.errors import ConfigError
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the parent of the ``infaas_core`` package directory."""

_CLUSTER_KEYS = (
    "instance_types",
    "initial_workers",
    "max_workers",
    "price_list_date",
    "region",
    "name",
)
_TYPE_KEYS = (
    "price_usd_per_hour",
    "vcpus",
    "memory_gb",
    "accelerators",
    "accelerator_memory_gb",
    "startup_s",
)
_APP_KEYS = ("task", "model", "variant", "min_accuracy", "latency_slo_ms", "share", "fixed_variant")


def resolve_path(
    p: str | Path, base_dir: Path | None = None, *, key: str = "path", must_exist: bool = True
) -> Path:
    """``p`` if absolute; else the first existing of cwd/p, base_dir/p, repo-root/p.

    With ``must_exist=False`` a path found nowhere resolves against the current directory;
    otherwise it raises ``ConfigError(key, ...)`` listing where it looked.
    """
    path = Path(p).expanduser()
    if path.is_absolute():
        if must_exist and not path.exists():
            raise ConfigError(key, f"'{path}' does not exist")
        return path
    candidates = [Path.cwd() / path]
    if base_dir is not None:
        candidates.append(Path(base_dir) / path)
    candidates.append(REPO_ROOT / path)
    for c in candidates:
        if c.exists():
            return c.resolve()
    if not must_exist:
        return candidates[0]
    raise ConfigError(
        key, f"'{p}' not found; looked in: {', '.join(str(c.parent) for c in candidates)}"
    )


def _mapping(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
    return value


def _reject_unknown(key: str, d: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for k in d:
        if k not in known:
            raise ConfigError(f"{key}.{k}", f"unknown key; known: {', '.join(known)}")


def _num(
    key: str, value: Any, *, lo: float = 0.0, lo_open: bool = False, integer: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number, got {value!r}")
    if integer and not float(value).is_integer():
        raise ConfigError(key, f"must be an integer, got {value!r}")
    x = float(value)
    if not math.isfinite(x) or (x <= lo if lo_open else x < lo):
        raise ConfigError(key, f"must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    return x


def _counts(key: str, value: Any) -> tuple[tuple[str, int], ...]:
    if value is None:
        return ()
    d = _mapping(key, value)
    return tuple((str(k), int(_num(f"{key}.{k}", v, integer=True))) for k, v in d.items())


def instance_type_from_mapping(
    name: str, d: Any, key: str = "cluster.instance_types"
) -> InstanceType:
    """One instance type: ``{price_usd_per_hour, vcpus, memory_gb, accelerators, accelerator_memory_gb, startup_s}``."""
    k = f"{key}.{name}"
    m = _mapping(k, d)
    _reject_unknown(k, m, _TYPE_KEYS)
    for req in ("price_usd_per_hour", "vcpus", "memory_gb", "startup_s"):
        if req not in m:
            raise ConfigError(f"{k}.{req}", "missing")
    accel = _counts(f"{k}.accelerators", m.get("accelerators"))
    mem_raw = m.get("accelerator_memory_gb") or {}
    mem = tuple(
        (str(c), _num(f"{k}.accelerator_memory_gb.{c}", v, lo_open=True))
        for c, v in _mapping(f"{k}.accelerator_memory_gb", mem_raw).items()
    )
    for c, _ in mem:
        if c not in dict(accel):
            raise ConfigError(
                f"{k}.accelerator_memory_gb.{c}", "names a device class not in accelerators"
            )
    for c, n in accel:
        if c == "cpu":
            raise ConfigError(
                f"{k}.accelerators.cpu", "cpu is implied by vcpus; list accelerators only"
            )
        if n > 0 and c not in dict(mem):
            raise ConfigError(
                f"{k}.accelerator_memory_gb.{c}", "missing (memory of one device, GB)"
            )
    return InstanceType(
        name=str(name),
        price_usd_per_hour=_num(f"{k}.price_usd_per_hour", m["price_usd_per_hour"]),
        vcpus=int(_num(f"{k}.vcpus", m["vcpus"], lo=1, integer=True)),
        memory_gb=_num(f"{k}.memory_gb", m["memory_gb"], lo_open=True),
        startup_s=_num(f"{k}.startup_s", m["startup_s"]),
        accelerators=accel,
        accelerator_memory_gb=mem,
    )


def cluster_from_mapping(d: Mapping[str, Any], key: str = "cluster") -> ClusterSpec:
    """The ``cluster`` config group -> :class:`ClusterSpec`."""
    m = _mapping(key, d)
    _reject_unknown(key, m, _CLUSTER_KEYS)
    types_raw = _mapping(f"{key}.instance_types", m.get("instance_types"))
    if not types_raw:
        raise ConfigError(f"{key}.instance_types", "no instance type")
    types = tuple(
        instance_type_from_mapping(str(n), v, f"{key}.instance_types") for n, v in types_raw.items()
    )
    date = m.get("price_list_date", "")
    return ClusterSpec(
        instance_types=types,
        initial_workers=_counts(f"{key}.initial_workers", m.get("initial_workers")),
        max_workers=_counts(f"{key}.max_workers", m.get("max_workers")),
        price_list_date="" if date is None else str(date),
    )


def apps_from_mapping(d: Mapping[str, Any], key: str = "apps") -> tuple[App, ...]:
    """The ``apps`` config group -> applications with shares normalised to sum to 1."""
    m = _mapping(key, d)
    if not m:
        raise ConfigError(key, "no application")
    raw: list[tuple[str, Requirements, float, str | None]] = []
    for name, spec in m.items():
        k = f"{key}.{name}"
        s = _mapping(k, spec)
        _reject_unknown(k, s, _APP_KEYS)
        for text_key in ("task", "model", "variant", "fixed_variant"):
            if s.get(text_key) is not None and not isinstance(s[text_key], str):
                raise ConfigError(f"{k}.{text_key}", f"must be a string, got {s[text_key]!r}")
        min_acc = _num(f"{k}.min_accuracy", s.get("min_accuracy", 0.0))
        if min_acc > 1.0:
            raise ConfigError(f"{k}.min_accuracy", f"must be a fraction in [0, 1], got {min_acc}")
        slo = s.get("latency_slo_ms")
        slo_ms = math.inf if slo is None else _num(f"{k}.latency_slo_ms", slo, lo_open=True)
        share = _num(f"{k}.share", s.get("share", 1.0), lo_open=True)
        try:
            req = Requirements(
                task=s.get("task"),
                model=s.get("model"),
                variant=s.get("variant"),
                min_accuracy=min_acc,
                latency_slo_ms=slo_ms,
            )
        except ConfigError as e:
            raise ConfigError(k, e.reason) from None
        raw.append((str(name), req, share, s.get("fixed_variant")))
    total = sum(share for _, _, share, _ in raw)
    return tuple(
        App(name=n, requirements=r, share=share / total, fixed_variant=fv)
        for n, r, share, fv in raw
    )
