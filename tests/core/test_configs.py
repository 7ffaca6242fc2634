"""Config builders: every bundled cluster and trace config builds; bad values name their key."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from infaas_core.configs import REPO_ROOT, apps_from_mapping, cluster_from_mapping, resolve_path
from infaas_core.errors import ConfigError
from infaas_core.workload import trace_from_config
from infaas_edge import compose_group, config_dir

CONFIGS = config_dir()  # the installed configs package (configs/ in a checkout)
DEVICE_CLASSES = {"gpu-v100", "gpu-t4", "gpu-a10g", "gpu-l4", "inferentia"}


def _load(path: Path) -> dict[str, Any]:
    d = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(d, dict)
    return d  # type: ignore[return-value]


def _shared_present() -> bool:
    env = os.environ.get("INFAAS_SHARED")
    return (Path(env) if env else REPO_ROOT / ".." / "shared").exists()


@pytest.mark.parametrize("path", sorted((CONFIGS / "cluster").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_cluster_config_builds(path: Path) -> None:
    spec = cluster_from_mapping(compose_group("cluster", path.stem))  # composed, as the CLIs do
    assert spec.instance_types and spec.price_list_date
    for t in spec.instance_types:
        assert set(dict(t.accelerators)) <= DEVICE_CLASSES
        for cls, _ in t.accelerators:
            assert t.accelerator_memory_mb(cls) > 0
    assert path.read_text().startswith("#"), "each cluster yaml opens with comments giving meaning and source"


def test_default_cluster_has_the_papers_types_and_prices() -> None:
    spec = cluster_from_mapping(_load(CONFIGS / "cluster" / "aws_infaas.yaml"))
    prices = {t.name: t.price_usd_per_hour for t in spec.instance_types}
    assert prices == {"m5.2xlarge": 0.384, "p3.2xlarge": 3.06, "inf1.2xlarge": 0.362, "g4dn.xlarge": 0.526, "g5.xlarge": 1.006}
    assert spec.initial_count("m5.2xlarge") == 1 and spec.max_count("m5.2xlarge") == 10
    assert spec.initial_count("p3.2xlarge") == 1 and spec.initial_count("inf1.2xlarge") == 1
    assert spec.type("p3.2xlarge").accelerators == (("gpu-v100", 1),)
    assert [t.name for t in spec.types_offering("gpu-t4")] == ["g4dn.xlarge"]


@pytest.mark.parametrize("path", sorted((CONFIGS / "trace").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_trace_config_builds(path: Path) -> None:
    cfg = _load(path)
    assert cfg.get("name") == path.stem and path.read_text().startswith("#")
    if str(cfg.get("path", "")).startswith("../shared") and not _shared_present():
        pytest.skip("../shared absent: optional public trace")
    if "kind" in cfg and cfg.get("duration_s"):
        cfg["duration_s"] = min(cfg["duration_s"], 30)  # keep the test quick
    t = trace_from_config(cfg, seed=0)
    assert len(t) > 0 and t.name == path.stem


def test_default_trace_is_bursty_2000_qps() -> None:
    cfg = _load(CONFIGS / "trace" / "bursty.yaml")
    assert (cfg["kind"], cfg["rate_qps"], cfg["duration_s"], cfg["cv"]) == ("gamma", 2000, 120, 4)


def _cluster() -> dict[str, Any]:
    return {
        "instance_types": {
            "m5.large": {"price_usd_per_hour": 0.096, "vcpus": 2, "memory_gb": 8, "startup_s": 60},
            "g4dn.xlarge": {"price_usd_per_hour": 0.526, "vcpus": 4, "memory_gb": 16, "startup_s": 90,
                            "accelerators": {"gpu-t4": 1}, "accelerator_memory_gb": {"gpu-t4": 16}},
        },
        "initial_workers": {"m5.large": 1},
        "max_workers": {"m5.large": 3, "g4dn.xlarge": 2},
        "price_list_date": "test",
    }  # fmt: skip


BAD_CLUSTERS = [
    (("instance_types", "m5.large", "vcpus"), 0, "cluster.instance_types.m5.large.vcpus"),
    (("instance_types", "m5.large", "vcpus"), 2.5, "cluster.instance_types.m5.large.vcpus"),
    (("instance_types", "m5.large", "price_usd_per_hour"), -1, "cluster.instance_types.m5.large.price_usd_per_hour"),
    (("instance_types", "m5.large", "price_usd_per_hour"), "cheap", "cluster.instance_types.m5.large.price_usd_per_hour"),
    (("instance_types", "m5.large", "memory_gb"), 0, "cluster.instance_types.m5.large.memory_gb"),
    (("instance_types", "m5.large", "startup_s"), True, "cluster.instance_types.m5.large.startup_s"),
    (("instance_types", "m5.large", "gpus"), 1, "cluster.instance_types.m5.large.gpus"),
    (("instance_types", "g4dn.xlarge", "accelerator_memory_gb"), {}, "cluster.instance_types.g4dn.xlarge.accelerator_memory_gb.gpu-t4"),
    (("instance_types", "g4dn.xlarge", "accelerators"), {"gpu-t4": -1}, "cluster.instance_types.g4dn.xlarge.accelerators.gpu-t4"),
    (("max_workers", "m5.large"), -2, "cluster.max_workers.m5.large"),
    (("initial_workers", "p3.2xlarge"), 1, "cluster.initial_workers.p3.2xlarge"),
    (("regions",), "x", "cluster.regions"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "value", "key"), BAD_CLUSTERS)
def test_bad_cluster_value_names_its_key(where: tuple[str, ...], value: Any, key: str) -> None:
    d = copy.deepcopy(_cluster())
    node = d
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    with pytest.raises(ConfigError) as ei:
        cluster_from_mapping(d)
    assert ei.value.key == key, str(ei.value)


def test_apps_are_built_with_normalised_shares() -> None:
    apps = apps_from_mapping(
        {
            "photo-tagging": {"task": "classification-imagenet-224", "min_accuracy": 0.75, "latency_slo_ms": 200, "share": 0.6},
            "search-thumbs": {"model": "resnet50", "latency_slo_ms": 50, "share": 0.3},
            "pinned": {"variant": "resnet50-onnx-fp32-cpu2-b1", "latency_slo_ms": 100, "share": 0.3, "fixed_variant": "x"},
        }
    )
    assert [a.name for a in apps] == ["photo-tagging", "search-thumbs", "pinned"]
    assert sum(a.share for a in apps) == pytest.approx(1.0) and apps[0].share == pytest.approx(0.5)
    assert apps[0].requirements.form == "task" and apps[1].requirements.model == "resnet50"
    assert apps[2].fixed_variant == "x"
    one = apps_from_mapping({"only": {"model": "m"}})
    assert one[0].share == 1.0 and math.isinf(one[0].requirements.latency_slo_ms)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"task": "t", "share": 0}, "apps.a.share"),
        ({"task": "t", "share": -1}, "apps.a.share"),
        ({"task": "t", "min_accuracy": 1.2}, "apps.a.min_accuracy"),
        ({"task": "t", "latency_slo_ms": 0}, "apps.a.latency_slo_ms"),
        ({"task": "t", "model": "m"}, "apps.a"),
        ({"latency_slo_ms": 10}, "apps.a"),
        ({"task": "t", "slo": 10}, "apps.a.slo"),
        ({"task": 5}, "apps.a.task"),
    ],
)
def test_bad_app_value_names_its_key(spec: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as ei:
        apps_from_mapping({"a": spec})
    assert ei.value.key == key, str(ei.value)


def test_resolve_path_looks_in_cwd_then_base_dir_then_repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "f.txt").write_text("b")
    assert resolve_path("f.txt", tmp_path / "base") == (tmp_path / "base" / "f.txt").resolve()
    (tmp_path / "f.txt").write_text("c")
    assert resolve_path("f.txt", tmp_path / "base") == (tmp_path / "f.txt").resolve()
    assert resolve_path("traces/README.md") == (REPO_ROOT / "traces" / "README.md").resolve()
    with pytest.raises(ConfigError, match=r"^catalog.path: 'nope.csv' not found"):
        resolve_path("nope.csv", key="catalog.path")
    assert resolve_path("nope.csv", must_exist=False) == tmp_path / "nope.csv"
