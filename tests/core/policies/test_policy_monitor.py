"""INFaaS monitor rules (infaas_core/policies/monitor.py): flags and hysteresis."""

from __future__ import annotations

from policy_world import build, world

from infaas_core.actions import SetFlags, SetScaleDown


def _flags(p, view):
    return [a for a in p.monitor(view) if isinstance(a, SetFlags)]


def test_queue_rule_sets_overloaded():
    """Rule: queue > f_q x replicas x 1000/inf_lat sets the flag; the cause is demand ->
    overloaded (default class: CPU with 2 replicas, f_q = 0.8; inf_lat = 120 ms -> bound 13.3)."""
    ctx, view = world()
    inst = view.add_instance(0, "resnet50-cpu", replicas=2, batch=1.0, queue_len=14, observed_latency_ms=100.0)
    p = build("infaas", ctx)
    assert _flags(p, view) == [SetFlags(inst.id, True, False)]
    inst.queue_len = 13
    inst.overloaded = False
    assert _flags(p, view) == []  # 13 < 13.33: the queue rule no longer fires


def test_latency_inflated_below_saturation_is_interfered():
    """Rule (our split): latency > f_lat x profiled with rate per replica above f_qps x cap
    but below the profiled throughput -> interfered, not overloaded."""
    ctx, view = world()
    # CPU single replica: f_lat 4, f_qps 1.0; inf_lat 120 ms -> cap 8.33 q/s
    inst = view.add_instance(0, "resnet50-cpu", batch=1.0, observed_latency_ms=500.0, rate_qps=8.4)
    p = build("infaas", ctx, **{"monitor.saturation_fraction": 1.2})  # saturation at 10 q/s
    assert _flags(p, view) == [SetFlags(inst.id, False, True)]
    inst.rate_qps = 10.5
    assert _flags(p, view) == [SetFlags(inst.id, True, False)]


def test_flag_hysteresis_set_keep_unset():
    """Rule: set above f_lat; between f_unset and f_lat the previous flag is kept; below
    f_unset (and a short queue) it is cleared (default class: 2.5x set, 1.5x unset)."""
    ctx, view = world(workers=("inf1.2xlarge",))
    inst = view.add_instance(0, "resnet50-inf", batch=1.0, rate_qps=60.0)  # inf_lat 15, cap 66.7
    p = build("infaas", ctx)
    inst.observed_latency_ms = 40.0  # > 2.5 x 15 = 37.5 and 60 > 0.5 x 66.7
    assert _flags(p, view) == [SetFlags(inst.id, False, True)]  # 60 < 66.7: below saturation
    inst.interfered = True
    inst.observed_latency_ms = 30.0  # between 22.5 and 37.5: keep
    assert _flags(p, view) == []
    inst.observed_latency_ms = 20.0  # < 1.5 x 15: unset
    assert _flags(p, view) == [SetFlags(inst.id, False, False)]
    inst.interfered = False
    inst.observed_latency_ms = 30.0  # between, not set before: stays clear
    assert _flags(p, view) == []


def test_gpu_fast_variant_latency_factor():
    """Rule: a GPU variant with inf_lat < 10 ms uses min(5, 15 / inf_lat) as its latency
    factor (trt-b1: 8 ms -> 1.875, set above 15 ms) and qps factor 0.3."""
    ctx, view = world()
    inst = view.add_instance(1, "resnet50-trt-b1", batch=1.0, rate_qps=40.0, observed_latency_ms=14.9)
    p = build("infaas", ctx)
    assert _flags(p, view) == []
    inst.observed_latency_ms = 15.1
    assert _flags(p, view) == [SetFlags(inst.id, False, True)]


def test_idle_gpu_under_loose_slo_signals_scale_down_to_cpu():
    """Rule: all accelerator instances of a model idle relative to a loose SLO (slo > 10 x
    inf_lat, rate < 0.03 x 1000/inf_lat) and no CPU variant of it on the worker ->
    SetScaleDown naming the model; a CPU variant on the worker clears it."""
    ctx, view = world()
    view.add_instance(1, "resnet50-trt-b1", batch=1.0, rate_qps=1.0, slo_ms=200.0)
    p = build("infaas", ctx)
    assert [a for a in p.monitor(view) if isinstance(a, SetScaleDown)] == [SetScaleDown(1, frozenset({"resnet50"}))]
    view.worker(1).scale_down_to_cpu = frozenset({"resnet50"})
    view.add_instance(1, "resnet50-cpu")
    assert [a for a in p.monitor(view) if isinstance(a, SetScaleDown)] == [SetScaleDown(1, frozenset())]


def test_busy_gpu_does_not_signal_scale_down():
    """Rule: rate above 0.03 x 1000/inf_lat (3.75 q/s for 8 ms) keeps the GPU variant."""
    ctx, view = world()
    view.add_instance(1, "resnet50-trt-b1", batch=1.0, rate_qps=10.0, slo_ms=200.0)
    assert [a for a in build("infaas", ctx).monitor(view) if isinstance(a, SetScaleDown)] == []
