"""Start-up validation (infaas_core/control/startup.py): a run that cannot work fails before
it starts with one ConfigError naming the key; catalog rows the run does not need are fine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from infaas_core.catalog import Catalog, load_catalog
from infaas_core.configs import REPO_ROOT, apps_from_mapping, cluster_from_mapping
from infaas_core.control.startup import check_run
from infaas_core.errors import ConfigError
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements, make_variant

TASK = "classification-imagenet-224"
M5 = InstanceType("m5.2xlarge", 0.384, 8, 32.0, 60.0)
P3 = InstanceType("p3.2xlarge", 3.06, 8, 61.0, 90.0, (("gpu-v100", 1),), (("gpu-v100", 16.0),))
PINNED = {"name": "clipper_plus", "fixed_variants": {}}
UNPINNED = {"name": "infaas"}


def _v(name: str, model: str, hw: str, cores: int = 1, mem_mb: float = 500.0, task: str = TASK) -> Any:
    return make_variant(name=name, model=model, task=task, framework="test", hardware=hw, cores=cores,
                        max_batch=1, load_latency_ms=100.0, memory_mb=mem_mb, accuracy=0.76,
                        source="modeled:test", points={1: (10.0, 15.0)})  # fmt: skip


def catalog() -> Catalog:
    return Catalog([
        _v("resnet50-cpu", "resnet50", "cpu", cores=2),
        _v("resnet50-trt", "resnet50", "gpu-v100"),
        _v("bert-trt", "bert", "gpu-v100", task="text-classification"),
        _v("huge-cpu", "huge", "cpu", cores=64, task="huge-task"),
    ])


def cluster(initial: dict[str, int] | None = None, maximum: dict[str, int] | None = None,
            types: tuple[InstanceType, ...] = (M5, P3)) -> ClusterSpec:  # fmt: skip
    initial = {"m5.2xlarge": 1} if initial is None else initial
    maximum = {"m5.2xlarge": 4, "p3.2xlarge": 2} if maximum is None else maximum
    return ClusterSpec(types, tuple(initial.items()), tuple(maximum.items()))


CPU_ONLY = {"maximum": {"m5.2xlarge": 4, "p3.2xlarge": 0}}


def app(name: str = "a", fixed_variant: str | None = None, **req: Any) -> App:
    req.setdefault("latency_slo_ms", 200.0)
    return App(name, Requirements(**req), 1.0, fixed_variant)


def _fails(key: str, apps: tuple[App, ...], spec: ClusterSpec | None = None,
           policy: dict[str, Any] | None = None) -> str:  # fmt: skip
    with pytest.raises(ConfigError) as err:
        check_run(catalog(), cluster() if spec is None else spec, apps, policy or UNPINNED)
    assert err.value.key == key
    assert str(err.value).startswith(f"{key}: ") and "\n" not in str(err.value)
    return err.value.reason


def test_a_run_with_every_name_known_and_placeable_passes():
    """Rule: task, model and variant forms that the catalog provides on offered hardware pass,
    under a pinned and an unpinned policy."""
    apps = (app("t", task=TASK), app("m", model="resnet50"), app("v", variant="resnet50-trt"))
    for policy in (UNPINNED, PINNED, None):
        check_run(catalog(), cluster(), apps, policy)


@pytest.mark.parametrize(("req", "key", "known"), [
    ({"task": "nope"}, "apps.a.task", "classification-imagenet-224, huge-task, text-classification"),
    ({"model": "nope"}, "apps.a.model", "bert, huge, resnet50"),
    ({"variant": "nope"}, "apps.a.variant", "bert-trt, huge-cpu, resnet50-cpu, resnet50-trt"),
])  # fmt: skip
def test_an_application_naming_what_no_row_provides_fails_listing_the_known_names(req, key, known):
    """Rule: a task / model / variant nothing in the catalog provides fails at its key, and
    the reason lists the catalog's names."""
    reason = _fails(key, (app(**req),))
    assert "'nope'" in reason and reason.endswith(f"known: {known}")


def test_the_known_names_are_shortened():
    """Rule: the list of known names stops after a few and says how many there are."""
    many = Catalog([_v(f"v{i:02d}", f"m{i:02d}", "cpu") for i in range(30)])
    with pytest.raises(ConfigError, match=r"known: m00, m01, .*m07, \.\.\. \(30 in all\)$"):
        check_run(many, cluster(), (app(model="nope"),), UNPINNED)


def test_an_application_whose_rows_are_all_on_hardware_the_cluster_lacks_fails():
    """Rule: a task whose only rows are on gpu-v100 fails on a cluster where no type with
    max_workers > 0 offers it; the reason names both sides' hardware."""
    reason = _fails("apps.a.task", (app(task="text-classification"),), cluster(**CPU_ONLY))
    assert "bert-trt runs only on gpu-v100" in reason and "the cluster offers cpu" in reason
    reason = _fails("apps.a.variant", (app(variant="resnet50-trt"),), cluster(**CPU_ONLY))
    assert "gpu-v100" in reason


def test_rows_the_run_does_not_need_may_be_on_hardware_no_type_offers():
    """Rule: a catalog row on unoffered hardware is fine while the run does not need it:
    resnet50 has a CPU row, and nobody asks for bert."""
    check_run(catalog(), cluster(**CPU_ONLY), (app(task=TASK), app("m", model="resnet50")), UNPINNED)


def test_a_pinned_variant_must_exist_and_be_placeable_when_the_policy_pins():
    """Rule: under a pinning policy the pin (policy.fixed_variants, else the app's
    fixed_variant) is what the run needs: unknown or on unoffered hardware, it fails at the
    pin's key; the task's CPU rows do not rescue it."""
    pinned_gpu = (app(task=TASK, fixed_variant="resnet50-trt"),)
    reason = _fails("apps.a.fixed_variant", pinned_gpu, cluster(**CPU_ONLY), PINNED)
    assert "resnet50-trt runs only on gpu-v100" in reason
    policy = {"name": "static", "fixed_variants": {"a": "resnet50-trt"}}
    _fails("policy.fixed_variants.a", (app(task=TASK),), cluster(**CPU_ONLY), policy)
    policy = {"name": "static", "fixed_variants": {"a": "nope"}}
    assert "unknown variant 'nope'" in _fails("policy.fixed_variants.a", (app(task=TASK),), policy=policy)
    _fails("apps.a.fixed_variant", (app(task=TASK, fixed_variant="nope"),), policy=PINNED)
    # policy.fixed_variants wins over the app's own pin
    check_run(catalog(), cluster(**CPU_ONLY), pinned_gpu, {"name": "static", "fixed_variants": {"a": "resnet50-cpu"}})


def test_a_policy_that_does_not_pin_ignores_fixed_variant():
    """Rule: infaas never reads fixed_variant, so a pin it would not use is not checked."""
    check_run(catalog(), cluster(**CPU_ONLY), (app(task=TASK, fixed_variant="resnet50-trt"),), UNPINNED)
    check_run(catalog(), cluster(), (app(task=TASK, fixed_variant="nope"),), UNPINNED)


def test_a_cluster_where_every_type_has_max_workers_zero_fails():
    """Rule: no type may ever run a worker -> cluster.max_workers."""
    reason = _fails("cluster.max_workers", (app(task=TASK),), cluster({}, {"m5.2xlarge": 0, "p3.2xlarge": 0}))
    assert "never run a worker" in reason and "m5.2xlarge, p3.2xlarge" in reason
    # a type left out of max_workers may run its initial workers
    check_run(catalog(), cluster({"m5.2xlarge": 1}, {}), (app(task=TASK),), UNPINNED)


def test_a_cluster_no_type_of_which_can_hold_what_an_application_needs_fails():
    """Rule: hardware offered but no type with max_workers > 0 can hold one replica on an
    empty worker (can_host: 64 cores on 8-vCPU machines; 20 GB on a 16 GB device)."""
    reason = _fails("cluster.instance_types", (app(task="huge-task"),))
    assert "'a'" in reason and "huge-cpu, needs 64 cores" in reason
    big = Catalog([_v("big-trt", "big", "gpu-v100", mem_mb=20 * 1024)])
    with pytest.raises(ConfigError, match=r"^cluster\.instance_types: .*20480 MB of one gpu-v100 device"):
        check_run(big, cluster(), (app(variant="big-trt"),), UNPINNED)


def test_initial_workers_above_max_workers_fail():
    """Rule: initial workers past max_workers fail (ClusterSpec refuses them when built; the
    check repeats it for a spec built another way)."""
    spec = cluster()
    object.__setattr__(spec, "initial_workers", (("m5.2xlarge", 5),))
    _fails("cluster.initial_workers.m5.2xlarge", (app(task=TASK),), spec)


def test_without_a_cluster_only_the_names_are_checked():
    """Rule: cluster=None (the load generator) checks names, not placement."""
    check_run(catalog(), None, (app(task="text-classification"),))
    with pytest.raises(ConfigError, match=r"^apps\.a\.task: "):
        check_run(catalog(), None, (app(task="nope"),))


# -- the committed configs -------------------------------------------------------------------
def _yaml(group: str, name: str) -> Any:
    return OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "configs" / group / f"{name}.yaml"), resolve=True)


@pytest.fixture(scope="module")
def imagenet() -> Catalog:
    return load_catalog(REPO_ROOT / "catalogs" / "imagenet.csv")


@pytest.mark.parametrize("apps", ["default", "infaas_paper", "single", "tiny"])
@pytest.mark.parametrize("policy", [UNPINNED, PINNED])
def test_the_committed_scenarios_pass(imagenet: Catalog, apps: str, policy: dict[str, Any]) -> None:
    """The default cluster runs every committed imagenet application mix, pinned or not."""
    check_run(imagenet, cluster_from_mapping(_yaml("cluster", "aws_infaas")), apps_from_mapping(_yaml("apps", apps)), policy)


def test_the_imagenet_catalog_on_a_cpu_only_cluster(imagenet: Catalog) -> None:
    """The accelerator rows do not stop a CPU-only run; the default mix's accelerator pins
    stop a pinned baseline there, at the pin's key."""
    cpu_only = cluster_from_mapping(_yaml("cluster", "cpu_only"))
    check_run(imagenet, cpu_only, apps_from_mapping(_yaml("apps", "tiny")), UNPINNED)
    check_run(imagenet, cpu_only, apps_from_mapping(_yaml("apps", "default")), UNPINNED)
    with pytest.raises(ConfigError, match=r"^apps\.photo-tagging\.fixed_variant: .*the cluster offers cpu\)$"):
        check_run(imagenet, cpu_only, apps_from_mapping(_yaml("apps", "default")), PINNED)


def test_the_digits_serve_scenario_passes() -> None:
    digits = load_catalog(Path(REPO_ROOT) / "catalogs" / "digits.csv")
    check_run(digits, cluster_from_mapping(_yaml("cluster", "local")), apps_from_mapping(_yaml("apps", "digits")), PINNED)
