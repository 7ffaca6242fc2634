"""Hydra composition for ``infaas-real serve | replay | validate`` and the builders that turn
the composed mapping into validated objects (the core never sees a ``DictConfig``).

The command lines take Hydra-style overrides; they are composed with the Hydra compose API
(:func:`infaas_edge.compose`) against the installed configs package (``serve.yaml``,
``replay.yaml``, ``validate.yaml`` compose the shared groups ``catalog``, ``policy``,
``cluster``, ``trace``, ``apps``). ``hydra.run.dir=<dir>`` is taken out of the overrides and
returned as the run directory. The YAML is the only source of defaults: every key a builder
reads is required.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from infaas_core.catalog import Catalog, load_catalog
from infaas_core.configs import apps_from_mapping, cluster_from_mapping, resolve_path
from infaas_core.errors import ConfigError
from infaas_core.model import App, ClusterSpec
from infaas_core.policies.base import Policy, PolicyContext, make_policy
from infaas_real.executor import ExecutorSettings, GuardSettings, RunnerSpec
from infaas_real.executor.instance import HeartbeatSettings
from infaas_real.registration.settings import build_registration_settings
from infaas_real.server.app import ServerSettings
from infaas_real.server.httplayer import AdmissionSettings
from infaas_real.server.offline import OfflineSettings
from infaas_real.server.state import StateSettings


@dataclass(frozen=True, slots=True)
class Composed:
    cfg: dict[str, Any]
    run_dir: Path | None


def compose(config_name: str, overrides: Sequence[str]) -> Composed:
    """Compose ``configs/<config_name>.yaml`` with ``overrides``; pull out ``hydra.run.dir``."""
    from infaas_edge import compose as edge_compose

    run_dir: Path | None = None
    rest: list[str] = []
    for o in overrides:
        if o.startswith("hydra.run.dir="):
            run_dir = Path(o.split("=", 1)[1])
        elif o.startswith("hydra."):
            continue  # other hydra.* settings have no meaning outside a Hydra app
        else:
            rest.append(o)
    return Composed(edge_compose(config_name, rest), run_dir)


def default_run_dir(kind: str) -> Path:
    return Path("outputs") / "real" / f"{kind}-{datetime.now():%Y%m%d-%H%M%S}"


def section(cfg: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = cfg.get(key)
    if not isinstance(v, Mapping):
        raise ConfigError(key, f"missing or not a mapping (got {v!r})")
    return dict(v)


def build_catalog(cfg: Mapping[str, Any]) -> Catalog:
    cat = section(cfg, "catalog")
    if "path" not in cat:
        raise ConfigError("catalog.path", "missing")
    return load_catalog(resolve_path(cat["path"], key="catalog.path"))


def build_cluster(cfg: Mapping[str, Any]) -> ClusterSpec:
    return cluster_from_mapping(section(cfg, "cluster"))


def build_apps(cfg: Mapping[str, Any]) -> tuple[App, ...]:
    return apps_from_mapping(section(cfg, "apps"))


def build_policy(cfg: Mapping[str, Any], catalog: Catalog, cluster: ClusterSpec, apps: tuple[App, ...]) -> Policy:
    params = section(cfg, "policy")
    name = params.get("name")
    if not isinstance(name, str):
        raise ConfigError("policy.name", "missing")
    return make_policy(name, PolicyContext(catalog, cluster, apps), params=params)


def _present(d: Mapping[str, Any], key: str, prefix: str) -> Any:
    if key not in d:
        raise ConfigError(f"{prefix}.{key}", "missing key")
    return d[key]


def _str(d: Mapping[str, Any], key: str, prefix: str) -> str:
    v = _present(d, key, prefix)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{prefix}.{key}", f"must be a non-empty string, got {v!r}")
    return v


def _int(d: Mapping[str, Any], key: str, prefix: str, lo: int = 0) -> int:
    v = _present(d, key, prefix)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{prefix}.{key}", f"must be an integer >= {lo}, got {v!r}")
    return v


def _float(d: Mapping[str, Any], key: str, prefix: str, lo: float = 0.0) -> float:
    v = _present(d, key, prefix)
    if isinstance(v, bool) or not isinstance(v, int | float) or v < lo:
        raise ConfigError(f"{prefix}.{key}", f"must be a number >= {lo}, got {v!r}")
    return float(v)


def build_server_settings(cfg: Mapping[str, Any]) -> tuple[ServerSettings, StateSettings, ExecutorSettings]:
    s = section(cfg, "server")
    server = ServerSettings(
        host=_str(s, "host", "server"),
        port=_int(s, "port", "server"),
        max_request_bytes=_int(s, "max_request_bytes", "server", 1),
        request_timeout_s=_float(s, "request_timeout_s", "server"),
        max_connections=_int(s, "max_connections", "server", 1),
        max_connections_per_client=_int(s, "max_connections_per_client", "server", 1),
        header_timeout_s=_positive(s, "header_timeout_s", "server"),
        keep_alive_timeout_s=_positive(s, "keep_alive_timeout_s", "server"),
        body_timeout_s=_positive(s, "body_timeout_s", "server"),
        shutdown_drain_s=_float(s, "shutdown_drain_s", "server"),
        shutdown_timeout_s=_float(s, "shutdown_timeout_s", "server"),
        final_metrics_path=_optional_path(_present(s, "final_metrics_path", "server")),
        max_inflight_requests=_int(s, "max_inflight_requests", "server", 1),
        grpc_port=_optional_port(_present(s, "grpc_port", "server")),
        admission=_admission(section(s, "admission"), _int(s, "max_inflight_requests", "server", 1)),
        offline=build_offline_settings(cfg),
        registration=build_registration_settings(cfg),
    )
    budget = _present(s, "core_budget", "server")
    state = StateSettings(
        core_budget=(os.cpu_count() or 1) if budget is None else _int(s, "core_budget", "server", 1),
        stats_window_s=_float(s, "stats_window_s", "server"),
        startup_scale=_float(s, "startup_scale", "server"),
    )
    e = section(cfg, "executor")
    cache = _present(e, "cache_dir", "executor")
    executor = ExecutorSettings(
        runner=RunnerSpec(
            factory=_str(e, "runner_factory", "executor"),
            cache_dir=str(resolve_path(cache, key="executor.cache_dir", must_exist=False)) if cache else None,
            device=_str(e, "device", "executor"),
            cpus=_cpus(_present(e, "cpus", "executor"), "executor.cpus"),
        ),
        max_queue=_int(s, "max_queue_per_instance", "server", 1),
        max_restarts=_int(e, "max_restarts", "executor"),
        guard=GuardSettings(
            max_rows_in_flight=_int(e, "max_rows_in_flight", "executor", 1),
            shed_by_deadline=_bool(e, "shed_by_deadline", "executor"),
            service_estimate_alpha=_fraction(e, "service_estimate_alpha", "executor"),
            service_estimate_answers=_int(e, "service_estimate_answers", "executor", 1),
            batch_timeout_factor=_float(e, "batch_timeout_factor", "executor", 1.0),
            batch_timeout_margin_ms=_float(e, "batch_timeout_margin_ms", "executor"),
            start_timeout_s=_float(e, "start_timeout_s", "executor"),
            supervise_period_s=_positive(e, "supervise_period_s", "executor"),
        ),
        heartbeat=HeartbeatSettings(
            period_s=_positive(e, "heartbeat_period_s", "executor"),
            timeout_s=_positive(e, "heartbeat_timeout_s", "executor"),
        ),
    )
    return server, state, executor


def build_offline_settings(cfg: Mapping[str, Any]) -> OfflineSettings:
    """The ``offline:`` block (the shared rule) and the server's ``offline_*`` keys."""
    from infaas_core.policies.offline import offline_config_from_mapping

    s = section(cfg, "server")
    ratio = _float(s, "offline_image_resize_ratio", "server", 1.0)
    return OfflineSettings(
        rule=offline_config_from_mapping(section(cfg, "offline")),
        max_jobs=_int(s, "offline_max_jobs", "server", 1),
        max_input_bytes=_int(s, "offline_max_input_bytes", "server", 1),
        image_resize_ratio=ratio,
        max_request_bytes=_int(s, "offline_max_request_bytes", "server", 1),
    )


def _admission(a: Mapping[str, Any], max_inflight: int) -> AdmissionSettings:
    p = "server.admission"
    lo = _int(a, "min_inflight", p, 1)
    if lo > max_inflight:
        raise ConfigError(f"{p}.min_inflight", f"must be <= server.max_inflight_requests ({max_inflight}), got {lo}")
    return AdmissionSettings(
        adaptive=_bool(a, "adaptive", p),
        target_latency_ms=_positive(a, "target_latency_ms", p),
        interval_s=_positive(a, "interval_s", p),
        min_inflight=lo,
        max_inflight=max_inflight,
        increase=_positive(a, "increase", p),
        decrease=_fraction(a, "decrease", p),
    )


def _optional_port(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError("server.grpc_port", f"must be a port number in 0..65535 or null, got {value!r}")
    return value


def _optional_path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError("server.final_metrics_path", f"must be a file path or null, got {value!r}")
    return value


def _bool(d: Mapping[str, Any], key: str, prefix: str) -> bool:
    v = _present(d, key, prefix)
    if not isinstance(v, bool):
        raise ConfigError(f"{prefix}.{key}", f"must be true or false, got {v!r}")
    return v


def _fraction(d: Mapping[str, Any], key: str, prefix: str) -> float:
    v = _float(d, key, prefix)
    if not 0.0 < v <= 1.0:
        raise ConfigError(f"{prefix}.{key}", f"must be in (0, 1], got {v!r}")
    return v


def _positive(d: Mapping[str, Any], key: str, prefix: str) -> float:
    v = _float(d, key, prefix)
    if v <= 0.0:
        raise ConfigError(f"{prefix}.{key}", f"must be > 0, got {v!r}")
    return v


def _cpus(value: Any, key: str) -> tuple[int, ...]:
    """A list of core ids this machine has (``null`` or ``[]``: no pinning)."""
    if not value:
        return ()
    have = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    if not isinstance(value, list | tuple) or not all(isinstance(c, int) and c in have for c in value):
        raise ConfigError(key, f"must be a list of this machine's core ids {sorted(have)}, got {value!r}")
    return tuple(value)


def server_cpus(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    return _cpus(_present(section(cfg, "server"), "cpus", "server"), "server.cpus")
