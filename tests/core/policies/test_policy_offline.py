"""The offline rule (infaas_core.policies.offline): the original's variant choice, worker
choice and run condition (INFAAS.md "Offline queries"), on hand-built views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from infaas_core.catalog import Catalog, load_catalog
from infaas_core.configs import REPO_ROOT
from infaas_core.errors import ConfigError
from infaas_core.model import ClusterSpec, InstanceType, Variant, make_variant
from infaas_core.policies.offline import (
    OfflineConfig,
    may_run_offline,
    offline_config_from_mapping,
    offline_variant,
    offline_worker,
)
from infaas_core.view import InstanceState, WorkerState
from infaas_core.view_snapshot import SnapshotView

TASK = "classification-test"
CFG = OfflineConfig(max_cpu_utilisation=0.4, batch=4, framework="torch-fp32")


def _v(name: str, framework: str, hw: str, acc: float, max_batch: int, b1_ms: float,
       cores: int = 1, mem_mb: float = 100.0) -> Variant:
    return make_variant(
        name=name, model=name.split("-")[0], task=TASK, framework=framework, hardware=hw,
        cores=cores, max_batch=max_batch, load_latency_ms=100.0, memory_mb=mem_mb, accuracy=acc,
        source="modeled:test-fixture", points={1: (b1_ms, b1_ms * 1.5)},
    )


def catalog() -> Catalog:
    return Catalog([
        _v("small-onnx", "onnx-fp32", "cpu", 0.60, 8, 1.0),        # wrong framework
        _v("small-torchgpu", "torch-fp32", "gpu-v100", 0.60, 8, 0.5),  # not CPU
        _v("small-torch-b1", "torch-fp32", "cpu", 0.60, 1, 2.0),    # cannot hold a batch of 4
        _v("small-torch-b8", "torch-fp32", "cpu", 0.60, 8, 3.0),
        _v("small-torch-slow", "torch-fp32", "cpu", 0.60, 8, 9.0),  # same accuracy, slower
        _v("small-torch-c2", "torch-fp32", "cpu", 0.60, 4, 1.5, cores=2),  # fastest, but 2 cores
        _v("small-torch-b4", "torch-fp32", "cpu", 0.60, 4, 4.0),   # 1 core, the smallest batch that holds 4
        _v("big-torch", "torch-fp32", "cpu", 0.80, 8, 20.0, cores=4, mem_mb=4000.0),
    ])


M5 = InstanceType("m5.xlarge", 0.192, 4, 16.0, 60.0)
P3 = InstanceType("p3.2xlarge", 3.06, 8, 61.0, 90.0, (("gpu-v100", 1),), (("gpu-v100", 16.0),))
SPEC = ClusterSpec((M5, P3), (("m5.xlarge", 1),), (("m5.xlarge", 4), ("p3.2xlarge", 2)))


def view() -> SnapshotView:
    return SnapshotView(catalog(), SPEC)


# -- variant ----------------------------------------------------------------------------
def test_variant_is_first_cpu_variant_of_the_framework_in_accuracy_order() -> None:
    """Least accurate meeting the floor; then fewest cores, smallest max_batch holding a batch."""
    v = offline_variant(catalog(), TASK, 0.5, CFG)
    assert v is not None and v.name == "small-torch-b4"
    without = catalog().subset(v.name for v in catalog() if v.name != "small-torch-b4")
    v = offline_variant(without, TASK, 0.5, CFG)
    assert v is not None and v.name == "small-torch-b8"  # fastest at batch 4 of the 1-core, max_batch-8 ones


def test_variant_meets_the_accuracy_floor() -> None:
    v = offline_variant(catalog(), TASK, 0.7, CFG)
    assert v is not None and v.name == "big-torch"
    assert offline_variant(catalog(), TASK, 0.9, CFG) is None


def test_variant_none_for_unknown_task_or_framework() -> None:
    assert offline_variant(catalog(), "no-such-task", 0.0, CFG) is None
    cfg = OfflineConfig(max_cpu_utilisation=0.4, batch=4, framework="tensorflow-cpu")
    assert offline_variant(catalog(), TASK, 0.0, cfg) is None


def test_variant_must_hold_one_offline_batch() -> None:
    cfg = OfflineConfig(max_cpu_utilisation=0.4, batch=1, framework="torch-fp32")
    v = offline_variant(catalog(), TASK, 0.5, cfg)
    assert v is not None and v.name == "small-torch-b1"  # faster at batch 1, now allowed


@pytest.mark.parametrize("path", ["catalogs/imagenet.csv", "catalogs/digits.csv"])
def test_configured_framework_matches_real_catalog_variants(path: str) -> None:
    cfg = offline_config_from_mapping(_yaml("configs/config.yaml")["offline"])
    cat = load_catalog(REPO_ROOT / path)
    for task in cat.tasks:
        v = offline_variant(cat, task, 0.0, cfg)
        assert v is not None and v.is_cpu and v.framework == cfg.framework


# -- worker -----------------------------------------------------------------------------
def test_worker_prefers_cpu_only_then_lowest_cpu_utilisation() -> None:
    vw = view()
    gpu = vw.add_worker("p3.2xlarge", utilization={"cpu": 0.0})
    busy = vw.add_worker("m5.xlarge", utilization={"cpu": 0.5})
    calm = vw.add_worker("m5.xlarge", utilization={"cpu": 0.1})
    v = catalog().get("small-torch-b8")
    w = offline_worker(vw, v)
    assert w is not None and w.id == calm.id
    calm.state = WorkerState.STOPPING
    w = offline_worker(vw, v)
    assert w is not None and w.id == busy.id
    busy.state = WorkerState.STARTING
    w = offline_worker(vw, v)
    assert w is not None and w.id == gpu.id  # an accelerator worker only when no CPU-only one


def test_worker_ties_go_to_lower_id() -> None:
    vw = view()
    a = vw.add_worker("m5.xlarge", utilization={"cpu": 0.2})
    vw.add_worker("m5.xlarge", utilization={"cpu": 0.2})
    w = offline_worker(vw, catalog().get("small-torch-b8"))
    assert w is not None and w.id == a.id


def test_worker_must_hold_or_fit_the_variant() -> None:
    vw = view()
    full = vw.add_worker("m5.xlarge", utilization={"cpu": 0.0})
    holder = vw.add_worker("m5.xlarge", utilization={"cpu": 0.3})
    vw.add_instance(full.id, "small-torch-slow", replicas=4)       # all 4 cores taken
    big = catalog().get("big-torch")
    w = offline_worker(vw, big)
    assert w is not None and w.id == holder.id
    vw.add_instance(holder.id, "big-torch")                         # holds it, no room left
    w = offline_worker(vw, big)
    assert w is not None and w.id == holder.id
    inst = holder.instances[0]
    inst.state = InstanceState.UNLOADING
    assert offline_worker(vw, big) is None


def test_worker_none_without_running_workers() -> None:
    vw = view()
    vw.add_worker("m5.xlarge", state=WorkerState.STARTING)
    assert offline_worker(vw, catalog().get("small-torch-b8")) is None


# -- may run ----------------------------------------------------------------------------
def test_may_run_at_or_below_the_utilisation_bound() -> None:
    vw = view()
    w = vw.add_worker("m5.xlarge", utilization={"cpu": 0.4})
    assert may_run_offline(w, CFG)
    w.utilization["cpu"] = 0.41
    assert not may_run_offline(w, CFG)
    w.utilization["cpu"] = 0.0
    assert may_run_offline(w, CFG)


@pytest.mark.parametrize("flag", ["overloaded", "interfered"])
def test_may_not_run_while_any_instance_is_flagged(flag: str) -> None:
    vw = view()
    w = vw.add_worker("m5.xlarge", utilization={"cpu": 0.1})
    vw.add_instance(w.id, "small-torch-b8")
    other = vw.add_instance(w.id, "small-onnx")
    assert may_run_offline(w, CFG)
    setattr(other, flag, True)
    assert not may_run_offline(w, CFG)
    setattr(other, flag, False)
    assert may_run_offline(w, CFG)


# -- config -----------------------------------------------------------------------------
def _yaml(rel: str) -> dict[str, Any]:
    return yaml.safe_load(Path(REPO_ROOT / rel).read_text())


@pytest.mark.parametrize("rel", ["configs/config.yaml", "configs/serve.yaml"])
def test_config_blocks_are_the_originals_constants(rel: str) -> None:
    cfg = offline_config_from_mapping(_yaml(rel)["offline"])
    assert cfg == OfflineConfig(max_cpu_utilisation=0.4, batch=4, framework="torch-fp32")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"max_cpu_utilisation": 1.5, "batch": 4, "framework": "torch-fp32"}, "offline.max_cpu_utilisation"),
        ({"max_cpu_utilisation": -0.1, "batch": 4, "framework": "torch-fp32"}, "offline.max_cpu_utilisation"),
        ({"max_cpu_utilisation": 0.4, "batch": 0, "framework": "torch-fp32"}, "offline.batch"),
        ({"max_cpu_utilisation": 0.4, "batch": 4, "framework": " "}, "offline.framework"),
        ({"max_cpu_utilisation": 0.4, "batch": 4}, "offline.framework"),
        ({"max_cpu_utilisation": 0.4, "batch": 4, "framework": "x", "extra": 1}, "offline.extra"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        offline_config_from_mapping(data)
    assert e.value.key == key


# -- properties ----------------------------------------------------------------------------
_FRAMEWORKS = ("torch-fp32", "onnx-fp32")
_HW = ("cpu", "gpu-v100")


@st.composite
def _catalogs(draw: st.DrawFn) -> Catalog:
    n = draw(st.integers(1, 8))
    vs = []
    for i in range(n):
        vs.append(_v(f"m{i}-x", draw(st.sampled_from(_FRAMEWORKS)), draw(st.sampled_from(_HW)),
                     draw(st.sampled_from((0.5, 0.6, 0.7))), draw(st.sampled_from((1, 4, 8))),
                     draw(st.floats(0.5, 50.0)), cores=draw(st.integers(1, 4))))
    return Catalog(vs)


@given(cat=_catalogs(), floor=st.sampled_from((0.0, 0.55, 0.65, 0.8)))
def test_variant_is_the_minimum_of_the_eligible(cat: Catalog, floor: float) -> None:
    """Whatever the catalog: the choice is eligible, and no eligible variant ranks before it."""
    eligible = [v for v in cat if v.is_cpu and v.framework == CFG.framework and v.accuracy >= floor
                and v.max_batch >= CFG.batch]
    got = offline_variant(cat, TASK, floor, CFG)
    if not eligible:
        assert got is None
        return
    assert got in eligible
    rank = lambda v: (v.accuracy, v.cores, v.max_batch, v.latency_ms(CFG.batch), v.name)  # noqa: E731
    assert all(rank(got) <= rank(v) for v in eligible)


@given(utils=st.lists(st.tuples(st.sampled_from(("m5.xlarge", "p3.2xlarge")), st.floats(0.0, 1.0)),
                      min_size=1, max_size=6))
def test_worker_is_cpu_only_first_then_least_utilised(utils: list[tuple[str, float]]) -> None:
    vw = view()
    ws = [vw.add_worker(t, utilization={"cpu": u}) for t, u in utils]
    w = offline_worker(vw, catalog().get("small-torch-b8"))
    assert w is not None
    key = lambda x: (x.instance_type.name != "m5.xlarge", x.utilization["cpu"], x.id)  # noqa: E731
    assert key(w) == min(key(x) for x in ws)
