"""The ``ray`` block of ``configs/cluster/ray.yaml`` as a validated object.

No defaults here: the YAML is the default, and every key is required (exit 2 with a one-line
:class:`~infaas_core.errors.ConfigError` otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infaas_core.errors import ConfigError
from infaas_core.model import InstanceType

GIB = 1024**3

_KEYS = {"address", "local_only", "local", "accelerator_resources", "type_resources", "max_concurrency",
         "stats_timeout_s", "stop_timeout_s", "connect_timeout_s", "calls_in_flight", "max_queries_per_call"}  # fmt: skip
_LOCAL_KEYS = {"num_cpus", "memory_gb", "object_store_mb", "temp_dir"}


@dataclass(frozen=True, slots=True)
class LocalRay:
    """How Ray is started on this machine when no address is given."""

    num_cpus: int | None  # CPUs the local node offers (None: this machine's count)
    memory_gb: float | None  # memory it offers to actors (None: Ray's own estimate)
    object_store_mb: int  # the object store's size
    temp_dir: str  # Ray's session directory (short: Unix socket paths must stay < 107 bytes)


@dataclass(frozen=True, slots=True)
class RaySettings:
    address: str | None  # a running cluster ("auto", "ray://...", "host:port"); None: $RAY_ADDRESS, else start Ray here
    local_only: bool  # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: node address 127.0.0.1, every port on loopback
    local: LocalRay
    accelerator_resources: dict[str, str]  # device class -> Ray resource ("GPU" or a custom one), one unit per device
    type_resources: dict[str, dict[str, float]]  # instance type -> extra custom resources its workers need
    max_concurrency: int  # queries one worker actor may hold at once
    calls_in_flight: int  # query calls one instance may have on their way; queries beyond wait and go together
    max_queries_per_call: int  # at most this many queries in one call
    stats_timeout_s: float  # a worker's per-window statistics call waits at most this long
    stop_timeout_s: float  # a stopping worker gets this long to stop its replicas before it is killed
    connect_timeout_s: float  # a host:port address must accept a TCP connection within this long

    def demand(self, t: InstanceType) -> dict[str, float]:
        """The Ray resources one worker of ``t`` holds: its vCPUs, memory (bytes), devices."""
        out = {"CPU": float(t.vcpus), "memory": float(t.memory_gb * GIB)}
        for d, n in t.accelerators:
            if n <= 0:
                continue
            res = self.accelerator_resources.get(d)
            if res is None:
                raise ConfigError("ray.accelerator_resources", f"no Ray resource for device class {d!r} (type {t.name})")
            out[res] = out.get(res, 0.0) + float(n)
        for res, amount in self.type_resources.get(t.name, {}).items():
            out[res] = out.get(res, 0.0) + float(amount)
        return out


def _num(m: Mapping[str, Any], key: str, prefix: str, *, optional: bool = False, positive: bool = True) -> Any:
    if key not in m:
        raise ConfigError(f"{prefix}.{key}", "missing key")
    v = m[key]
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or (positive and v <= 0):
        raise ConfigError(f"{prefix}.{key}", f"must be a number > 0{' or null' if optional else ''}, got {v!r}")
    return v


def ray_settings_from_mapping(d: Any, prefix: str = "ray") -> RaySettings:
    if not isinstance(d, Mapping):
        raise ConfigError(prefix, f"must be a mapping, got {d!r}")
    missing, unknown = _KEYS - set(d), set(d) - _KEYS
    if missing or unknown:
        raise ConfigError(prefix, f"missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    addr = d["address"]
    if addr is not None and (not isinstance(addr, str) or not addr):
        raise ConfigError(f"{prefix}.address", f"must be an address or null, got {addr!r}")
    if not isinstance(d["local_only"], bool):
        raise ConfigError(f"{prefix}.local_only", f"must be true or false, got {d['local_only']!r}")
    loc = d["local"]
    if not isinstance(loc, Mapping) or set(loc) != _LOCAL_KEYS:
        raise ConfigError(f"{prefix}.local", f"must be a mapping of exactly {sorted(_LOCAL_KEYS)}, got {loc!r}")
    temp = loc["temp_dir"]
    if not isinstance(temp, str) or not temp.startswith("/") or len(temp) > 40:
        raise ConfigError(f"{prefix}.local.temp_dir", f"must be an absolute path of at most 40 characters, got {temp!r}")
    cpus = _num(loc, "num_cpus", f"{prefix}.local", optional=True)
    local = LocalRay(None if cpus is None else int(cpus), _num(loc, "memory_gb", f"{prefix}.local", optional=True),
                     int(_num(loc, "object_store_mb", f"{prefix}.local")), temp)  # fmt: skip
    acc = d["accelerator_resources"] or {}
    if not isinstance(acc, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in acc.items()):
        raise ConfigError(f"{prefix}.accelerator_resources", f"must map device classes to Ray resource names, got {acc!r}")
    types = d["type_resources"] or {}
    if not isinstance(types, Mapping):
        raise ConfigError(f"{prefix}.type_resources", f"must be a mapping, got {types!r}")
    type_res: dict[str, dict[str, float]] = {}
    for name, res in types.items():
        if not isinstance(res, Mapping):
            raise ConfigError(f"{prefix}.type_resources.{name}", f"must map resource names to amounts, got {res!r}")
        type_res[str(name)] = {str(r): float(_num(res, r, f"{prefix}.type_resources.{name}")) for r in res}
    ints = {}
    for key in ("max_concurrency", "calls_in_flight", "max_queries_per_call"):
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{prefix}.{key}", f"must be an integer >= 1, got {v!r}")
        ints[key] = v
    return RaySettings(
        address=addr, local_only=d["local_only"], local=local, accelerator_resources=dict(acc),
        type_resources=type_res, max_concurrency=ints["max_concurrency"], calls_in_flight=ints["calls_in_flight"],
        max_queries_per_call=ints["max_queries_per_call"],
        stats_timeout_s=float(_num(d, "stats_timeout_s", prefix)), stop_timeout_s=float(_num(d, "stop_timeout_s", prefix)),
        connect_timeout_s=float(_num(d, "connect_timeout_s", prefix)),
    )  # fmt: skip
