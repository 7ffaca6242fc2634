"""The catalog's indexes (INFaaS's metadata store) and latency lookups."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from infaas_core.catalog import Catalog, load_catalog
from infaas_core.errors import ConfigError, InputError
from infaas_core.model import Variant, make_variant


def _v(name: str, model: str, task: str, acc: float, b1_ms: float, hw: str = "cpu", max_batch: int = 8) -> Variant:
    return make_variant(
        name=name, model=model, task=task, framework="onnx", hardware=hw, cores=1,
        max_batch=max_batch, load_latency_ms=100.0, memory_mb=50.0, accuracy=acc,
        source="modeled:test", points={1: (b1_ms, b1_ms * 1.2), max_batch: (b1_ms * max_batch / 2, b1_ms * max_batch)},
    )  # fmt: skip


def _catalog() -> Catalog:
    return Catalog(
        [
            _v("r50-cpu", "resnet50", "cls", 0.76, 40.0),
            _v("r50-gpu", "resnet50", "cls", 0.76, 5.0, hw="gpu-t4"),
            _v("r18-cpu", "resnet18", "cls", 0.70, 15.0),
            _v("mnv2-cpu", "mobilenet", "cls", 0.72, 8.0),
            _v("bert-cpu", "bert", "nlp", 0.90, 60.0),
        ]
    )


def test_by_task_sorted_by_accuracy_then_batch1_latency() -> None:
    c = _catalog()
    assert [v.name for v in c.by_task("cls")] == ["r18-cpu", "mnv2-cpu", "r50-gpu", "r50-cpu"]
    assert c.by_task("unknown") == ()
    assert c.tasks == ("cls", "nlp")


def test_by_model_sorted_by_batch1_latency() -> None:
    c = _catalog()
    assert [v.name for v in c.by_model("resnet50")] == ["r50-gpu", "r50-cpu"]
    assert [v.name for v in c.by_batch1_latency()][:2] == ["r50-gpu", "mnv2-cpu"]


def test_latency_lookup_at_any_batch_and_refusal_past_max_batch() -> None:
    c = _catalog()
    # r50-cpu: batch 1 -> 40 ms, batch 8 -> 160 ms, linear between
    for b in range(1, 9):
        assert c.latency_ms("r50-cpu", b) == pytest.approx(40.0 + (160.0 - 40.0) * (b - 1) / 7)
    assert c.latency_ms("r50-cpu", 8, "p99") == pytest.approx(320.0)
    with pytest.raises(ValueError, match=r"outside 1\.\.max_batch"):
        c.latency_ms("r50-cpu", 9)
    with pytest.raises(ConfigError, match="unknown variant"):
        c.get("nope")


def test_duplicate_variant_names_are_rejected() -> None:
    with pytest.raises(ConfigError, match="duplicate variant name"):
        Catalog([_v("a", "m", "t", 0.5, 1.0), _v("a", "m", "t", 0.6, 2.0)])


def test_subset_index_and_hardware() -> None:
    c = _catalog()
    assert c.hardware_classes == ("cpu", "gpu-t4")
    assert [v.name for v in c.cpu_variants()] == ["r50-cpu", "r18-cpu", "mnv2-cpu", "bert-cpu"]
    s = c.subset(["r18-cpu", "bert-cpu"])
    assert len(s) == 2 and "r18-cpu" in s and "r50-cpu" not in s
    assert [c.index(v.name) for v in c] == list(range(len(c)))


def test_load_catalog_reads_the_profile_table(tmp_path: Path) -> None:
    p = tmp_path / "cat.csv"
    p.write_text(
        "variant,model,task,framework,hardware,cores,max_batch,batch,latency_p50_ms,latency_p99_ms,"
        "load_latency_ms,memory_mb,accuracy,source\n"
        "a,m,t,onnx,cpu,1,4,1,2.0,3.0,10,20,0.5,measured:here:2026-11-28\n"
        "a,m,t,onnx,cpu,1,4,4,5.0,6.0,10,20,0.5,measured:here:2026-11-28\n",
        encoding="utf-8",
    )
    c = load_catalog(p)
    assert c.source_path == str(p) and c.latency_ms("a", 2) == pytest.approx(3.0)
    p.write_text(p.read_text().replace("5.0,6.0", "5.0,4.0"), encoding="utf-8")
    with pytest.raises(InputError, match=r":3: column 'latency_p99_ms': p99 4.0 < p50 5.0"):
        load_catalog(p)


@pytest.mark.shared
def test_proteus_reference_profiles_load_as_a_catalog() -> None:
    env = os.environ.get("INFAAS_SHARED")
    shared = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared"
    path = shared / "reference" / "proteus_profiles" / "aggregate_profiled.csv"
    if not path.exists():
        pytest.skip(f"{path} absent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = load_catalog(path)
    assert len(c) == 138  # 98 + the 40 GPU vision variants whose p99 is estimated (p50 only)
    gpu_vision = [v for v in c.by_task("classification-imagenet-224") if v.hardware != "cpu"]
    assert len(gpu_vision) == 44 and {v.hardware for v in gpu_vision} == {"gpu-pascal", "gpu-ampere"}
    cls = c.by_task("classification-imagenet-224")
    assert [v.accuracy for v in cls] == sorted(v.accuracy for v in cls)
    assert cls[0].model == "mobilenet0.25" and cls[-1].model == "resnest269"
    r50 = c.get("resnet50_v1-onnxruntime_cpu")
    assert r50.max_batch == 16 and r50.accuracy == pytest.approx(0.7736)
    assert r50.latency_ms(3) == pytest.approx((r50.latency_ms(2) + r50.latency_ms(4)) / 2)
