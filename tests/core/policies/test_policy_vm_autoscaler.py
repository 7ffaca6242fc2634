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
    """Rule (our extension, remove_cpu_workers=true, as infaas_cost): idle CPU workers above the
    initial count go; at the default (false, the code) they are never removed."""
    ctx, view = world(workers=("m5.2xlarge", "m5.2xlarge", "p3.2xlarge"))
    view.worker(2).utilization["gpu-v100"] = 0.5  # GPU busy: the GPU rules do not fire
    view.worker(2).utilization["cpu"] = 0.5
    p = build("infaas", ctx, **{"vm_autoscaler.scale_in.remove_cpu_workers": True})
    out = [_tick(p, view, 2.0 * i) for i in range(15)]
    assert out[14] == [RemoveWorker(1)] and out[:14] == [[]] * 14
    q = build("infaas", ctx)
    assert all(_tick(q, view, 2.0 * i) == [] for i in range(30))


CHEAPEST = {"vm_autoscaler.type_choice": "cheapest"}


def test_the_added_type_must_hold_one_replica_on_one_device():
    """Rule (core resource model, ``type_choice: cheapest``): the cheapest type offering the
    hardware is skipped when one replica of an overloaded variant does not fit on one of its
    devices (two 3 GB devices, 6 GB pooled, for a 4 GB resnet152-trt-b1): the next cheapest
    is added."""
    g2 = InstanceType("g.2x3gb", 1.0, 8, 32.0, 60.0, (("gpu-v100", 2),), (("gpu-v100", 3.0),))
    base = cluster()
    spec = ClusterSpec((*base.instance_types, g2), base.initial_workers, (*base.max_workers, ("g.2x3gb", 2)))
    ctx, view = world(spec=spec, workers=("p3.2xlarge",))
    view.add_instance(0, "resnet152-trt-b1", overloaded=True)
    assert _tick(build("infaas", ctx, **CHEAPEST), view, 0.0) == [AddWorker("p3.2xlarge")]
    ctx, view = world(spec=spec, workers=("p3.2xlarge",))
    view.add_instance(0, "resnet50-trt-b1", overloaded=True)  # 2 GB: the cheaper type holds it
    assert _tick(build("infaas", ctx, **CHEAPEST), view, 0.0) == [AddWorker("g.2x3gb")]
    # the original starts its one configured GPU type (p3.2xlarge: the first listed with initial workers)
    assert _tick(build("infaas", ctx), view, 0.0) == [AddWorker("p3.2xlarge")]


def test_original_type_choice_never_adds_an_accelerator_machine_for_cpu_pressure():
    """Rule (``type_choice: original``, master_vm_daemon.cc machine_type_cpu): CPU pressure
    adds the configured CPU-only type (m5.2xlarge), where ``cheapest`` adds the inf1.2xlarge
    (0.362 $/h < 0.384 $/h for the same 8 vCPUs)."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge"))
    p = build("infaas", ctx)
    p.selector.pressure["cpu"] = 0.0
    assert _tick(p, view, 0.0) == [AddWorker("m5.2xlarge")]
    q = build("infaas", ctx, **CHEAPEST)
    q.selector.pressure["cpu"] = 0.0
    assert _tick(q, view, 0.0) == [AddWorker("inf1.2xlarge")]


def test_configured_type_per_platform_is_the_first_listed_that_starts_with_workers():
    """Rule: per primary device class, the first listed type with initial workers, else the
    first listed that may run; the utilisation rule only adds configured types."""
    from infaas_core.policies.vm_autoscaler import configured_types

    m5l = InstanceType("m5.large", 0.096, 2, 8.0, 60.0)
    base = cluster()
    spec = ClusterSpec((m5l, *base.instance_types), base.initial_workers, (("m5.large", 3), *base.max_workers))
    got = {d: t.name for d, t in configured_types(spec).items()}
    assert got == {"cpu": "m5.2xlarge", "gpu-v100": "p3.2xlarge", "inferentia": "inf1.2xlarge"}
    ctx, view = world(spec=spec, workers=("m5.large",))
    view.worker(0).utilization["cpu"] = 0.95
    assert _tick(build("infaas", ctx), view, 0.0) == []  # m5.large is not the configured CPU type
    assert _tick(build("infaas", ctx, **CHEAPEST), view, 0.0) == [AddWorker("m5.large")]


def test_gpu_utilisation_is_memory_occupancy_as_the_original():
    """Rule (``observation.gpu_utilisation: memory``, gpu_daemon.cc): a GPU's utilisation is
    the accelerator memory its replicas take over the device memory, published with every
    window by the control layer whatever the backend; ``compute`` is busy time; CPU is busy
    time either way."""
    from policy_world import catalog

    from infaas_core.control.observe import ObservationConfig
    from infaas_core.view_snapshot import SnapshotView

    for mode, want in (("memory", 4000 / 16384), ("compute", 0.5)):
        view = SnapshotView(catalog(), cluster(), ObservationConfig({"cpu": 15.0, "gpu": 1.5, "inferentia": 1.5}, mode))
        view.add_worker("p3.2xlarge")
        inst = view.add_instance(0, "resnet152-trt-b1")  # 4000 MB of the V100's 16 GB
        inst.counters.busy_s = 1.0
        view.close_window(2.0)
        u = view.worker(0).utilization
        assert abs(u["gpu-v100"] - want) < 1e-9 and u["cpu"] == 0.0
