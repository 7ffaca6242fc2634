"""INFaaS per-query selection (infaas_core/policies/infaas_selection.py), driven with hand-built views."""

from __future__ import annotations

import pytest
from policy_world import M5, build, cluster, req, world

from infaas_core.actions import LoadAndRoute, LoadVariant, Reject, RejectKind, Route
from infaas_core.model import ClusterSpec, InstanceType
from infaas_core.policies.common import EstimateConfig, cost_per_query_usd
from infaas_core.view import InstanceState


def test_loose_slo_prefers_cpu_variant():
    """Rule: SLO > loose_slo_ms (100) -> a CPU variant is loaded when nothing runs."""
    ctx, view = world()
    d = build("infaas", ctx).select(req(min_accuracy=0.75, latency_slo_ms=200), view)
    assert d == LoadAndRoute("resnet50-cpu", 0)


def test_tight_slo_excludes_cpu_even_when_running():
    """Rule: SLO <= tight_slo_ms (50) never picks a CPU variant, running or not."""
    ctx, view = world()
    view.add_instance(0, "resnet50-cpu")
    d = build("infaas", ctx).select(req(min_accuracy=0.75, latency_slo_ms=40), view)
    assert isinstance(d, LoadAndRoute)
    assert ctx.catalog.get(d.variant).hardware != "cpu"
    assert d == LoadAndRoute("resnet50-trt-b1", 1)  # lowest 1000 + load + estimate that can be placed


def test_running_variant_with_tightest_fit_wins():
    """Rule: among running, non-overloaded variants, the smallest SLO - estimate wins
    (resnet50-trt-b8 estimated at its full batch: 30 ms; trt-b1: 8 ms; SLO 80 ms)."""
    ctx, view = world()
    b1 = view.add_instance(1, "resnet50-trt-b1")
    b8 = view.add_instance(1, "resnet50-trt-b8")
    p = build("infaas", ctx)
    assert p.select(req(min_accuracy=0.75, latency_slo_ms=80), view) == Route(b8.id)
    b8.overloaded = True
    view.bump()
    assert p.select(req(min_accuracy=0.75, latency_slo_ms=80), view) == Route(b1.id)


def test_tightest_fit_across_the_use_case_architectures():
    """Rule: the use-case search compares all qualifying architectures by SLO - estimate:
    resnet152 (25 ms) fits a 30 ms SLO more tightly than mobilenet (3 ms)."""
    ctx, view = world()
    view.add_instance(1, "mobilenet-trt-b1")
    big = view.add_instance(1, "resnet152-trt-b1")
    fastest_first = {"selection.accuracy_ties": "batch1_latency"}  # name order: see the test below
    assert build("infaas", ctx, **fastest_first).select(req(min_accuracy=0.6, latency_slo_ms=30), view) == Route(big.id)


def test_equal_accuracies_come_in_name_order_as_the_code_s_sorted_set():
    """Rule (accuracy_ties: name, the code's Redis sorted set): equal accuracies in
    lexicographic name order, so the 30 ms search budget of 7 variants ends at
    resnet152-cpu and leaves resnet152-trt-b1 out; the running mobilenet plan serves."""
    ctx, view = world()
    mob = view.add_instance(1, "mobilenet-trt-b1")
    view.add_instance(1, "resnet152-trt-b1")
    assert build("infaas", ctx).select(req(min_accuracy=0.6, latency_slo_ms=30), view) == Route(mob.id)


def test_use_case_search_keeps_cpu_variants_at_a_tight_slo():
    """Rule (cpu_when_tight: model_form, the code): the tight-SLO CPU exclusion belongs to
    the architecture search (par_lat_search); the use-case search tests batch and latency
    only, so a 30 ms task query may load mobilenet-cpu (30 ms), a 30 ms query naming the
    architecture may not; all_forms (infaas_cost's rule) leaves it out for both."""
    ctx, view = world(workers=("m5.2xlarge",))
    one = {"selection.metadata_lookup_ms": 100.0, "selection.min_search_candidates": 1}
    d = build("infaas", ctx, **one).select(req(min_accuracy=0.6, latency_slo_ms=30), view)
    assert d == LoadAndRoute("mobilenet-cpu", 0)
    d = build("infaas", ctx).select(req(model="mobilenet", latency_slo_ms=30), view)
    assert not (isinstance(d, LoadAndRoute) and d.variant == "mobilenet-cpu")
    d = build("infaas", ctx, **one, **{"selection.cpu_when_tight": "all_forms"}).select(
        req(min_accuracy=0.6, latency_slo_ms=30), view)
    assert isinstance(d, Reject)


def test_accuracy_index_ascending_prefers_least_accurate_within_the_budget():
    """Rule: the use-case index is in ascending accuracy and the search looks at the first n
    qualifying variants: with n = 1 the least accurate qualifying variant (mobilenet, 0.70)
    is chosen although a more accurate one fits more tightly."""
    ctx, view = world()
    mob = view.add_instance(1, "mobilenet-trt-b1")
    view.add_instance(1, "resnet152-trt-b1")
    one = {"selection.metadata_lookup_ms": 100.0, "selection.min_search_candidates": 1,
           "selection.accuracy_ties": "batch1_latency"}  # in name order mobilenet-cpu comes first
    assert build("infaas", ctx, **one).select(req(min_accuracy=0.6, latency_slo_ms=30), view) == Route(mob.id)


def test_overloaded_running_variant_goes_to_another_worker_running_it():
    """Rule: an overloaded instance is avoided; the same variant on another worker serves."""
    spec_ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge", "m5.2xlarge"))
    busy = view.add_instance(0, "resnet50-cpu", overloaded=True)
    free = view.add_instance(2, "resnet50-cpu")
    d = build("infaas", spec_ctx).select(req(min_accuracy=0.75, latency_slo_ms=200), view)
    assert d == Route(free.id) and d != Route(busy.id)


def test_overloaded_everywhere_loads_on_another_worker_with_load_next():
    """Rule (``when_all_blacklisted: load_next``, our earlier rule): every instance of the
    best variant overloaded -> load the best non-running option on a worker that does not
    already hold it (loose SLO: the CPU variant again, on the GPU worker's CPUs)."""
    ctx, view = world()
    view.add_instance(0, "resnet50-cpu", overloaded=True)
    d = build("infaas", ctx, **{"selection.when_all_blacklisted": "load_next"}).select(
        req(min_accuracy=0.75, latency_slo_ms=200), view)
    assert d == LoadAndRoute("resnet50-cpu", 1)


def _escape_world() -> tuple[object, object, object]:
    ctx, view = world()
    cpu = view.add_instance(0, "resnet50-cpu", overloaded=True, queue_len=40)
    return ctx, view, cpu


def test_all_blacklisted_escapes_to_the_smallest_max_batch_accelerator_plan():
    """Rule (``when_all_blacklisted: escape``, queryfe_server.cc:997-1020): every running
    candidate blacklisted -> the feasible variant with the smallest max_batch covering the
    batch (resnet50-trt-b1: max_batch 1, the fastest at batch 1 among the max_batch-1
    plans; CPU variants rank last as the code's max_batch 128) is loaded on the
    least-utilised worker of its hardware."""
    ctx, view, _ = _escape_world()
    d = build("infaas", ctx).select(req(min_accuracy=0.75, latency_slo_ms=200), view)
    assert d == LoadAndRoute("resnet50-trt-b1", 1)


def test_escape_sends_every_tenth_query_to_the_fastest_blacklisted_variant():
    """Rule: blacklisted_share (0.1, blist_skip_thresh) of the escaping queries go to the
    fastest blacklisted variant, deterministically every 10th; the rest to the escape
    target, also while the view version stays the same (escape decisions are not cached).
    Once the target is held (here: blacklisted too) it is routed to, not loaded again."""
    ctx, view, cpu = _escape_world()
    p = build("infaas", ctx)
    r = req(min_accuracy=0.75, latency_slo_ms=200)
    got = [p.select(r, view) for _ in range(100)]
    to_cpu = [i for i, d in enumerate(got) if d == Route(cpu.id)]
    assert to_cpu == list(range(9, 100, 10))  # exactly 10 of 100, every 10th
    assert all(d == LoadAndRoute("resnet50-trt-b1", 1) for i, d in enumerate(got) if i not in to_cpu)
    trt = view.add_instance(1, "resnet50-trt-b1", state=InstanceState.LOADING, overloaded=True)
    assert all(p.select(r, view) == Route(trt.id) for _ in range(30))  # trt-b1 is also the fastest blacklisted
    # a share of 0 never goes back to the blacklisted variant
    ctx, view, cpu = _escape_world()
    q = build("infaas", ctx, **{"selection.blacklisted_share": 0.0})
    assert all(q.select(r, view) == LoadAndRoute("resnet50-trt-b1", 1) for _ in range(30))


def test_escape_counts_per_requirement_and_batch():
    """Rule: the split is kept per (requirements, batch): two applications escaping at once
    each send every 10th of their own queries to the blacklisted variant."""
    ctx, view, cpu = _escape_world()
    p = build("infaas", ctx)
    a, b = req(min_accuracy=0.75, latency_slo_ms=200), req(min_accuracy=0.75, latency_slo_ms=300)
    picks = [(p.select(a, view), p.select(b, view)) for _ in range(10)]
    assert [x for x, _ in picks].count(Route(cpu.id)) == 1
    assert [y for _, y in picks].count(Route(cpu.id)) == 1


def test_a_blacklisted_accelerator_variant_stays_the_choice_on_the_least_utilised_worker():
    """Rule (queryfe_server.cc:880-905, 946-953): when a blacklisted candidate is an
    accelerator variant, no 10% split and no smallest-batch plan: the tightest blacklisted
    accelerator variant goes to the least-utilised worker of its hardware — routed there if
    that worker holds it, loaded there if it has room — and a GPU worker is asked for."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge", "p3.2xlarge"))
    b8 = view.add_instance(1, "resnet50-trt-b8", overloaded=True)
    view.now_s = 3.0
    p = build("infaas", ctx)
    r = req(min_accuracy=0.75, latency_slo_ms=80)
    assert all(p.select(r, view) == Route(b8.id) for _ in range(20))
    assert p.selector.pressure == {"gpu-v100": 3.0}
    view.worker(1).utilization["gpu-v100"] = 0.5
    view.bump()
    assert p.select(r, view) == LoadAndRoute("resnet50-trt-b8", 2)


def test_escape_target_fits_nowhere_falls_back_to_no_room_and_asks_for_its_hardware():
    """Rule: when the escape target fits on no worker (and none holds it), selection does
    what ``when_no_room`` says and records pressure for the target's hardware."""
    ctx, view = world()
    cpu = view.add_instance(0, "resnet50-cpu", overloaded=True)
    view.worker(1).free_accelerator_memory_mb["gpu-v100"] = 100.0
    view.now_s = 5.0
    p = build("infaas", ctx)
    assert p.select(req(min_accuracy=0.75, latency_slo_ms=200), view) == Route(cpu.id)
    assert p.selector.pressure == {"gpu-v100": 5.0}


def test_not_all_blacklisted_does_not_escape():
    """Rule: the escape applies only when no running candidate has a free instance."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge", "m5.2xlarge"))
    view.add_instance(0, "resnet50-cpu", overloaded=True)
    free = view.add_instance(2, "resnet50-cpu")
    p = build("infaas", ctx)
    assert all(p.select(req(min_accuracy=0.75, latency_slo_ms=200), view) == Route(free.id) for _ in range(20))


def test_burst_guard_blacklists_a_worker_for_two_seconds():
    """Rule (queryfe_server.cc:1606-1657): 200 requests to one worker within 1 s of the
    count's start blacklist it for 2 s (more than one worker); its queries then go to
    another worker running the variant; after 2 s it is used again. Switched off, never."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge", "m5.2xlarge"))
    a = view.add_instance(0, "resnet50-cpu", rate_qps=0.0)
    b = view.add_instance(2, "resnet50-cpu", rate_qps=50.0)
    r = req(min_accuracy=0.75, latency_slo_ms=200)
    p = build("infaas", ctx, **{"selection.worker_candidates": 1})
    got = []
    for k in range(201):
        view.now_s = k * 0.004  # 250 q/s
        got.append(p.select(r, view))
    assert got[:200] == [Route(a.id)] * 200  # the 200th request trips the guard ...
    assert got[200] == Route(b.id)  # ... and the next one avoids worker 0
    assert 0 in p.selector.blacklist
    view.now_s = 0.796 + 2.0
    assert p.select(r, view) == Route(a.id)  # blacklist expired
    off = build("infaas", ctx, **{"selection.worker_candidates": 1, "selection.worker_blacklist.burst_guard": False})
    assert all(off.select(r, view) == Route(a.id) for _ in range(400))


def test_burst_guard_counts_from_the_start_of_the_count_and_spares_a_lone_worker():
    """Rule: requests 1 s or more after the count started restart it (so 200 requests must
    come within about a second); a cluster of one worker is never blacklisted."""
    ctx, view = world(workers=("m5.2xlarge",))
    view.add_instance(0, "resnet50-cpu")
    p = build("infaas", ctx)
    r = req(min_accuracy=0.75, latency_slo_ms=200)
    for k in range(1000):
        view.now_s = k * 0.001
        p.select(r, view)
    assert p.selector.blacklist == {}
    ctx, view = world(workers=("m5.2xlarge", "m5.2xlarge"))
    view.add_instance(0, "resnet50-cpu")
    p = build("infaas", ctx)
    for k in range(400):
        view.now_s = k * 0.006  # 167 q/s: 1 s holds fewer than 200
        p.select(r, view)
    assert p.selector.blacklist == {}


def test_utilisation_blacklist_as_the_vm_daemon():
    """Rule (master_vm_daemon.cc:224-262): with each VM period, a worker above 80% CPU, or
    strictly between 80% and 100% GPU, is blacklisted for 2 s; switched off, none is."""
    ctx, view = world(workers=("m5.2xlarge", "p3.2xlarge", "p3.2xlarge"))
    view.worker(0).utilization["cpu"] = 0.9
    view.worker(1).utilization["gpu-v100"] = 0.85
    view.worker(2).utilization["gpu-v100"] = 1.0
    p = build("infaas", ctx)
    view.now_s = 3.0
    p.autoscale_vms(view)
    assert p.selector.blacklist == {0: 5.0, 1: 5.0}
    off = build("infaas", ctx, **{"selection.worker_blacklist.utilisation": False})
    off.autoscale_vms(view)
    assert off.selector.blacklist == {}


def test_interfered_instance_is_avoided_too():
    """Rule: Interfered instances are skipped like Overloaded ones (paper Fig. 4)."""
    ctx, view = world()
    view.add_instance(1, "resnet50-trt-b1", interfered=True)
    d = build("infaas", ctx, **{"selection.when_all_blacklisted": "load_next"}).select(
        req(min_accuracy=0.75, latency_slo_ms=40), view)
    assert isinstance(d, LoadAndRoute) and d.variant != "resnet50-trt-b1"


def test_no_room_routes_to_least_queued_busy_instance_and_asks_for_capacity():
    """Rule: feasible but nothing free nor placeable -> queue at the least-queued busy
    instance (when_no_room: route_overloaded) and record VM pressure for its hardware."""
    ctx, view = world(workers=("p3.2xlarge",))
    a = view.add_instance(0, "resnet50-trt-b1", overloaded=True, queue_len=9)
    view.worker(0).free_accelerator_memory_mb["gpu-v100"] = 100.0  # nothing else fits
    p = build("infaas", ctx, **{"selection.when_all_blacklisted": "load_next"})
    view.now_s = 12.0
    assert p.select(req(min_accuracy=0.75, latency_slo_ms=40), view) == Route(a.id)
    # the best load candidate (lowest 1000 + load + estimate) is resnet50-inf: ask for inferentia
    assert p.selector.pressure == {"inferentia": 12.0}
    # escape: the smallest-max_batch plan is the blacklisted trt-b1 itself, held on the one GPU
    # worker: routed there, and a blacklisted GPU variant asks for a GPU worker (the code's vmscale)
    e = build("infaas", ctx)
    assert e.select(req(min_accuracy=0.75, latency_slo_ms=40), view) == Route(a.id)
    assert e.selector.pressure == {"gpu-v100": 12.0}
    r = build("infaas", ctx, **{"selection.when_no_room": "reject", "selection.when_all_blacklisted": "load_next"})
    d = r.select(req(min_accuracy=0.75, latency_slo_ms=40), view)
    assert isinstance(d, Reject) and "no capacity" in d.reason
    assert d.kind is RejectKind.NO_CAPACITY  # feasible, just no room now: dropped, not rejected


def test_nothing_meets_accuracy_rejects_with_reason_and_suggestion():
    """Rule: no variant reaches the accuracy -> Reject naming why and the nearest feasible
    requirement (paper Algorithm 1, suggestVariant)."""
    ctx, view = world()
    d = build("infaas", ctx).select(req(min_accuracy=0.9, latency_slo_ms=200), view)
    assert isinstance(d, Reject) and d.kind is RejectKind.INFEASIBLE
    assert "min_accuracy 0.9" in d.reason
    assert d.suggestion == "min_accuracy <= 0.8 at latency_slo_ms 200"


def test_accuracy_met_but_slo_too_tight_suggests_both_relaxations():
    """Rule: the suggestion relaxes accuracy at the SLO or the SLO at the accuracy."""
    ctx, view = world()
    d = build("infaas", ctx).select(req(min_accuracy=0.8, latency_slo_ms=20), view)
    assert isinstance(d, Reject)
    assert d.suggestion == "min_accuracy <= 0.76 at latency_slo_ms 20 or latency_slo_ms >= 25 at min_accuracy 0.8"


def test_unknown_task_and_oversized_batch_are_rejected():
    """Rule: unknown use case / a batch no variant takes -> Reject with the reason."""
    ctx, view = world()
    p = build("infaas", ctx)
    d = p.select(req(task="no-such-task", latency_slo_ms=100), view)
    assert isinstance(d, Reject) and "unknown task" in d.reason
    d = p.select(req(min_accuracy=0.5, latency_slo_ms=5000), view, batch=64)
    assert isinstance(d, Reject) and d.suggestion == "batch <= 8"


def test_exact_variant_form_loads_then_routes():
    """Rule: the exact-variant form runs that variant (no SLO search)."""
    ctx, view = world()
    p = build("infaas", ctx)
    r = req(variant="resnet50-trt-b8")
    assert p.select(r, view) == LoadAndRoute("resnet50-trt-b8", 1)
    inst = view.add_instance(1, "resnet50-trt-b8", state=InstanceState.LOADING)
    assert p.select(r, view) == Route(inst.id)
    assert isinstance(p.select(req(variant="nope"), view), Reject)


def test_model_form_picks_among_the_architecture_variants():
    """Rule: model + SLO searches that architecture's variants only."""
    ctx, view = world()
    d = build("infaas", ctx).select(req(model="mobilenet", latency_slo_ms=40), view)
    assert d == LoadAndRoute("mobilenet-trt-b1", 1)
    d = build("infaas", ctx).select(req(model="mobilenet", latency_slo_ms=400), view)
    assert d == LoadAndRoute("mobilenet-cpu", 0)


def test_loose_slo_respects_worker_scale_down_to_cpu_flag():
    """Rule: a running accelerator variant serves loose-SLO queries unless its worker says
    "GPU idle, use CPU" for that model; then the CPU variant is loaded instead."""
    ctx, view = world()
    gpu = view.add_instance(1, "resnet50-trt-b1")
    p = build("infaas", ctx)
    r = req(min_accuracy=0.75, latency_slo_ms=200)
    assert p.select(r, view) == Route(gpu.id)
    view.worker(1).scale_down_to_cpu = frozenset({"resnet50"})
    view.bump()
    assert p.select(r, view) == LoadAndRoute("resnet50-cpu", 0)


def test_cost_ordering_picks_cheapest_hardware_per_query():
    """Rule (our improvement): ordering=cost loads the variant with the lowest hardware $
    per query among the feasible ones; here that is a GPU variant although the SLO is loose."""
    ctx, view = world()
    r = req(min_accuracy=0.75, latency_slo_ms=200)
    p = build("infaas_cost", ctx)
    d = p.select(r, view)
    est = EstimateConfig(32, "full")
    # resnet50-inf is feasible too but no running worker offers inferentia (cannot be placed)
    feasible = ["resnet50-cpu", "resnet50-trt-b1", "resnet50-trt-b8", "resnet152-trt-b1"]
    costs = {n: cost_per_query_usd(ctx.catalog.get(n), 1, ctx.cluster, est, "memory") for n in feasible}
    assert isinstance(d, LoadAndRoute) and d.variant == min(costs, key=costs.__getitem__)
    assert d.variant != "resnet50-cpu"
    # hand check of the CPU figure: the cheapest host per vCPU is inf1.2xlarge ($0.362/h,
    # 8 vCPU, cheaper than m5.2xlarge): 4/8 of it / (1000/120 q/s)
    assert abs(costs["resnet50-cpu"] - 0.362 / 3600 * 0.5 / (1000 / 120)) < 1e-15
    assert M5.price_usd_per_hour > 0.362


def test_cost_ordering_still_prefers_running_variants():
    """Rule: under ordering=cost a running, free variant beats loading a cheaper one."""
    ctx, view = world()
    cpu = view.add_instance(0, "resnet50-cpu")
    d = build("infaas_cost", ctx).select(req(min_accuracy=0.75, latency_slo_ms=200), view)
    assert d == Route(cpu.id)


def test_round_robin_over_three_least_loaded_workers_until_view_changes():
    """Rule: route among the worker_candidates (3) lowest-rate instances, round-robin;
    the cached decision is dropped when view.version changes."""
    ctx, view = world(workers=("m5.2xlarge",) * 4)
    insts = [view.add_instance(w, "resnet50-cpu", rate_qps=float(r)) for w, r in zip(range(4), (5, 1, 9, 3))]
    p = build("infaas", ctx)
    r = req(min_accuracy=0.75, latency_slo_ms=200)
    got = [p.select(r, view) for _ in range(6)]
    expect = [Route(insts[i].id) for i in (1, 3, 0)]
    assert got == expect * 2
    insts[1].overloaded = True
    view.bump()
    assert Route(insts[1].id) not in {p.select(r, view) for _ in range(6)}


def test_equal_requirements_objects_share_the_cache():
    """Rule: the cache is keyed by requirements equality as well as identity."""
    ctx, view = world()
    inst = view.add_instance(0, "resnet50-cpu")
    p = build("infaas", ctx)
    assert p.select(req(min_accuracy=0.75, latency_slo_ms=200), view) == Route(inst.id)
    assert p.select(req(min_accuracy=0.75, latency_slo_ms=200), view) == Route(inst.id)


def test_search_budget_before_filter_reproduces_the_code():
    """Rule: the use-case search looks at n = max(min, floor(fraction * SLO / lookup_ms))
    variants in ascending accuracy; truncate=before_filter (the default, the code) cuts before
    the latency test and can reject a query that after_filter (our choice, infaas_cost) serves."""
    ctx, view = world()
    small = {"selection.metadata_lookup_ms": 100.0, "selection.min_search_candidates": 1}  # n = 1
    r = req(min_accuracy=0.0, latency_slo_ms=30)
    # batch 2: first by accuracy is mobilenet-cpu (CPU, excluded at a tight SLO)
    d = build("infaas", ctx, **small, **{"selection.truncate": "after_filter"}).select(r, view, batch=2)
    assert d == LoadAndRoute("resnet50-trt-b8", 1)
    d = build("infaas", ctx, **small).select(r, view, batch=2)
    assert isinstance(d, Reject) and "search budget" in d.reason


def test_very_loose_slo_loads_a_tighter_fit_once_then_stays():
    """Rule: past ~1 s of SLO a running variant's SLO - estimate exceeds 1000 ms + load +
    estimate of a slower one, which is then loaded (the code's shared score); a load must
    also be a tighter fit, so loads converge instead of cascading; with no SLO at all
    (infinite) the running variant is kept."""
    ctx, view = world()
    view.add_instance(1, "resnet50-trt-b1")
    p = build("infaas", ctx)
    r = req(min_accuracy=0.75, latency_slo_ms=5000)
    assert p.select(r, view) == LoadAndRoute("resnet50-cpu", 0)  # 1000+2000+120 < 4992
    view.add_instance(0, "resnet50-cpu")
    assert p.select(r, view) == LoadAndRoute("resnet152-cpu", 1)  # 4400 < 4880, tighter
    slow = view.add_instance(1, "resnet152-cpu")
    assert p.select(r, view) == Route(slow.id)  # nothing fits more tightly: stays
    ctx, view = world()
    gpu = view.add_instance(1, "resnet50-trt-b1")
    d = build("infaas", ctx).select(req(model="resnet50"), view)  # no SLO: infinite
    assert d == LoadAndRoute("resnet50-cpu", 0)  # CPU first for loose SLOs, loaded once
    cpu = view.add_instance(0, "resnet50-cpu")
    assert build("infaas", ctx).select(req(model="resnet50"), view) == Route(cpu.id)
    assert gpu.id != cpu.id


@pytest.mark.parametrize("name", ["infaas", "infaas_cost"])
@pytest.mark.parametrize("loading_on", [0, 1])
def test_a_ready_instance_with_room_wins_over_a_loading_one(name, loading_on):
    """Rule: while a READY instance of the variant has room, no query is routed to a LOADING
    instance of it (both idle and not overloaded, on running workers). Regression for a
    draw of test_selection_only_returns_decisions_that_meet_the_requirements: a Route to
    the LOADING instance while a READY one with room existed."""
    ctx, view = world(workers=("m5.2xlarge", "m5.2xlarge"))
    insts = [view.add_instance(w, "resnet50-cpu",
                               state=InstanceState.LOADING if w == loading_on else InstanceState.READY)
             for w in (0, 1)]  # fmt: skip
    ready = insts[1 - loading_on]
    p = build(name, ctx)
    r = req(min_accuracy=0.75, latency_slo_ms=200)
    assert [p.select(r, view) for _ in range(6)] == [Route(ready.id)] * 6


def test_a_load_must_fit_on_one_device_not_the_pooled_devices():
    """Rule (core resource model): an accelerator replica needs its memory on one device of
    the worker; two 3 GB devices do not hold a 4 GB replica although 6 GB are free in all."""
    g2 = InstanceType("g.2x3gb", 1.0, 8, 32.0, 60.0, (("gpu-v100", 2),), (("gpu-v100", 3.0),))
    base = cluster()
    spec = ClusterSpec((*base.instance_types, g2), (("g.2x3gb", 1),), (*base.max_workers, ("g.2x3gb", 1)))
    ctx, view = world(spec=spec, workers=("g.2x3gb", "p3.2xlarge"))
    assert view.worker(0).free_accelerator_memory_mb["gpu-v100"] == 6144.0
    r = req(min_accuracy=0.8, latency_slo_ms=30)  # only resnet152-trt-b1 (4000 MB) qualifies
    assert build("infaas", ctx).select(r, view) == LoadAndRoute("resnet152-trt-b1", 1)
    ctx, view = world(spec=spec, workers=("g.2x3gb",))
    d = build("infaas", ctx, **{"selection.when_no_room": "reject"}).select(r, view)
    assert isinstance(d, Reject) and d.kind is RejectKind.NO_CAPACITY


def test_a_ready_instance_is_preferred_even_when_a_loading_one_is_less_loaded():
    """Rule: among a variant's eligible instances only the READY ones are routed to while any
    is ready, even when the LOADING one has the lower request rate per replica."""
    ctx, view = world(workers=("p3.2xlarge", "p3.2xlarge", "p3.2xlarge"))
    view.add_instance(0, "resnet50-trt-b1", state=InstanceState.LOADING)
    busy = view.add_instance(1, "resnet50-trt-b1", rate_qps=50.0)
    idle = view.add_instance(2, "resnet50-trt-b1", rate_qps=10.0)
    p = build("infaas", ctx)
    r = req(min_accuracy=0.75, latency_slo_ms=40)
    assert [p.select(r, view) for _ in range(4)] == [Route(idle.id), Route(busy.id)] * 2


def test_only_loading_instances_are_routed_to_when_none_is_ready():
    """Rule: a variant whose eligible instances are all loading still takes the query (it is
    running: a query waits out the rest of the load instead of a whole new one)."""
    ctx, view = world()
    a = view.add_instance(1, "resnet50-trt-b1", state=InstanceState.LOADING)
    assert build("infaas", ctx).select(req(min_accuracy=0.75, latency_slo_ms=40), view) == Route(a.id)


def test_per_requirements_state_is_bounded_when_clients_choose_the_keys():
    """Hardening (issue 13): 5,000 distinct (min_accuracy, SLO) pairs leave at most
    ``selection.requirements_cache_size`` candidate lists behind, and answers stay right."""
    ctx, view = world()
    view.add_instance(0, "resnet50-cpu")
    pol = build("infaas", ctx, **{"selection.requirements_cache_size": 64})
    for k in range(5000):
        d = pol.select(req(min_accuracy=0.5 + k * 1e-5, latency_slo_ms=200.0 + k * 0.01), view)
        assert isinstance(d, Route | LoadAndRoute)
    sel = pol.selector
    assert len(sel._static) <= 64 and len(sel._cache) <= 64 and len(sel._eq_cache) <= 64


def test_a_reused_object_address_never_replays_another_requirement_s_decision():
    """Regression: the identity cache is keyed by ``id(req)``; the server builds one
    Requirements per request and frees it, and CPython hands the freed address to the next
    one, so a hit must also be the same object. Alternating an exact-variant query with an
    infeasible task query (accuracy above every variant), each object freed after use, must
    give each its own answer."""
    ctx, view = world()
    view.add_instance(1, "mobilenet-trt-b1")  # a Route, which is cached (a load is not)
    p = build("infaas", ctx)
    exact = {"variant": "mobilenet-trt-b1"}
    infeasible = {"min_accuracy": 0.9999, "latency_slo_ms": 100.0}
    kinds = []
    for i in range(200):  # (with a cache that held no reference, the addresses repeat here)
        r = req(**(exact if i % 2 == 0 else infeasible))
        kinds.append(type(p.select(r, view)))
        del r
    assert all(k is Route for k in kinds[0::2]) and all(k is Reject for k in kinds[1::2])


def test_a_variant_the_mechanism_gave_up_is_not_loaded_the_next_candidate_is():
    """A variant reported unservable (``Cluster.variant_unservable``: its replicas keep dying,
    its artifact cannot be built) would be refused (``load_unservable``): selection loads the
    next candidate instead, and loads the first again once it is servable."""
    ctx, view = world()
    p = build("infaas", ctx)
    r = req(min_accuracy=0.75, latency_slo_ms=200)
    assert p.select(r, view) == LoadAndRoute("resnet50-cpu", 0)
    view.variant_unservable("resnet50-cpu", "replicas died 3 times")
    d = p.select(r, view)
    assert isinstance(d, LoadAndRoute) and d.variant != "resnet50-cpu"
    assert view.apply([LoadVariant("resnet50-cpu", 0, 1)]) == ["load_unservable"]
    view.variant_servable("resnet50-cpu")
    assert p.select(r, view) == LoadAndRoute("resnet50-cpu", 0)
