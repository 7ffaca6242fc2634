"""INFaaS VM-level autoscaler (infaas_core/policies/vm_autoscaler.py)."""

from __future__ import annotations

from policy_world import build, cluster, world

from infaas_core.actions import AddWorker, RemoveWorker
from infaas_core.model import ClusterSpec, InstanceType
from infaas_core.view import WorkerState


def _tick(p, view, t):
    view.now_s = t
    return p.autoscale_vms(view)


def test_scale_out_only_when_every_worker_of_the_type_passes_threshold():
    """Rule: add a worker of a type only when all its workers exceed 80% on its device class."""
    ctx, view = world(workers=("m5.2xlarge", "m5.2xlarge", "p3.2xlarge"))
    p = build("infaas", ctx)
    view.worker(0).utilization["cpu"] = 0.9
    view.worker(1).utilization["cpu"] = 0.5
    assert _tick(p, view, 0.0) == []
    view.worker(1).utilization["cpu"] = 0.85
    assert _tick(p, view, 2.0) == [AddWorker("m5.2xlarge")]


def test_scale_out_waits_for_backoff():
    """Rule: after any action, no other before backoff_s (30 s = 15 iterations x 2 s)."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge"))
    p = build("infaas", ctx)
    view.worker(0).utilization["cpu"] = 0.95
    assert _tick(p, view, 0.0) == [AddWorker("m5.2xlarge")]
    assert _tick(p, view, 2.0) == []
    assert _tick(p, view, 29.9) == []
    assert _tick(p, view, 30.0) == [AddWorker("m5.2xlarge")]


def test_starting_worker_counts_so_no_double_add():
    """Rule: a starting worker of the type means the capacity is coming: no second add."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge"))
    p = build("infaas", ctx)
    view.worker(0).utilization["cpu"] = 0.95
    view.add_worker("m5.2xlarge", state=WorkerState.STARTING)
    assert _tick(p, view, 0.0) == []


def test_never_above_max_workers():
    """Rule: a type at max_workers (m5: 4) is never added, however hot."""
    ctx, view = world(workers=("m5.2xlarge",) * 4)
    p = build("infaas", ctx)
    for w in view.workers:
        w.utilization["cpu"] = 0.99
    assert _tick(p, view, 0.0) == []


def test_inferentia_threshold_is_lower():
    """Rule: Inferentia workers scale out above 70% (INFERENTIA_UTIL_THRESH)."""
    ctx, view = world(workers=("inf1.2xlarge",))
    p = build("infaas", ctx)
    view.worker(0).utilization["inferentia"] = 0.75
    assert _tick(p, view, 0.0) == [AddWorker("inf1.2xlarge")]


def test_scale_out_when_most_workers_have_overloaded_instances():
    """Rule: more than 80% of workers host an Overloaded instance -> add the cheapest type
    offering their hardware."""
    ctx, view = world(workers=("p3.2xlarge", "p3.2xlarge"))
    view.add_instance(0, "resnet50-trt-b1", overloaded=True)
    b = view.add_instance(1, "mobilenet-trt-b1")
    p = build("infaas", ctx)
    assert _tick(p, view, 0.0) == []  # 1 of 2 workers
    b.overloaded = True
    assert _tick(p, view, 2.0) == [AddWorker("p3.2xlarge")]


def test_scale_out_when_a_platform_is_interfered_everywhere():
    """Rule: every ready instance on a hardware class Interfered -> more of that hardware."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge"))
    a = view.add_instance(1, "resnet50-trt-b1", interfered=True)
    view.add_instance(1, "mobilenet-trt-b1")
    p = build("infaas", ctx)
    assert _tick(p, view, 0.0) == []
    for inst in view.worker(1).instances:
        inst.interfered = True
    assert a.interfered and _tick(p, view, 2.0) == [AddWorker("p3.2xlarge")]


def test_scale_out_on_fresh_selection_pressure_only():
    """Rule: a query that found no room to load (the dispatcher's vmscale request) adds the
    cheapest type offering that hardware, while the request is fresh (pressure_window_s)."""
    ctx, view = world(workers=("m5.2xlarge",))
    p = build("infaas", ctx)
    p.selector.pressure["inferentia"] = 0.0
    assert _tick(p, view, 10.0) == []  # stale
    p.selector.pressure["inferentia"] = 9.0
    assert _tick(p, view, 10.0) == [AddWorker("inf1.2xlarge")]


def test_scale_in_only_after_sustained_low_load():
    """Rule: remove the least-utilised worker above the initial count only after 15
    consecutive low evaluations; a busy evaluation restarts the count."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge", "p3.2xlarge"))
    p = build("infaas", ctx)
    t = 0.0
    for _ in range(10):
        assert _tick(p, view, t) == []
        t += 2.0
    view.worker(1).utilization["gpu-v100"] = 0.5
    view.worker(2).utilization["gpu-v100"] = 0.5
    assert _tick(p, view, t) == []
    view.worker(1).utilization["gpu-v100"] = 0.0
    view.worker(2).utilization["gpu-v100"] = 0.01
    out = []
    for _ in range(15):
        t += 2.0
        out.append(_tick(p, view, t))
    assert out[:14] == [[]] * 14
    assert out[14] == [RemoveWorker(1)]  # the least-utilised p3


def test_never_below_initial_workers():
    """Rule: at the initial count of every type nothing is removed, however idle."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge"))
    p = build("infaas", ctx)
    assert all(_tick(p, view, 2.0 * i) == [] for i in range(40))


def test_added_cpu_workers_are_removed_when_idle():
    """Rule (our extension, remove_cpu_workers): idle CPU workers above the initial count go."""
    ctx, view = world(workers=("m5.2xlarge", "m5.2xlarge", "p3.2xlarge"))
    view.worker(2).utilization["gpu-v100"] = 0.5  # GPU busy: the GPU rules do not fire
    view.worker(2).utilization["cpu"] = 0.5
    p = build("infaas", ctx)
    out = [_tick(p, view, 2.0 * i) for i in range(15)]
    assert out[14] == [RemoveWorker(1)] and out[:14] == [[]] * 14
    q = build("infaas", ctx, **{"vm_autoscaler.scale_in.remove_cpu_workers": False})
    assert all(_tick(q, view, 2.0 * i) == [] for i in range(30))


def test_the_added_type_must_hold_one_replica_on_one_device():
    """Rule (core resource model): the cheapest type offering the hardware is skipped when
    one replica of an overloaded variant does not fit on one of its devices (two 3 GB
    devices, 6 GB pooled, for a 4 GB resnet152-trt-b1): the next cheapest is added."""
    g2 = InstanceType("g.2x3gb", 1.0, 8, 32.0, 60.0, (("gpu-v100", 2),), (("gpu-v100", 3.0),))
    base = cluster()
    spec = ClusterSpec((*base.instance_types, g2), base.initial_workers, (*base.max_workers, ("g.2x3gb", 2)))
    ctx, view = world(spec=spec, workers=("p3.2xlarge",))
    view.add_instance(0, "resnet152-trt-b1", overloaded=True)
    assert _tick(build("infaas", ctx), view, 0.0) == [AddWorker("p3.2xlarge")]
    ctx, view = world(spec=spec, workers=("p3.2xlarge",))
    view.add_instance(0, "resnet50-trt-b1", overloaded=True)  # 2 GB: the cheaper type holds it
    assert _tick(build("infaas", ctx), view, 0.0) == [AddWorker("g.2x3gb")]
