"""The server's front end as a queue in front of the policy (``sim.frontend``).

A real INFaaS-py server spends CPU on every query before and around inference: HTTP parsing,
the policy's ``select``, the pipe to the worker process and the response. On a small machine
that work has its own queue: the front end's cores serve queries one at a time, first come
first served. This module is that stage, exactly, over arrays of arrivals:

- ``c`` servers (the front end's cores, ``sim.frontend.cores``), FCFS;
- service time per query affine in its item count: ``per_query_ms + per_item_ms * items``
  (a simulated query is one item);
- the query reaches the policy when its front-end service ends (``arrival + sojourn``); its
  latency still counts from the client's arrival (:func:`count_from_client_arrival`).

The recursion (Kiefer-Wolfowitz for ``c`` servers; Lindley's for ``c = 1``): query ``i``
starts at ``max(a_i, f)`` where ``f`` is the earliest time one of the ``c`` servers is free,
and that server is then free at start + service. No process or event exists per query.

**Shared cores** (``sim.frontend.machine_cores``, for ``infaas-real validate`` on one small
machine): the front end, the load generator and the replicas' processes run on the same cores.
The stage above gives the front end a core of its own; with ``machine_cores`` set, its CPU
(``per_query_ms + per_item_ms`` per query, which the calibration measures from the client's
side, so it holds the generator's share too) also counts against the machine, with the CPU
replicas' service, the replicas that are loading (``loading_cores`` each) and other work on
the machine (``background_cores``, e.g. other users' processes): when over a
window that demand exceeds ``machine_cores`` x the window, the CPU replicas' service times of
the next window stretch by the ratio (processor sharing at the window scale, as
``sim.accelerator_sharing`` for an accelerator's replicas; :meth:`infaas_sim.cluster.SimMechanism.collect`).
What it approximates: the OS scheduler sharing the cores among runnable processes. What it
leaves out: the front end's own slowdown (its queue above keeps its calibrated service time),
contention shorter than a window, and the cache and memory-bandwidth interference of
processes that each have a core.

Parameters come from the config or from a calibration file beside the catalog
(``catalogs/<catalog>.frontend.yaml``, written by ``infaas-real calibrate-frontend``; it also
says where and when it was measured). Disabled (the default), nothing here runs.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.errors import ConfigError

FRONTEND_KEYS = ("enabled", "path", "cores", "per_query_ms", "per_item_ms", "machine_cores", "loading_cores",
                 "background_cores", "sharing", "busy_cores", "transfer_on_loop")
FILE_KEYS = ("cores", "per_query_ms", "per_item_ms")
OPTIONAL_FILE_KEYS = ("busy_cores",)  # a calibration file may measure it too
SHARING_MODELS = ("window", "event")


@dataclass(frozen=True, slots=True)
class FrontendSettings:
    """``sim.frontend``: see ``configs/sim/default.yaml``."""

    enabled: bool
    """False: no front-end stage (queries reach the policy at their arrival)."""
    path: str | None
    """A calibration file (``catalogs/<catalog>.frontend.yaml``); its values replace the three below."""
    cores: int
    """Servers of the front-end queue (the cores the server process's front end gets)."""
    per_query_ms: float
    """CPU time per query independent of its size (parse, policy, IPC, response)."""
    per_item_ms: float
    """CPU time per item of the query's batch (tensor decode/copy); a simulated query is one item."""
    machine_cores: int | None
    """Shared cores (:mod:`infaas_sim.cluster`, "CPU sharing"): the machine's cores, which the
    front end's work and the CPU replicas share; ``None``: the front end has cores of its own."""
    loading_cores: float
    """With ``machine_cores``: the cores a replica uses while it loads (a worker slot's process
    starting: importing its runtime, loading and warming up its model)."""
    background_cores: float
    """With ``machine_cores``: other work on the machine, in cores, counted in every window's
    demand (``infaas-real validate`` measures it: the CPU other processes used during its real run)."""
    sharing: str
    """With ``machine_cores``: ``window`` — the CPU replicas' service of the next window stretches
    by this window's demand over the cores; ``event`` — each CPU batch is stretched over its own
    run by the demand while it runs, the front end's busy periods included
    (:mod:`infaas_sim.sharing`: contention shorter than a window, as in a burst)."""
    busy_cores: float
    """With ``sharing: event``: the cores the front end uses while it serves a query (the
    server's thread and the load generator's process; ``infaas-real calibrate-frontend``
    measures their CPU per query over the front end's time per query)."""
    transfer_on_loop: bool
    """With ``sharing: event``: a CPU batch that could start while the front end serves a
    request starts when that request leaves it, and that request joins it (the real server
    writes batches to its workers from the front end's event loop; :mod:`infaas_sim.sharing`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError("sim.frontend.enabled", f"must be true or false, got {self.enabled!r}")
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise ConfigError("sim.frontend.cores", f"must be an integer >= 1, got {self.cores!r}")
        mc = self.machine_cores
        if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 1):
            raise ConfigError("sim.frontend.machine_cores", f"must be an integer >= 1 or null, got {mc!r}")
        if not isinstance(self.transfer_on_loop, bool):
            raise ConfigError("sim.frontend.transfer_on_loop", f"must be true or false, got {self.transfer_on_loop!r}")
        if self.transfer_on_loop and self.enabled and (self.sharing != "event" or self.machine_cores is None):
            raise ConfigError("sim.frontend.transfer_on_loop", "needs sim.frontend.sharing=event and machine_cores")
        if self.sharing not in SHARING_MODELS:
            raise ConfigError("sim.frontend.sharing", f"must be one of {', '.join(SHARING_MODELS)}, got {self.sharing!r}")
        for key in ("per_query_ms", "per_item_ms", "loading_cores", "background_cores", "busy_cores"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"sim.frontend.{key}", f"must be a number >= 0, got {value!r}")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], base_dir: Any = None) -> FrontendSettings:
        """The composed ``sim.frontend`` group; with ``path`` set (and enabled) the file's values."""
        if not isinstance(m, Mapping):
            raise ConfigError("sim.frontend", f"must be a mapping, got {type(m).__name__}")
        for k in m:
            if k not in FRONTEND_KEYS:
                raise ConfigError(f"sim.frontend.{k}", f"unknown setting; known: {', '.join(FRONTEND_KEYS)}")
        for k in FRONTEND_KEYS:
            if k not in m:
                raise ConfigError(f"sim.frontend.{k}", "missing key (configs/sim/default.yaml sets every setting)")
        values = dict(m)
        if values["path"] is not None and values["enabled"] is True:
            values.update(read_file(str(values["path"]), base_dir))
        return cls(**values)

    @property
    def service_ms(self) -> float:
        """Service time of a one-item query."""
        return float(self.per_query_ms) + float(self.per_item_ms)


def read_file(path: str, base_dir: Any = None) -> dict[str, Any]:
    """The three parameters of a calibration file (its other keys are the record of the measurement)."""
    import yaml

    from infaas_core.configs import resolve_path

    p = Path(resolve_path(path, base_dir, key="sim.frontend.path"))
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("sim.frontend.path", f"cannot read '{path}': {' '.join(str(exc).split())}") from None
    if not isinstance(data, Mapping):
        raise ConfigError("sim.frontend.path", f"'{path}' is not a mapping")
    missing = [k for k in FILE_KEYS if k not in data]
    if missing:
        raise ConfigError("sim.frontend.path", f"'{path}' lacks {', '.join(missing)}")
    return {k: data[k] for k in (*FILE_KEYS, *(k for k in OPTIONAL_FILE_KEYS if k in data))}


def fcfs_departures(arrivals_s: np.ndarray, service_s: np.ndarray | float, servers: int) -> np.ndarray:
    """Departure times of a FCFS queue with ``servers`` servers, in arrival order.

    ``arrivals_s`` sorted; ``service_s`` one value or one per query. Exact: each query starts
    when it has arrived and one server is free (the earliest-free server takes it)."""
    a = np.asarray(arrivals_s, dtype=np.float64)
    n = a.size
    s = np.broadcast_to(np.asarray(service_s, dtype=np.float64), (n,))
    if n and (np.diff(a) < 0).any():
        raise ValueError("arrivals must be sorted")
    out = np.empty(n, dtype=np.float64)
    if servers == 1:  # Lindley: each query starts at max(its arrival, the previous departure)
        free = -math.inf
        for i, (t, x) in enumerate(zip(a.tolist(), s.tolist())):
            free = (t if t > free else free) + x
            out[i] = free
        return out
    heap = [-math.inf] * servers  # when each server is next free
    replace = heapq.heapreplace
    for i, (t, x) in enumerate(zip(a.tolist(), s.tolist())):
        f = heap[0]
        d = (t if t > f else f) + x
        replace(heap, d)
        out[i] = d
    return out


@dataclass(frozen=True, slots=True)
class Passed:
    """Arrivals after the front end: ``policy_s`` (sorted: when each reaches the policy) and
    ``client_s[k]``, the client's arrival of the query that is ``k``-th to reach the policy."""

    policy_s: np.ndarray
    client_s: np.ndarray


def pass_through(arrivals_s: np.ndarray, fe: FrontendSettings) -> Passed:
    """The front-end stage over a whole trace."""
    dep = fcfs_departures(arrivals_s, fe.service_ms / 1000.0, fe.cores)
    order = np.argsort(dep, kind="stable")  # one service time for all: already in order
    return Passed(dep[order], np.asarray(arrivals_s, dtype=np.float64)[order])


def busy_levels(departures_s: np.ndarray, service_s: float) -> tuple[list[float], list[int]]:
    """How many of the front end's servers are busy over time, from its departures and its
    time per query: change times ``T`` and levels ``L`` (``L[j]`` holds on ``[T[j], T[j+1])``,
    0 before ``T[0]`` and after the last)."""
    ends = np.asarray(departures_s, dtype=np.float64)
    starts = ends - service_s  # each query's service: the service_s seconds before its departure
    t = np.concatenate([starts, ends])
    d = np.concatenate([np.ones(ends.size, dtype=np.int64), -np.ones(ends.size, dtype=np.int64)])
    order = np.lexsort((d, t))  # at a tie an end comes before a start: no spurious level
    t, level = t[order], np.cumsum(d[order])
    keep = np.append(t[1:] != t[:-1], True)  # the last change at each time stands
    return t[keep].tolist(), level[keep].astype(int).tolist()


def count_from_client_arrival(arrival_s: np.ndarray, finish_s: np.ndarray, batch: np.ndarray, app: np.ndarray,
                              status: np.ndarray, slo_ms: np.ndarray, client_s: np.ndarray,
                              completed: int, late: int) -> None:
    """In place, per-query arrays of a recorded run: each query's arrival becomes its
    client's arrival and a served query is late when finish - that arrival exceeds its SLO."""
    arrival_s[:] = client_s
    served = batch > 0
    lat_ms = (finish_s[served] - arrival_s[served]) * 1000.0
    status[served] = np.where(lat_ms > slo_ms[app[served]], late, completed)
