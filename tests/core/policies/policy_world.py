"""A small hand-built world for policy tests: a catalog with CPU, gpu-v100 and inferentia
variants of three image-classification models, a three-type cluster, and helpers to
build policies from their composed config (infaas_edge, as the command lines do) with
overrides. No simulator anywhere."""

from __future__ import annotations

import functools
from typing import Any

from infaas_core.catalog import Catalog
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements, make_variant
from infaas_core.policies import PolicyContext, make_policy
from infaas_core.policies.base import Policy
from infaas_core.view_snapshot import SnapshotView
from infaas_edge import merge, policy_params

TASK = "classification-imagenet-224"


def _v(name: str, model: str, hw: str, cores: int, max_batch: int, acc: float, load_ms: float,
       mem_mb: float, points: dict[int, float]) -> Any:
    return make_variant(
        name=name, model=model, task=TASK, framework="test", hardware=hw, cores=cores,
        max_batch=max_batch, load_latency_ms=load_ms, memory_mb=mem_mb, accuracy=acc,
        source="modeled:test-fixture", points={b: (p, p * 1.5) for b, p in points.items()},
    )


def catalog() -> Catalog:
    return Catalog([
        _v("resnet50-cpu", "resnet50", "cpu", 4, 8, 0.76, 2000, 1000, {1: 120, 8: 600}),
        _v("resnet50-trt-b1", "resnet50", "gpu-v100", 1, 1, 0.76, 5000, 2000, {1: 8}),
        _v("resnet50-trt-b8", "resnet50", "gpu-v100", 1, 8, 0.76, 6000, 3000, {1: 10, 8: 30}),
        _v("resnet50-inf", "resnet50", "inferentia", 1, 1, 0.76, 4000, 1500, {1: 15}),
        _v("mobilenet-cpu", "mobilenet", "cpu", 2, 8, 0.70, 1000, 300, {1: 30, 8: 150}),
        _v("mobilenet-trt-b1", "mobilenet", "gpu-v100", 1, 1, 0.70, 3000, 800, {1: 3}),
        _v("resnet152-trt-b1", "resnet152", "gpu-v100", 1, 1, 0.80, 8000, 4000, {1: 25}),
        _v("resnet152-cpu", "resnet152", "cpu", 8, 4, 0.80, 3000, 2500, {1: 400, 4: 1400}),
    ])


M5 = InstanceType("m5.2xlarge", 0.384, 8, 32.0, 60.0)
P3 = InstanceType("p3.2xlarge", 3.06, 8, 61.0, 90.0, (("gpu-v100", 1),), (("gpu-v100", 16.0),))
INF1 = InstanceType("inf1.2xlarge", 0.362, 8, 16.0, 90.0, (("inferentia", 1),), (("inferentia", 8.0),))


def cluster(initial: dict[str, int] | None = None, maximum: dict[str, int] | None = None) -> ClusterSpec:
    initial = initial or {"m5.2xlarge": 1, "p3.2xlarge": 1}
    maximum = maximum or {"m5.2xlarge": 4, "p3.2xlarge": 3, "inf1.2xlarge": 2}
    return ClusterSpec((M5, P3, INF1), tuple(initial.items()), tuple(maximum.items()))


APPS = (
    App("photos", Requirements(task=TASK, min_accuracy=0.75, latency_slo_ms=200), 0.5),
    App("search", Requirements(model="mobilenet", latency_slo_ms=50), 0.5),
)


def world(spec: ClusterSpec | None = None, workers: tuple[str, ...] = ("m5.2xlarge", "p3.2xlarge")) -> tuple[PolicyContext, SnapshotView]:
    """Context and a view with one running worker per entry of ``workers`` (ids 0, 1, ...)."""
    spec = spec or cluster()
    cat = catalog()
    view = SnapshotView(cat, spec)
    for t in workers:
        view.add_worker(t)
    return PolicyContext(cat, spec, APPS), view


@functools.cache
def _composed(name: str) -> dict[str, Any]:
    return policy_params(name)  # composing takes ~0.1 s; the tests build the same few policies often


def params(name: str, **overrides: Any) -> dict[str, Any]:
    """``configs/policy/<name>.yaml`` composed, with nested overrides given as dotted keys."""
    updates: dict[str, Any] = {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = updates
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return merge(_composed(name), updates, key="policy")


def build(name: str, ctx: PolicyContext, **overrides: Any) -> Policy:
    """``make_policy`` on the composed config with dotted-key overrides: ``build("infaas", ctx,
    **{"selection.ordering": "cost"})``."""
    return make_policy(name, ctx, params(name, **overrides))


def req(**kw: Any) -> Requirements:
    if not any(k in kw for k in ("task", "model", "variant")):
        kw["task"] = TASK
    return Requirements(**kw)
