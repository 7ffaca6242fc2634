"""The data model: latency interpolation, the Requirements rule, instance types and clusters."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infaas_core.errors import ConfigError
from infaas_core.model import ClusterSpec, InstanceType, Requirements, Variant, make_variant


def _variant(points: dict[int, tuple[float, float]], max_batch: int) -> Variant:
    return make_variant(
        name="v", model="m", task="t", framework="onnx", hardware="cpu", cores=1,
        max_batch=max_batch, load_latency_ms=0.0, memory_mb=0.0, accuracy=0.5,
        source="modeled:test", points=points,
    )  # fmt: skip


@st.composite
def _monotone_profiles(draw: st.DrawFn) -> tuple[dict[int, tuple[float, float]], int]:
    max_batch = draw(st.integers(1, 64))
    batches = sorted(draw(st.sets(st.integers(1, max_batch), min_size=1, max_size=8)))
    p50 = sorted(draw(st.lists(st.floats(0.01, 1e4), min_size=len(batches), max_size=len(batches))))
    gap = sorted(draw(st.lists(st.floats(0.0, 1e3), min_size=len(batches), max_size=len(batches))))
    # p99 = p50 + a non-decreasing gap: monotone in batch and >= p50 everywhere
    return {b: (a, a + g) for b, a, g in zip(batches, p50, gap)}, max_batch


@settings(max_examples=200, deadline=None)
@given(_monotone_profiles())
def test_interpolation_monotone_exact_and_bounded(profile: tuple[dict[int, tuple[float, float]], int]) -> None:
    """Monotone measurements give monotone dense tables, exact at measured batches, and
    ``latency_ms`` refuses batches outside 1..max_batch (never extrapolated past it)."""
    points, max_batch = profile
    v = _variant(points, max_batch)
    assert len(v.p50_ms_by_batch) == max_batch == len(v.p99_ms_by_batch)
    for table in (v.p50_ms_by_batch, v.p99_ms_by_batch):
        assert all(a <= b * (1 + 1e-12) for a, b in itertools.pairwise(table))
    for b, (p50, p99) in points.items():
        assert v.latency_ms(b) == p50 and v.latency_ms(b, "p99") == p99
    first = min(points)
    for b in range(1, first):  # below the smallest measurement: the smallest measured value
        assert v.latency_ms(b) == points[first][0]
    for b in range(min(points), max(points) + 1):  # p99 >= p50 wherever both are interpolated
        assert v.latency_ms(b, "p99") >= v.latency_ms(b) - 1e-9
    with pytest.raises(ValueError, match=r"outside 1\.\.max_batch"):
        v.latency_ms(max_batch + 1)
    with pytest.raises(ValueError, match=r"outside 1\.\.max_batch"):
        v.latency_ms(0)


def test_interpolation_between_and_past_measured_points() -> None:
    v = _variant({2: (10.0, 20.0), 6: (30.0, 40.0)}, max_batch=8)
    assert v.latency_ms(1) == 10.0  # below: the smallest measured value
    assert v.latency_ms(4) == pytest.approx(20.0)  # linear between 2 and 6
    assert v.latency_ms(8) == pytest.approx(40.0)  # past the last point: its slope (5 ms/batch)
    assert v.throughput_qps(8) == pytest.approx(8 * 1000.0 / 40.0)
    assert v.batch1_latency_ms == 10.0


def test_make_variant_refuses_no_points_and_points_past_max_batch() -> None:
    with pytest.raises(ValueError, match="no measured batch"):
        _variant({}, max_batch=4)
    with pytest.raises(ValueError, match="measured batch 8 > max_batch 4"):
        _variant({8: (1.0, 2.0)}, max_batch=4)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"task": "t", "model": "m"}, {"model": "m", "variant": "v"}, {"task": "t", "model": "m", "variant": "v"}],
)
def test_requirements_need_exactly_one_of_task_model_variant(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="exactly one of task / model / variant"):
        Requirements(**kwargs)  # type: ignore[arg-type]


def test_requirements_forms_and_bounds() -> None:
    assert Requirements(task="t", min_accuracy=0.7, latency_slo_ms=100).form == "task"
    assert Requirements(model="m").target == "m"
    r = Requirements(variant="v")
    assert r.form == "variant" and math.isinf(r.latency_slo_ms)
    with pytest.raises(ConfigError, match="min_accuracy"):
        Requirements(task="t", min_accuracy=1.5)
    with pytest.raises(ConfigError, match="latency_slo_ms"):
        Requirements(task="t", latency_slo_ms=0)


def _gpu_type() -> InstanceType:
    return InstanceType(
        name="p3.2xlarge", price_usd_per_hour=3.06, vcpus=8, memory_gb=61, startup_s=90,
        accelerators=(("gpu-v100", 1),), accelerator_memory_gb=(("gpu-v100", 16.0),),
    )  # fmt: skip


def test_instance_type_offers_cpu_and_its_accelerators() -> None:
    t = _gpu_type()
    assert t.device_classes == ("cpu", "gpu-v100")
    assert t.offers("cpu") and t.offers("gpu-v100") and not t.offers("inferentia")
    assert t.accelerator_memory_mb("gpu-v100") == 16 * 1024
    assert t.price_usd_per_s == pytest.approx(3.06 / 3600)


def test_cluster_spec_validates_worker_counts() -> None:
    cpu = InstanceType(name="m5.2xlarge", price_usd_per_hour=0.384, vcpus=8, memory_gb=32, startup_s=60)
    types = (cpu, _gpu_type())
    spec = ClusterSpec(types, initial_workers=(("m5.2xlarge", 1),), max_workers=(("m5.2xlarge", 4),))
    assert spec.max_count("p3.2xlarge") == 0 and spec.initial_count("m5.2xlarge") == 1
    assert [t.name for t in spec.types_offering("cpu")] == ["m5.2xlarge", "p3.2xlarge"]  # cheapest first
    assert [t.name for t in spec.types_offering("gpu-v100")] == ["p3.2xlarge"]
    with pytest.raises(ConfigError, match=r"cluster.initial_workers.c5.xlarge"):
        ClusterSpec(types, initial_workers=(("c5.xlarge", 1),), max_workers=())
    with pytest.raises(ConfigError, match=r"cluster.max_workers.m5.2xlarge: must be >= 0"):
        ClusterSpec(types, initial_workers=(), max_workers=(("m5.2xlarge", -1),))
    with pytest.raises(ConfigError, match="exceeds max_workers"):
        ClusterSpec(types, initial_workers=(("m5.2xlarge", 3),), max_workers=(("m5.2xlarge", 2),))
    with pytest.raises(ConfigError, match="unknown instance type"):
        spec.type("g5.xlarge")
