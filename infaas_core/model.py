"""The data model: variants, instance types, clusters, requirements and applications.

All values are frozen dataclasses with units in their field names. They are built once
(from a profile table or a config) and shared read-only by policies and backends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from infaas_core.errors import ConfigError

CPU = "cpu"
"""Device class of plain CPU variants (every instance type offers it)."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One model-variant: an architecture compiled for one framework/precision, hardware,
    core count and maximum batch, with its profile.

    ``batches`` are the batch sizes that were measured (sorted, unique); ``latency_p50_ms``
    and ``latency_p99_ms`` hold the measurement for each. ``p50_ms_by_batch[b - 1]`` and
    ``p99_ms_by_batch[b - 1]`` are the dense, interpolated tables for every batch
    ``1 <= b <= max_batch`` (built by :func:`make_variant`); lookups are O(1).
    """

    name: str
    model: str
    task: str
    framework: str
    hardware: str
    cores: int
    max_batch: int
    load_latency_ms: float
    memory_mb: float
    accuracy: float
    source: str
    batches: tuple[int, ...]
    latency_p50_ms: tuple[float, ...]
    latency_p99_ms: tuple[float, ...]
    p50_ms_by_batch: tuple[float, ...] = field(repr=False, compare=False)
    p99_ms_by_batch: tuple[float, ...] = field(repr=False, compare=False)

    @property
    def is_cpu(self) -> bool:
        return self.hardware == CPU

    @property
    def batch1_latency_ms(self) -> float:
        return self.p50_ms_by_batch[0]

    def latency_ms(self, batch: int, quantile: str = "p50") -> float:
        """Latency of one batch of ``batch`` queries (interpolated between measured sizes).

        Raises ``ValueError`` past ``max_batch`` — a variant is never extrapolated beyond it.
        """
        if batch < 1 or batch > self.max_batch:
            raise ValueError(
                f"variant {self.name}: batch {batch} outside 1..max_batch={self.max_batch}"
            )
        table = self.p50_ms_by_batch if quantile == "p50" else self.p99_ms_by_batch
        return table[batch - 1]

    def throughput_qps(self, batch: int | None = None) -> float:
        """Saturation throughput of one replica running full batches of ``batch``."""
        b = self.max_batch if batch is None else batch
        return b * 1000.0 / self.latency_ms(b)


def _interpolate(batches: tuple[int, ...], values: tuple[float, ...], max_batch: int) -> tuple[float, ...]:
    """Dense latency for every batch 1..max_batch.

    Between measured sizes: linear. Below the smallest measured size: the smallest measured
    value (latency never drops below it). Between the largest measured size and
    ``max_batch``: linear in the per-batch slope of the last two points (flat if only one).
    """
    out: list[float] = []
    n = len(batches)
    for b in range(1, max_batch + 1):
        if b <= batches[0]:
            out.append(values[0])
            continue
        if b >= batches[-1]:
            if n == 1 or b == batches[-1]:
                out.append(values[-1])
                continue
            slope = (values[-1] - values[-2]) / (batches[-1] - batches[-2])
            out.append(values[-1] + max(slope, 0.0) * (b - batches[-1]))
            continue
        # find the bracketing pair
        hi = next(i for i in range(n) if batches[i] >= b)
        lo = hi - 1
        if batches[hi] == b:
            out.append(values[hi])
        else:
            t = (b - batches[lo]) / (batches[hi] - batches[lo])
            out.append(values[lo] + t * (values[hi] - values[lo]))
    return tuple(out)


def make_variant(
    *,
    name: str,
    model: str,
    task: str,
    framework: str,
    hardware: str,
    cores: int,
    max_batch: int,
    load_latency_ms: float,
    memory_mb: float,
    accuracy: float,
    source: str,
    points: Mapping[int, tuple[float, float]],
) -> Variant:
    """Build a :class:`Variant` from its static fields and measured ``{batch: (p50_ms, p99_ms)}``."""
    if not points:
        raise ValueError(f"variant {name}: no measured batch size")
    batches = tuple(sorted(points))
    if batches[-1] > max_batch:
        raise ValueError(f"variant {name}: measured batch {batches[-1]} > max_batch {max_batch}")
    p50 = tuple(float(points[b][0]) for b in batches)
    p99 = tuple(float(points[b][1]) for b in batches)
    dense_p50 = _interpolate(batches, p50, max_batch)
    # p50 and p99 are continued separately past the last measured batch; a tail can never
    # sit below its median, so clamp p99 to at least p50 there.
    dense_p99 = tuple(max(a, b) for a, b in zip(_interpolate(batches, p99, max_batch), dense_p50))
    return Variant(
        name=name,
        model=model,
        task=task,
        framework=framework,
        hardware=hardware,
        cores=int(cores),
        max_batch=int(max_batch),
        load_latency_ms=float(load_latency_ms),
        memory_mb=float(memory_mb),
        accuracy=float(accuracy),
        source=source,
        batches=batches,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        p50_ms_by_batch=dense_p50,
        p99_ms_by_batch=dense_p99,
    )


@dataclass(frozen=True, slots=True)
class InstanceType:
    """A machine type a cluster can start ("VM"): price, capacity and start-up delay.

    ``accelerators`` maps a device class (``gpu-v100``, ``inferentia``...) to the number of
    devices; ``accelerator_memory_gb`` the memory of one such device.
    """

    name: str
    price_usd_per_hour: float
    vcpus: int
    memory_gb: float
    startup_s: float
    accelerators: tuple[tuple[str, int], ...] = ()
    accelerator_memory_gb: tuple[tuple[str, float], ...] = ()

    @property
    def device_classes(self) -> tuple[str, ...]:
        """Device classes this type offers: always ``cpu``, then its accelerators."""
        return (CPU, *[d for d, n in self.accelerators if n > 0])

    # (asked per routing miss and per autoscaler tick: the pairs are searched from the end,
    # so a repeated class counts as its last pair, as a dict of them would, without building one)
    def accelerator_count(self, device_class: str) -> int:
        for d, n in reversed(self.accelerators):
            if d == device_class:
                return n
        return 0

    def accelerator_memory_mb(self, device_class: str) -> float:
        for d, gb in reversed(self.accelerator_memory_gb):
            if d == device_class:
                return gb * 1024.0
        return 0.0

    @property
    def price_usd_per_s(self) -> float:
        return self.price_usd_per_hour / 3600.0

    def offers(self, hardware: str) -> bool:
        return hardware == CPU or self.accelerator_count(hardware) > 0


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """The instance types on offer and how many of each start and may exist."""

    instance_types: tuple[InstanceType, ...]
    initial_workers: tuple[tuple[str, int], ...]
    max_workers: tuple[tuple[str, int], ...]
    price_list_date: str = ""

    def __post_init__(self) -> None:
        names = {t.name for t in self.instance_types}
        for key, mapping in (("initial_workers", self.initial_workers), ("max_workers", self.max_workers)):
            for name, count in mapping:
                if name not in names:
                    raise ConfigError(f"cluster.{key}.{name}", f"unknown instance type; known: {sorted(names)}")
                if count < 0:
                    raise ConfigError(f"cluster.{key}.{name}", f"must be >= 0, got {count}")
        for name, count in self.initial_workers:
            if count > self.max_count(name):
                raise ConfigError(f"cluster.initial_workers.{name}", f"{count} exceeds max_workers {self.max_count(name)}")

    def type(self, name: str) -> InstanceType:
        for t in self.instance_types:
            if t.name == name:
                return t
        raise ConfigError("cluster.instance_types", f"unknown instance type '{name}'")

    def initial_count(self, name: str) -> int:
        return dict(self.initial_workers).get(name, 0)

    def max_count(self, name: str) -> int:
        return dict(self.max_workers).get(name, self.initial_count(name))

    def types_offering(self, hardware: str) -> tuple[InstanceType, ...]:
        """Instance types that offer ``hardware``, cheapest first."""
        return tuple(sorted((t for t in self.instance_types if t.offers(hardware)), key=lambda t: t.price_usd_per_hour))


@dataclass(frozen=True, slots=True)
class Requirements:
    """What an application asks for: exactly one of ``task`` / ``model`` / ``variant``,
    a minimum accuracy (task form only) and a latency SLO in milliseconds.

    The three query forms of INFaaS (paper §3, code ``QueryOnline``): use case + accuracy +
    SLO; architecture + SLO; an exact variant (SLO optional).
    """

    task: str | None = None
    model: str | None = None
    variant: str | None = None
    min_accuracy: float = 0.0
    latency_slo_ms: float = math.inf

    def __post_init__(self) -> None:
        given = [k for k in ("task", "model", "variant") if getattr(self, k)]
        if len(given) != 1:
            raise ConfigError(
                "requirements", f"exactly one of task / model / variant must be given, got {given or 'none'}"
            )
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ConfigError("requirements.min_accuracy", f"must be in [0, 1], got {self.min_accuracy}")
        if not self.latency_slo_ms > 0:
            raise ConfigError("requirements.latency_slo_ms", f"must be > 0, got {self.latency_slo_ms}")

    @property
    def form(self) -> str:
        """``task``, ``model`` or ``variant``."""
        return "task" if self.task else ("model" if self.model else "variant")

    @property
    def target(self) -> str:
        return self.task or self.model or self.variant or ""


@dataclass(frozen=True, slots=True)
class App:
    """An application of the workload mix: its requirements and its share of arrivals."""

    name: str
    requirements: Requirements
    share: float
    fixed_variant: str | None = None  # the variant a baseline pins for this app (clipper_plus, sagemaker_plus, static)
