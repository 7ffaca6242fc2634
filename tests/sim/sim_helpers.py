"""Small hand-built catalogs, clusters and arrival streams for simulator tests."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements, Variant, make_variant
from infaas_edge import compose_group, group_options, merge
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
           cluster: ClusterSpec | None = None, policy: str = "static", params: Mapping[str, Any] | None = None,
           seed: int = 0, duration_s: float | None = None, **sim: object) -> SimInputs:
    """A run of ``policy`` on ``catalog``: its composed config with ``params`` merged over it (a
    test policy without a config gets ``params`` as they are), ``sim`` over configs/sim/default.yaml."""
    settings = sim_settings(progress="off", **sim)
    return SimInputs(
        catalog=catalog,
        cluster=cluster or big_cpu_cluster(),
        apps=apps or one_app(catalog.variants[0].name),
        arrivals=Arrivals.from_array(times, duration_s if duration_s is not None else float(times[-1]) if times.size else 1.0),
        policy=policy,
        policy_params=policy_params(policy, params) if policy in group_options("policy") else dict(params or {}),
        seed=seed,
        sim=settings,
    )


REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@functools.cache
def _composed(group: str, option: str) -> dict[str, Any]:
    return compose_group(group, option)  # composing takes ~0.1 s; tests ask for a few configs many times


def policy_params(name: str, updates: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``configs/policy/<name>.yaml`` composed (what the CLI passes), ``updates`` merged over it."""
    return merge(_composed("policy", name), updates, key="policy")


def sim_settings(**overrides: Any) -> SimSettings:
    """``configs/sim/default.yaml`` with ``overrides`` (the YAML holds every default)."""
    return SimSettings.from_mapping({**_composed("sim", "default"), **overrides})


def cluster_config(name: str) -> ClusterSpec:
    from infaas_core.configs import cluster_from_mapping

    return cluster_from_mapping(_composed("cluster", name))


TASK = "classification-imagenet-224"


def mini_imagenet() -> Catalog:
    """A small imagenet-like catalog: three architectures on CPU and accelerators."""
    def v(name: str, model: str, hw: str, cores: int, mb: int, b1: float, bmax: float, acc: float,
          load_ms: float, mem: float) -> Variant:
        pts = {1: (b1, b1 * 1.5)}
        if mb > 1:
            pts[mb] = (bmax, bmax * 1.5)
        return make_variant(name=name, model=model, task=TASK, framework="onnx", hardware=hw, cores=cores,
                            max_batch=mb, load_latency_ms=load_ms, memory_mb=mem, accuracy=acc,
                            source="modeled:test", points=pts)
    return Catalog([
        v("mobilenet_v2-cpu2-b8", "mobilenet_v2", "cpu", 2, 8, 12.0, 50.0, 0.72, 400, 300),
        v("mobilenet_v2-t4-b16", "mobilenet_v2", "gpu-t4", 1, 16, 2.0, 9.0, 0.72, 1500, 800),
        v("resnet50-cpu4-b8", "resnet50", "cpu", 4, 8, 45.0, 220.0, 0.76, 600, 700),
        v("resnet50-v100-b16", "resnet50", "gpu-v100", 1, 16, 3.5, 18.0, 0.76, 2500, 1500),
        v("resnet50-inf-b1", "resnet50", "inferentia", 1, 1, 6.0, 6.0, 0.76, 3000, 900),
        v("efficientnet_b3-cpu4-b4", "efficientnet_b3", "cpu", 4, 4, 110.0, 380.0, 0.82, 800, 900),
        v("efficientnet_b3-v100-b16", "efficientnet_b3", "gpu-v100", 1, 16, 9.0, 60.0, 0.82, 3000, 2500),
    ])  # fmt: skip


def mini_apps() -> tuple[App, ...]:
    return (
        App("loose", Requirements(task=TASK, min_accuracy=0.8, latency_slo_ms=400), 0.3),
        App("tight", Requirements(task=TASK, min_accuracy=0.7, latency_slo_ms=40), 0.3),
        App("by-model", Requirements(model="resnet50", latency_slo_ms=100), 0.2),
        App("medium", Requirements(task=TASK, min_accuracy=0.75, latency_slo_ms=150), 0.2),
    )


def write_catalog_csv(catalog: Catalog, path: object) -> None:
    """Write ``catalog`` as a profile table (DESIGN.md schema)."""
    from pathlib import Path

    rows = ["variant,model,task,framework,hardware,cores,max_batch,batch,latency_p50_ms,latency_p99_ms,"
            "load_latency_ms,memory_mb,accuracy,source"]
    for v in catalog:
        for b, p50, p99 in zip(v.batches, v.latency_p50_ms, v.latency_p99_ms):
            rows.append(f"{v.name},{v.model},{v.task},{v.framework},{v.hardware},{v.cores},{v.max_batch},{b},"
                        f"{p50},{p99},{v.load_latency_ms},{v.memory_mb},{v.accuracy},{v.source}")
    Path(str(path)).write_text("\n".join(rows) + "\n")


OBSERVATION = compose_group("policy", "static")["observation"]
"""``policy.observation`` for the test policies these tests define (configs/policy/observation/infaas.yaml)."""
