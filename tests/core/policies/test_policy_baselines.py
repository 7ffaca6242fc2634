"""Baselines: static, clipper_plus (fixed variant and replicas), sagemaker_plus (fixed
variant, replica autoscaling on its load, never switches variant)."""

from __future__ import annotations

import pytest
from policy_world import APPS, build, cluster, req, world

from infaas_core.actions import AddWorker, LoadVariant, Reject, RejectKind, Route, UnloadVariant
from infaas_core.errors import ConfigError
from infaas_core.model import ClusterSpec, InstanceType

PINS = {"fixed_variants": {"photos": "resnet50-cpu", "search": "mobilenet-trt-b1"}}


def test_clipper_plus_loads_fixed_variants_with_fixed_replicas_at_start():
    """Rule: fixed variant per app (config), `replicas` replicas at t=0, nothing moves."""
    ctx, view = world()
    p = build("clipper_plus", ctx, **PINS, replicas=2)
    assert p.initial_actions(view) == [LoadVariant("resnet50-cpu", 0, 2), LoadVariant("mobilenet-trt-b1", 1, 2)]
    assert (p.monitor_period_s, p.model_autoscale_period_s, p.vm_autoscale_period_s) == (None, None, None)


def test_clipper_plus_routes_to_least_queued_instance_of_the_pinned_variant():
    """Rule: least queue per replica among the app's variant instances; never another variant."""
    ctx, view = world(workers=("m5.2xlarge", "m5.2xlarge", "p3.2xlarge"))
    a = view.add_instance(0, "resnet50-cpu", queue_len=6, replicas=2)
    b = view.add_instance(1, "resnet50-cpu", queue_len=4, replicas=1)
    view.add_instance(2, "resnet50-trt-b1")  # faster, free, but not pinned
    p = build("clipper_plus", ctx, **PINS)
    assert p.select(APPS[0].requirements, view, app="photos") == Route(a.id)  # 3 per replica < 4
    b.queue_len = 2
    assert p.select(APPS[0].requirements, view, app="photos") == Route(b.id)


def test_pinned_policy_rejects_when_its_variant_is_not_loaded():
    """Rule: the app's pin exists but has no instance now -> a no-capacity reject (dropped,
    a violation), not an infeasible one."""
    ctx, view = world()
    d = build("static", ctx, **PINS).select(APPS[1].requirements, view, app="search")
    assert isinstance(d, Reject) and "mobilenet-trt-b1" in d.reason
    assert d.kind is RejectKind.NO_CAPACITY


def test_pinned_policy_rejects_what_no_pin_can_serve_as_infeasible():
    """Rule: an application without a pinned variant, or a variant no application is pinned
    to (this policy never loads it), is infeasible."""
    ctx, view = world()
    p = build("static", ctx, **PINS)
    d = p.select(req(model="mobilenet", latency_slo_ms=50), view, app="nobody")
    assert isinstance(d, Reject) and "has no pinned variant" in d.reason and d.kind is RejectKind.INFEASIBLE
    d = p.select(req(variant="resnet152-cpu"), view)
    assert isinstance(d, Reject) and d.kind is RejectKind.INFEASIBLE


def test_initial_placement_counts_host_and_accelerator_memory_apart():
    """Rule (core resource model): a CPU replica takes cores and host memory, an accelerator
    replica its device's memory; placing CPU replicas first leaves the GPU memory whole
    (2 x resnet50-cpu, then 20 x 800 MB of mobilenet-trt-b1 on one 16 GB V100)."""
    ctx, view = world(workers=("p3.2xlarge",))
    p = build("static", ctx, **PINS, replicas={"photos": 2, "search": 20})
    assert p.initial_actions(view) == [LoadVariant("resnet50-cpu", 0, 2), LoadVariant("mobilenet-trt-b1", 0, 20)]


def test_initial_placement_needs_one_device_per_replica():
    """Rule (core resource model): an accelerator replica must fit on one device; two 3 GB
    devices do not hold a 4 GB replica."""
    g2 = InstanceType("g.2x3gb", 1.0, 8, 32.0, 60.0, (("gpu-v100", 2),), (("gpu-v100", 3.0),))
    base = cluster()
    spec = ClusterSpec((*base.instance_types, g2), (("g.2x3gb", 1),), (*base.max_workers, ("g.2x3gb", 1)))
    ctx, view = world(spec=spec, workers=("g.2x3gb",))
    pins = {"fixed_variants": {"photos": "resnet152-trt-b1", "search": "mobilenet-trt-b1"}}
    with pytest.raises(ConfigError, match="resnet152-trt-b1"):
        build("static", ctx, **pins).initial_actions(view)


def test_unknown_fixed_variant_names_its_key():
    ctx, _ = world()
    with pytest.raises(ConfigError) as e:
        build("clipper_plus", ctx, fixed_variants={"photos": "nope"})
    assert e.value.key == "policy.fixed_variants.photos"


def test_static_replicas_per_app_must_be_positive():
    ctx, _ = world()
    with pytest.raises(ConfigError) as e:
        build("static", ctx, replicas={"photos": 0})
    assert e.value.key == "policy.replicas.photos"


def test_sagemaker_plus_adds_replicas_when_load_per_replica_exceeds_target():
    """Rule: 1.05 x rate > R x T1 -> add ceil(excess / T1) replicas of the same variant,
    next to the existing one up to max_replicas_per_worker, then on other workers."""
    ctx, view = world(workers=("m5.2xlarge", "m5.2xlarge", "p3.2xlarge"))
    view.add_instance(0, "resnet50-cpu", rate_qps=20.0)  # T1 = 8.33: needs 3 replicas
    p = build("sagemaker_plus", ctx, **PINS)
    out = [a for a in p.autoscale_models(view) if isinstance(a, LoadVariant) and a.variant.startswith("resnet")]
    assert out == [LoadVariant("resnet50-cpu", 0, 1), LoadVariant("resnet50-cpu", 1, 1)]  # never another variant


def test_sagemaker_plus_scales_in_after_sustained_low_load_never_below_min():
    """Rule: one replica fewer would do for scale_in_evaluations (CPU: 10) -> remove one;
    never below min_replicas."""
    ctx, view = world()
    inst = view.add_instance(0, "resnet50-cpu", replicas=2, rate_qps=1.0)
    view.add_instance(1, "mobilenet-trt-b1")
    p = build("sagemaker_plus", ctx, **PINS)
    out = [p.autoscale_models(view) for _ in range(10)]
    assert out[:9] == [[]] * 9 and out[9] == [UnloadVariant(inst.id, 1)]
    inst.replicas = 1
    assert all(p.autoscale_models(view) == [] for _ in range(30))


def test_sagemaker_plus_asks_for_workers_when_replicas_do_not_fit():
    """Rule: replicas that cannot be placed become VM pressure; the VM autoscaler adds the
    cheapest type offering the hardware."""
    ctx, view = world(workers=("p3.2xlarge",))
    view.add_instance(0, "mobilenet-trt-b1", rate_qps=1000.0)  # T1 = 333: needs 4
    view.add_instance(0, "resnet50-cpu")
    p = build("sagemaker_plus", ctx, **PINS)
    assert p.autoscale_models(view) == [LoadVariant("mobilenet-trt-b1", 0, 1)]  # cap 2 per worker
    assert p.autoscale_vms(view) == [AddWorker("p3.2xlarge")]


def test_sagemaker_plus_restores_min_replicas():
    """Rule: fewer than min_replicas of a pinned variant (its worker went away) -> add back."""
    ctx, view = world()
    p = build("sagemaker_plus", ctx, **PINS)
    assert p.autoscale_models(view) == [LoadVariant("resnet50-cpu", 0, 1), LoadVariant("mobilenet-trt-b1", 1, 1)]


# -- the paper's baselines: dedicated placement, provisioning, pins (issue 11) -----------------

DEDICATED = {"placement": "dedicated"}


def test_dedicated_placement_gives_each_application_workers_of_its_own():
    """Rule (pinned.py DedicatedPool): each app takes an unowned initial worker of its type or
    asks for one with AddWorker; replicas load once its workers run; one replica per accelerator
    device; two apps pinning the same variant still get separate workers and instances."""
    ctx, view = world(workers=("m5.2xlarge",))
    same = {"fixed_variants": {"photos": "resnet50-cpu", "search": "resnet50-cpu"}}
    p = build("clipper_plus", ctx, **same, **DEDICATED, replicas=1)
    assert p.model_autoscale_period_s == 1.0  # the reconcile that loads on booted workers
    assert p.initial_actions(view) == [LoadVariant("resnet50-cpu", 0, 1), AddWorker("m5.2xlarge")]
    a = view.add_instance(0, "resnet50-cpu", queue_len=50)  # the load applied (a hand-built view does not)
    view.add_worker("m5.2xlarge")  # worker 1 boots: search's
    assert p.autoscale_models(view) == [LoadVariant("resnet50-cpu", 1, 1)]
    b = view.add_instance(1, "resnet50-cpu", queue_len=0)
    assert p.select(APPS[0].requirements, view, app="photos") == Route(a.id)  # never search's idle one
    assert p.select(APPS[1].requirements, view, app="search") == Route(b.id)
    assert p.autoscale_models(view) == []

    ctx, view = world(workers=())
    p = build("clipper_plus", ctx, **PINS, **DEDICATED, replicas=2)
    # resnet50-cpu: 2 replicas of 4 cores fit one m5; mobilenet-trt-b1: one per V100 -> two p3
    assert p.initial_actions(view) == [AddWorker("m5.2xlarge"), AddWorker("p3.2xlarge"), AddWorker("p3.2xlarge")]
    for t in ("p3.2xlarge", "m5.2xlarge", "p3.2xlarge"):  # boot order differs from the asking order
        view.add_worker(t)
    assert sorted(p.autoscale_models(view), key=lambda a: a.worker_id) == [
        LoadVariant("mobilenet-trt-b1", 0, 1), LoadVariant("resnet50-cpu", 1, 2), LoadVariant("mobilenet-trt-b1", 2, 1)]
    owners = p.pool.owner
    assert owners == {0: "search", 1: "photos", 2: "search"}


def test_clipper_plus_provisions_for_the_stated_mean_rate():
    """Rule: replicas = ceil(slack * share * provision_qps / T1), T1 one replica's throughput
    (batch 1 on CPU). photos: resnet50-cpu at 120 ms -> T1 = 8.33 q/s, 1.05 * 0.5 * 100 / 8.33
    = 6.3 -> 7; search: mobilenet-trt-b1 at 3 ms -> T1 = 333 q/s -> 1."""
    ctx, _ = world()
    p = build("clipper_plus", ctx, **PINS, provision_qps=100.0, provision_slack=1.05)
    assert p.replicas == {"photos": 7, "search": 1}
    sm = build("sagemaker_plus", ctx, **PINS, provision_qps=100.0)
    assert sm.replicas == {"photos": 1, "search": 1}  # sagemaker_plus starts from one instance and tracks


def test_least_accurate_pins_hold_accuracy_and_take_distinct_architectures():
    """Rule (pinned.py, pin_rule least_accurate): the least accurate variant meeting the floor
    whose batch-1 latency fits the SLO; each application a different architecture; among
    equally accurate variants the cheapest dedicated deployment for the app's share."""
    from infaas_core.model import App, Requirements
    from infaas_core.policies.base import PolicyContext

    ctx0, _ = world()
    apps = (App("a", Requirements(task="classification-imagenet-224", min_accuracy=0.70, latency_slo_ms=500), 0.5),
            App("b", Requirements(task="classification-imagenet-224", min_accuracy=0.70, latency_slo_ms=500), 0.5))
    ctx = PolicyContext(ctx0.catalog, ctx0.cluster, apps)
    p = build("clipper_plus", ctx, pin_rule="least_accurate", provision_qps=10.0)
    # a: mobilenet (0.70); its CPU variant on one $0.384 m5 beats a $3.06 p3
    # b: mobilenet is taken -> resnet50 (0.76), whose cheapest deployment is inf1 ($0.362)
    assert {a: v.name for a, v in p.pins.items()} == {"a": "mobilenet-cpu", "b": "resnet50-inf"}


def test_sagemaker_plus_dedicated_tracks_its_target_with_its_own_workers():
    """Rule (sagemaker_plus, placement dedicated): from one replica per application, target
    tracking raises the wanted replicas by ceil(excess / T1) (no more often than the cooldown);
    replicas that do not fit its own workers start new workers of its own (AddWorker), and the
    INFaaS VM autoscaler does not run."""
    ctx, view = world(workers=("m5.2xlarge",))
    pins = {"fixed_variants": {"photos": "resnet50-cpu", "search": "mobilenet-cpu"}}
    p = build("sagemaker_plus", ctx, **pins, **DEDICATED, **{"scaling.scale_out_cooldown_s": 300.0})
    assert p.vm_autoscale_period_s is None
    assert p.initial_actions(view) == [LoadVariant("resnet50-cpu", 0, 1), AddWorker("m5.2xlarge")]
    view.add_instance(0, "resnet50-cpu", rate_qps=20.0)  # T1 = 8.33 q/s at batch 1: 21 / 8.33 -> 3 replicas
    view.add_worker("m5.2xlarge")  # worker 1: search's
    view.add_instance(1, "mobilenet-cpu", rate_qps=1.0)
    out = p.autoscale_models(view)
    # photos wants 3; its m5 holds 2 (4 cores each, cap 2 per worker): one more there, one more worker
    assert out == [LoadVariant("resnet50-cpu", 0, 1), AddWorker("m5.2xlarge")]
    assert p.pool.deps["photos"].want == 3 and p.pool.deps["search"].want == 1
