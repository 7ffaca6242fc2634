"""Small hand-built catalogs, clusters and arrival streams for simulator tests."""

from __future__ import annotations

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements, Variant, make_variant
from infaas_sim import Arrivals, SimInputs, SimSettings


def variant(name: str = "v", *, p50_ms: float = 1.0, p99_ms: float | None = None, max_batch: int = 1,
            hardware: str = "cpu", cores: int = 1, memory_mb: float = 100.0, load_ms: float = 0.0,
            accuracy: float = 0.7, model: str = "m", task: str = "t",
            slope_ms: float = 0.0) -> Variant:
    """A variant whose p50 at batch b is ``p50_ms + slope_ms * (b - 1)``."""
    p99 = p50_ms * 2 if p99_ms is None else p99_ms
    points = {b: (p50_ms + slope_ms * (b - 1), p99 + slope_ms * (b - 1)) for b in sorted({1, max_batch})}
    return make_variant(name=name, model=model, task=task, framework="onnx", hardware=hardware, cores=cores,
                        max_batch=max_batch, load_latency_ms=load_ms, memory_mb=memory_mb,
                        accuracy=accuracy, source="modeled:test", points=points)


def big_cpu_cluster(vcpus: int = 64, workers: int = 1, max_workers: int | None = None) -> ClusterSpec:
    t = InstanceType("big", 1.0, vcpus, 256.0, 5.0)
    return ClusterSpec((t,), (("big", workers),), (("big", max_workers or workers),))


def poisson(rate_qps: float, n: int, seed: int) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate_qps, n))


def one_app(variant_name: str = "v", slo_ms: float = 1e9) -> tuple[App, ...]:
    return (App("a", Requirements(variant=variant_name, latency_slo_ms=slo_ms), 1.0),)


def inputs(catalog: Catalog, times: np.ndarray, *, apps: tuple[App, ...] | None = None,
           cluster: ClusterSpec | None = None, policy: str = "static", params: dict | None = None,
           seed: int = 0, duration_s: float | None = None, **sim: object) -> SimInputs:
    settings = SimSettings.from_mapping({"progress": "off", **sim})
    return SimInputs(
        catalog=catalog,
        cluster=cluster or big_cpu_cluster(),
        apps=apps or one_app(catalog.variants[0].name),
        arrivals=Arrivals.from_array(times, duration_s if duration_s is not None else float(times[-1]) if times.size else 1.0),
        policy=policy,
        policy_params=params or {"replicas": 1},
        seed=seed,
        sim=settings,
    )
