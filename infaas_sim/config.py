"""Validated run settings, built once at the edge from a plain mapping (never a DictConfig).

:class:`SimSettings` is the ``sim`` config group (``configs/sim/default.yaml``); each field
documents its knob. The YAML is the only source of defaults: the fields have none and
:meth:`SimSettings.from_mapping` requires every key (programs and tests start from the composed
group, ``infaas_edge.compose_group("sim", "default")``). :class:`SimInputs` is everything
:func:`infaas_sim.run.simulate` needs: already-built core objects (catalog, cluster, apps), the
policy by name with its full composed params, and an arrival source.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.errors import ConfigError
from infaas_core.model import App, ClusterSpec
from infaas_core.policies.offline import OfflineConfig, offline_config_from_mapping
from infaas_sim.admission import AdmissionSettings
from infaas_sim.frontend import FrontendSettings
from infaas_sim.latency import latency_model
from infaas_sim.offline import OfflineJobs

PROGRESS_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True, slots=True)
class SimSettings:
    latency_model: str
    """Service-time model by name: ``profile`` | ``deterministic`` | ``exponential``."""
    drop_late: bool
    """Drop a query whose deadline (arrival + SLO) has passed before its batch starts."""
    batch_timeout_ms: float
    """A free replica with fewer than ``max_batch`` waiting waits up to this long (counted
    from the oldest waiting query's arrival) for more; 0 = take what is there."""
    stream: bool
    """Streaming mode: no ``queries.parquet``; latency quantiles from a fixed-memory sketch."""
    chunk_s: float
    """Arrivals are generated / consumed in chunks of this many simulated seconds."""
    timeline_period_s: float
    """Row length of ``timeline.parquet``."""
    progress: str
    """Progress bar over simulated time: ``auto`` (when stderr is a terminal) | ``on`` | ``off``."""
    route_period_s: float
    """Longest routing window: the data plane is advanced in bulk at least this often (and at
    every control event). It groups work only: a queue whose length a decision reads is
    brought to that query's arrival first, so decisions are exact at any window."""
    stats_period_s: float | None
    """Window of the observed instance stats and worker utilisation; ``None`` = the policy's
    monitor period, or 1 s when it has none."""
    accelerator_sharing: bool
    """Accelerator replicas on one worker share its devices' compute (cluster.py)."""
    warmup_s: float
    """Queries arriving before this simulated time are simulated but left out of the summary
    metrics (``queries.parquet`` keeps them); both costs are counted from it; 0 = none."""
    max_arrivals: float
    """Largest number of arrivals a trace may be expected to hold (a generator's rate x
    duration, a file's scaled count), checked before any is drawn: each costs memory (about
    60 B recorded) and time, so a mistyped rate fails at once with one line, not with a
    ``MemoryError`` minutes later."""
    timeline_max_rows: int
    """At most this many rows in ``timeline.parquet``: a run longer than
    ``timeline_period_s x timeline_max_rows`` gets rows of the smallest whole multiple of
    ``timeline_period_s`` that fits (memory of the timeline is bounded in simulated time)."""
    idle_fast_forward: bool
    """Skip the control loop's windows over idle time once the cluster and the policy have
    reached a fixed point (:meth:`infaas_core.control.loop.ControlLoop.settled`); exact: the
    results are the same as with ``false``."""
    idle_quiet_min_s: float
    """The fixed point must have held for at least this long (and at least the policy's own
    longest duration, found in its params) before idle windows are skipped."""
    frontend: FrontendSettings
    """The server's front end as a FCFS queue before the policy (:mod:`infaas_sim.frontend`);
    disabled by default (issue 12, for ``infaas-real validate``)."""
    offline: OfflineJobs
    """Offline jobs run as a low-priority stream on idle replicas (:mod:`infaas_sim.offline`,
    docs/offline.md); none by default (every other result is unchanged then)."""
    service_scale: float
    """The data plane's service times are the latency model's x this (the machine the catalog
    runs on, e.g. ``infaas-real validate``'s calibrated in-slot / profiled ratio); the policy
    reads the catalog as profiled. 1 = as profiled."""
    service_extra_ms: float
    """Added to every batch's service time in the data plane, after ``service_scale`` (a real
    worker slot's fixed cost per call: the request's transfer to the replica process and back,
    which a profile of the runner alone does not see); the policy reads the catalog as
    profiled. 0 = none."""
    load_extra_ms: float
    """Added to every load's latency in the data plane (a worker slot's start on a real
    machine); the policy reads the profiled load latency. 0 = none."""
    service_profile: str | None
    """A measured service profile of the data plane (:mod:`infaas_sim.service_profile`: per
    variant and batch, p50 / p99 ms on the machine modelled, e.g. ``infaas-real
    calibrate-frontend``'s ``<catalog>.service.csv``): a variant it lists is served with its
    times instead of the catalog's x ``service_scale`` + ``service_extra_ms``; the policy reads
    the catalog as profiled. null = none."""
    admission: AdmissionSettings
    """The real server's admission: per-instance queue cap and deadline shedding
    (:mod:`infaas_sim.admission`); off by default, set by ``infaas-real validate``."""

    def __post_init__(self) -> None:
        latency_model(self.latency_model)  # unknown names fail here, with the known ones
        if self.batch_timeout_ms < 0:
            raise ConfigError("sim.batch_timeout_ms", f"must be >= 0, got {self.batch_timeout_ms}")
        for key in ("chunk_s", "timeline_period_s", "route_period_s"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"sim.{key}", f"must be a positive number, got {value!r}")
        if self.stats_period_s is not None and not self.stats_period_s > 0:
            raise ConfigError("sim.stats_period_s", f"must be > 0 or null, got {self.stats_period_s}")
        if not (isinstance(self.warmup_s, int | float) and math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise ConfigError("sim.warmup_s", f"must be a number >= 0, got {self.warmup_s!r}")
        if not (isinstance(self.max_arrivals, int | float) and not isinstance(self.max_arrivals, bool)
                and self.max_arrivals >= 1):
            raise ConfigError("sim.max_arrivals", f"must be a number >= 1, got {self.max_arrivals!r}")
        if isinstance(self.timeline_max_rows, bool) or not isinstance(self.timeline_max_rows, int) \
                or self.timeline_max_rows < 1:
            raise ConfigError("sim.timeline_max_rows", f"must be an integer >= 1, got {self.timeline_max_rows!r}")
        if not (isinstance(self.idle_quiet_min_s, int | float) and math.isfinite(self.idle_quiet_min_s)
                and self.idle_quiet_min_s >= 0):
            raise ConfigError("sim.idle_quiet_min_s", f"must be a number >= 0, got {self.idle_quiet_min_s!r}")
        if isinstance(self.service_scale, bool) or not isinstance(self.service_scale, int | float) \
                or not (math.isfinite(self.service_scale) and self.service_scale > 0):
            raise ConfigError("sim.service_scale", f"must be a number > 0, got {self.service_scale!r}")
        if isinstance(self.service_extra_ms, bool) or not isinstance(self.service_extra_ms, int | float) \
                or not (math.isfinite(self.service_extra_ms) and self.service_extra_ms >= 0):
            raise ConfigError("sim.service_extra_ms", f"must be a number >= 0, got {self.service_extra_ms!r}")
        if isinstance(self.load_extra_ms, bool) or not isinstance(self.load_extra_ms, int | float) \
                or not (math.isfinite(self.load_extra_ms) and self.load_extra_ms >= 0):
            raise ConfigError("sim.load_extra_ms", f"must be a number >= 0, got {self.load_extra_ms!r}")
        if self.service_profile is not None and not (isinstance(self.service_profile, str) and self.service_profile):
            raise ConfigError("sim.service_profile", f"must be a file path or null, got {self.service_profile!r}")
        if self.progress not in PROGRESS_CHOICES:
            raise ConfigError("sim.progress", f"must be one of {PROGRESS_CHOICES}, got {self.progress!r}")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> SimSettings:
        """The ``sim`` group as composed: every setting is required (the YAML is the default)."""
        m = dict(m)
        known = {f.name for f in fields(cls)}
        for k in m:
            if k not in known:
                raise ConfigError(f"sim.{k}", f"unknown setting; known: {', '.join(sorted(known))}")
        for f in fields(cls):
            if f.name not in m:
                raise ConfigError(f"sim.{f.name}", "missing key (configs/sim/default.yaml sets every setting)")
        if isinstance(m.get("progress"), bool):
            m["progress"] = "on" if m["progress"] else "off"
        if not isinstance(m["frontend"], FrontendSettings):  # sim.frontend: a group of its own
            m["frontend"] = FrontendSettings.from_mapping(m["frontend"])
        if not isinstance(m["offline"], OfflineJobs):  # sim.offline: the jobs of the run
            m["offline"] = OfflineJobs.from_mapping(m["offline"])
        if not isinstance(m["admission"], AdmissionSettings):  # sim.admission: the server's caps
            m["admission"] = AdmissionSettings.from_mapping(m["admission"])
        for k in ("drop_late", "stream", "accelerator_sharing", "idle_fast_forward"):
            if k in m and not isinstance(m[k], bool):
                raise ConfigError(f"sim.{k}", f"must be true or false, got {m[k]!r}")
        try:
            return cls(**m)
        except TypeError as e:  # pragma: no cover - keys are checked above
            raise ConfigError("sim", str(e)) from None


ChunkSource = Callable[[], Iterator[np.ndarray]]
"""Returns a fresh iterator of sorted arrival-time arrays (seconds), each after the last."""


@dataclass(frozen=True, slots=True)
class Arrivals:
    """An arrival source: chunks of sorted times; ``count`` if known up front (required
    unless streaming); ``duration_s`` the trace window (the run's horizon)."""

    chunks: ChunkSource
    duration_s: float
    count: int | None
    name: str = "trace"

    @staticmethod
    def from_array(times_s: np.ndarray, duration_s: float | None = None, name: str = "trace",
                   chunk_s: float = 10.0) -> Arrivals:
        t = np.ascontiguousarray(times_s, dtype=np.float64)
        end = float(duration_s) if duration_s is not None else (float(t[-1]) if t.size else 0.0)

        def chunks() -> Iterator[np.ndarray]:
            # chunk k holds the times before edge k = (k + 1) * chunk_s (np.arange's values),
            # found from the arrivals, so empty simulated time costs nothing
            n = t.size
            lo = 0
            while lo < n:
                k = int(t[lo] // chunk_s)
                while chunk_s + k * chunk_s <= t[lo]:
                    k += 1
                while k > 0 and chunk_s + (k - 1) * chunk_s > t[lo]:
                    k -= 1
                edge = chunk_s + k * chunk_s
                hi = int(np.searchsorted(t, edge, side="left")) if edge < end + chunk_s else n
                yield t[lo:hi]
                lo = hi

        return Arrivals(chunks, end, int(t.size), name)


@dataclass(frozen=True, slots=True)
class SimInputs:
    catalog: Catalog
    cluster: ClusterSpec
    apps: tuple[App, ...]
    arrivals: Arrivals
    policy: str
    policy_params: Mapping[str, Any]
    """The policy's full params: its composed ``configs/policy/<name>.yaml`` (``infaas_edge.policy_params``)."""
    seed: int
    sim: SimSettings
    offline: OfflineConfig | None = None
    """The offline rule (the top-level ``offline:`` block); needed only when
    ``sim.offline.jobs`` is not empty."""

    def __post_init__(self) -> None:
        if not self.apps:
            raise ConfigError("apps", "at least one application is needed")
        if len(self.apps) > 256:
            raise ConfigError("apps", f"at most 256 applications, got {len(self.apps)}")
        if len({a.name for a in self.apps}) != len(self.apps):
            raise ConfigError("apps", "application names must be unique")
        shares = [a.share for a in self.apps]
        if any(not (s >= 0 and math.isfinite(s)) for s in shares) or sum(shares) <= 0:
            raise ConfigError("apps", f"shares must be >= 0 with a positive sum, got {shares}")
        if self.arrivals.count is None and not self.sim.stream:
            raise ConfigError("sim.stream", "an arrival source of unknown length needs sim.stream=true")
        check_horizon(self.arrivals.duration_s, self.arrivals.name, self.sim)


def check_horizon(horizon_s: float, name: str, s: SimSettings) -> None:
    """A run's horizon must be a positive, finite time at which float64 still resolves the
    simulator's shortest period: past ``2**52 x`` that period a step of it no longer moves
    the clock, and the run would never end."""
    if not (math.isfinite(horizon_s) and horizon_s > 0):
        raise ConfigError("trace", f"trace '{name}': its window is {horizon_s} s long; a run needs a window > 0 s "
                                   "(a trace whose every arrival is at 0 s has none: set trace.duration_s)")
    periods = [s.route_period_s, s.timeline_period_s, s.chunk_s]
    if s.stats_period_s is not None:
        periods.append(s.stats_period_s)
    shortest = min(periods)
    if math.ulp(horizon_s) > shortest * HORIZON_RESOLUTION:
        raise ConfigError("trace", f"trace '{name}': its window of {horizon_s:.6g} s is too long for the simulator's "
                                   f"shortest period ({shortest} s): float64 time there moves in steps of "
                                   f"{math.ulp(horizon_s):.3g} s; shorten the trace")


HORIZON_RESOLUTION = 1e-4
"""The clock's resolution (float64 ulp) at the horizon must be at most this fraction of the
shortest period (route, timeline, stats, chunk): a 1e9 s run at a 10 ms route period passes
(ulp 1.2e-7 s), a 1e12 s one does not."""


# -- from the Hydra config (a plain mapping after OmegaConf.to_container) ---------------------
# ``ray`` (configs/cluster/ray.yaml) says where the real backend's Ray workers run; the
# simulator models the ``cluster:`` block beside it and has no use for it.
TOP_LEVEL_KEYS = ("policy", "trace", "cluster", "catalog", "apps", "sim", "seed", "sweep", "baselines", "offline",
                  "ray")


def apply_baselines(name: str, policy: Mapping[str, Any], baselines: Mapping[str, Any] | None) -> dict[str, Any]:
    """The policy params with an experiment's ``baselines`` section merged in.

    One experiment sweeps INFaaS and the pinned baselines with one command, yet only the
    baselines have ``placement``, ``provision_qps`` or ``pin_rule`` (``experiment=infaas_paper``).
    So an experiment states them once, at the top level (``baselines: {placement: dedicated,
    provision_qps: ${trace.rate_qps}}``), and they are merged into the params of a pinning
    policy (:data:`~infaas_core.control.startup.PINNING_POLICIES`) key by key — nested
    mappings too (``scaling: {scale_out_cooldown_s: 300}``) — wherever that policy's config has
    the key; other policies never see them. A key no pinning policy has is an error here for a
    pinning policy, so a typo does not pass silently."""
    from infaas_core.control.startup import PINNING_POLICIES

    out = dict(policy)
    if not baselines or name not in PINNING_POLICIES:
        return out

    def merge(dst: dict[str, Any], src: Mapping[str, Any], key: str, strict: bool) -> None:
        for k, v in src.items():
            if k not in dst:
                if strict and k not in _BASELINE_ONLY_SOME:
                    raise ConfigError(f"{key}.{k}", f"no such key in policy '{name}'")
                continue
            if isinstance(v, Mapping) and isinstance(dst[k], Mapping):
                sub = dict(dst[k])
                merge(sub, v, f"{key}.{k}", False)
                dst[k] = sub
            else:
                dst[k] = v

    merge(out, baselines, "baselines", True)
    return out


_BASELINE_ONLY_SOME = frozenset({"scaling", "estimates", "vm_autoscaler", "model_autoscale_period_s",
                                 "vm_autoscale_period_s"})
"""``baselines`` keys that only some pinning policies have (``sagemaker_plus``'s scaling)."""


def _section(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a mapping (a config group), got {type(value).__name__}")
    return value


def catalog_from_config(m: Mapping[str, Any], base_dir: Any = None) -> Catalog:
    """The ``catalog`` group: ``path`` (profile table CSV) and optional ``format``."""
    from infaas_core.catalog import load_catalog
    from infaas_core.configs import resolve_path

    path = m.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError("catalog.path", f"must be the path of a profile table, got {path!r}")
    fmt = m.get("format", "auto")
    if not isinstance(fmt, str):
        raise ConfigError("catalog.format", f"must be a string, got {fmt!r}")
    catalog = load_catalog(resolve_path(path, base_dir, key="catalog.path"), format=fmt)
    if not len(catalog):
        raise ConfigError("catalog.path", f"'{path}' holds no variant")
    return catalog


def arrivals_from_config(m: Mapping[str, Any], seed: int, settings: SimSettings, base_dir: Any = None) -> Arrivals:
    """The ``trace`` group as an arrival source. Streaming a generated trace draws it chunk
    by chunk (the same arrivals as the whole trace); a trace file is read whole."""
    from infaas_core.workload import config as wcfg
    from infaas_core.workload.generators import check_size, generate_chunks

    name = str(m.get("name") or m.get("kind") or "trace")
    params = {k: v for k, v in m.items() if not str(k).startswith("_")}
    if settings.stream and "kind" in params and "path" not in params:
        params.pop("name", None)
        kind = params.pop("kind")
        rate = params.pop("rate_qps", None)
        duration = params.pop("duration_s", None)
        run_seed = params.pop("seed", seed)
        if not isinstance(duration, int | float) or isinstance(duration, bool) or duration <= 0:
            raise ConfigError("trace.duration_s", f"streaming needs a positive duration, got {duration!r}")
        check_size(kind, rate, duration, params, settings.max_arrivals, "sim.max_arrivals")
        chunk_n = max(int((rate or 1000.0) * settings.chunk_s), 1024)
        # check the parameters now (the generator checks them lazily otherwise)
        iter(generate_chunks(kind, rate_qps=rate, duration_s=duration, seed=run_seed, chunk_size=chunk_n, **params))

        def chunks() -> Iterator[np.ndarray]:
            return generate_chunks(kind, rate_qps=rate, duration_s=duration, seed=run_seed,
                                   chunk_size=chunk_n, **params)

        return Arrivals(chunks, float(duration), None, name)
    trace = wcfg.trace_from_config(m, seed, base_dir, max_arrivals=settings.max_arrivals, limit_key="sim.max_arrivals")
    if not len(trace):
        raise ConfigError("trace", f"trace '{trace.name or name}' ({trace.source}) holds no arrival: nothing to simulate")
    return Arrivals.from_array(trace.arrivals_s, trace.duration_s, trace.name or name, settings.chunk_s)


def inputs_from_config(cfg: Mapping[str, Any], base_dir: Any = None) -> SimInputs:
    """Everything a run needs, validated, from the composed config."""
    from infaas_core.configs import apps_from_mapping, cluster_from_mapping

    for k in cfg:
        if k not in TOP_LEVEL_KEYS and k != "hydra":
            raise ConfigError(str(k), f"unknown top-level key; known: {', '.join(TOP_LEVEL_KEYS)}")
    seed = cfg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed", f"must be an integer >= 0, got {seed!r}")
    settings = SimSettings.from_mapping(_section(cfg, "sim"))
    policy = _section(cfg, "policy")
    name = policy.get("name")
    if not isinstance(name, str):
        raise ConfigError("policy.name", f"must name a policy, got {name!r}")
    return SimInputs(
        catalog=catalog_from_config(_section(cfg, "catalog"), base_dir),
        cluster=cluster_from_mapping(_section(cfg, "cluster")),
        apps=apps_from_mapping(_section(cfg, "apps")),
        arrivals=arrivals_from_config(_section(cfg, "trace"), seed, settings, base_dir),
        policy=name,
        policy_params=apply_baselines(name, policy, cfg.get("baselines")),
        seed=seed,
        sim=settings,
        offline=offline_config_from_mapping(cfg["offline"]) if cfg.get("offline") is not None else None,
    )
