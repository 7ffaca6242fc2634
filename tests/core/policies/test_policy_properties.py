"""Properties of INFaaS selection over random hand-built views (hypothesis), and of the
SnapshotView the tests build views with."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from policy_world import TASK, build, req, world

from infaas_core.actions import LoadAndRoute, Reject, RejectKind, Route
from infaas_core.control.resources import room_of
from infaas_core.view import InstanceState, WorkerState

VARIANTS = ["resnet50-cpu", "resnet50-trt-b1", "resnet50-trt-b8", "mobilenet-cpu", "mobilenet-trt-b1",
            "resnet152-trt-b1", "resnet152-cpu"]  # fmt: skip
TYPES = ["m5.2xlarge", "p3.2xlarge"]


@st.composite
def views(draw):
    workers = tuple(draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=4)))
    ctx, view = world(workers=workers)
    for w in view.workers:
        if draw(st.booleans()):
            w.state = WorkerState.STOPPING
        for name in draw(st.lists(st.sampled_from(VARIANTS), max_size=3, unique=True)):
            v = ctx.catalog.get(name)
            if not w.instance_type.offers(v.hardware):
                continue
            view.add_instance(
                w.id, name,
                state=draw(st.sampled_from(list(InstanceState))),
                overloaded=draw(st.booleans()), interfered=draw(st.booleans()),
                rate_qps=draw(st.floats(0, 100)), queue_len=draw(st.integers(0, 20)),
            )  # fmt: skip
    return ctx, view


def _ready_and_loading():
    """Known-bad input: one variant with a LOADING instance (worker 0) and a READY one with
    room (worker 1), both idle; a Route to the LOADING one was once drawn."""
    ctx, view = world(workers=("m5.2xlarge", "m5.2xlarge"))
    view.add_instance(0, "resnet50-cpu", state=InstanceState.LOADING)
    view.add_instance(1, "resnet50-cpu", state=InstanceState.READY)
    return ctx, view


@settings(max_examples=150, deadline=None)
@given(views(), st.floats(0.0, 0.85), st.sampled_from([20.0, 40.0, 80.0, 150.0, 400.0]),
       st.sampled_from(["infaas", "infaas_cost"]))  # fmt: skip
@example(_ready_and_loading(), 0.75, 150.0, "infaas")
def test_selection_only_returns_decisions_that_meet_the_requirements(world_view, acc, slo, name):
    """Properties: a Route goes to a non-unloading instance on a running worker whose
    variant meets accuracy and (estimated) SLO (for infaas_cost never a CPU one for a tight
    SLO; infaas's use-case search, as the code's, does not exclude them), and to a
    free one whenever a free ready instance of that variant exists; a LoadAndRoute names a
    running worker offering the hardware with room (the core resource model) that does not
    hold the variant yet; a no-capacity Reject comes only when some variant is feasible."""
    ctx, view = world_view
    p = build(name, ctx)
    r = req(min_accuracy=acc, latency_slo_ms=slo)
    d = p.select(r, view)
    by_id = {i.id: i for w in view.workers for i in w.instances}

    def est(v):
        return v.latency_ms(min(32, v.max_batch)) if not v.is_cpu else v.latency_ms(1)

    cpu_out_when_tight = name == "infaas_cost"  # infaas: the code's use-case search keeps CPU at tight SLOs

    def feasible(v):
        return v.accuracy >= acc and est(v) <= slo and not (cpu_out_when_tight and v.is_cpu and slo <= 50)

    free_ready = [
        i for i in by_id.values()
        if feasible(i.variant) and i.state is InstanceState.READY and not (i.overloaded or i.interfered)
        and view.worker(i.worker_id).state is WorkerState.RUNNING
    ]  # fmt: skip
    if free_ready:  # running first (SLOs here are far below the 1000 ms penalty)
        assert isinstance(d, Route) and by_id[d.instance_id].state is InstanceState.READY
    if isinstance(d, Route):
        inst = by_id[d.instance_id]
        v = inst.variant
        assert inst.state is not InstanceState.UNLOADING
        assert view.worker(inst.worker_id).state is WorkerState.RUNNING
        assert v.task == TASK and v.accuracy >= acc
        assert not (cpu_out_when_tight and v.is_cpu and slo <= 50)
        est = v.latency_ms(min(32, v.max_batch)) if not v.is_cpu else v.latency_ms(1)
        assert est <= slo
        free = [i for i in view.instances_of(v.name) if not (i.overloaded or i.interfered)
                and i.state is not InstanceState.UNLOADING and view.worker(i.worker_id).state is WorkerState.RUNNING]
        if free:
            assert not (inst.overloaded or inst.interfered)
    elif isinstance(d, LoadAndRoute):
        v = ctx.catalog.get(d.variant)
        w = view.worker(d.worker_id)
        assert w.state is WorkerState.RUNNING and w.instance_type.offers(v.hardware)
        assert all(i.variant.name != v.name for i in w.instances)
        assert room_of(w).fits(w.instance_type, v)
        assert feasible(v)
    else:
        assert isinstance(d, Reject) and d.reason
        if d.kind is RejectKind.NO_CAPACITY:
            assert any(feasible(v) for v in ctx.catalog.by_task(TASK))


@settings(max_examples=50, deadline=None)
@given(views())
def test_cached_decision_equals_fresh_decision(world_view):
    """Property: within one view version the cached answer is the one a fresh policy gives
    (round-robin aside: both start at the first route)."""
    ctx, view = world_view
    r = req(min_accuracy=0.7, latency_slo_ms=150.0)
    a = build("infaas", ctx)
    first = a.select(r, view)
    if not isinstance(first, LoadAndRoute):
        n = 3
        seq_a = [first] + [a.select(r, view) for _ in range(n)]
        b = build("infaas", ctx)
        seq_b = [b.select(r, view) for _ in range(n + 1)]
        assert seq_a == seq_b


def test_snapshot_view_keeps_lookups_and_resources_consistent():
    """SnapshotView: add/remove update worker(id), instances_of(_model), free capacity and
    the version."""
    _ctx, view = world()
    w = view.worker(0)
    v0 = view.version
    inst = view.add_instance(0, "resnet50-cpu", replicas=2)
    assert view.version > v0
    assert view.instances_of("resnet50-cpu") == [inst] and view.instances_of_model("resnet50") == [inst]
    assert (w.free_cores, w.free_memory_mb) == (0, 32 * 1024 - 2000)
    g = view.add_instance(1, "resnet50-trt-b1")
    assert view.worker(1).free_accelerator_memory_mb["gpu-v100"] == 16 * 1024 - 2000
    view.remove_instance(inst.id)
    assert view.instances_of("resnet50-cpu") == [] and view.instances_of_model("resnet50") == [g]
    assert (w.free_cores, w.free_memory_mb) == (8, 32 * 1024)
