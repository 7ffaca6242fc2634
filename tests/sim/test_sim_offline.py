"""Offline jobs in the simulator (infaas_sim/offline.py; the rule: infaas_core/policies/offline.py).

The acceptance test of issue 15: a 10,000-input offline job completes while an online load
runs, and the online violation rate is no higher than without it (both runs from the same
seed and trace). Then the run condition: a job pauses while its worker's CPU utilisation is
over the bound or any model on the worker is flagged, and resumes after; online queries go
first, and an offline batch already started delays them by at most its own service time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from sim_helpers import inputs, poisson, sim_settings

from infaas_core.actions import Action, Decision, LoadVariant, Route, SetFlags, UnloadVariant
from infaas_core.catalog import Catalog
from infaas_core.errors import ConfigError
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements, Variant, make_variant
from infaas_core.policies.base import Policy, PolicyContext, register
from infaas_core.policies.offline import OfflineConfig
from infaas_core.view import ClusterView, InstanceState
from infaas_sim import SimInputs
from infaas_sim.offline import OfflineJob, OfflineJobs
from infaas_sim.run import RunResult, simulate

TASK = "t"
RULE = OfflineConfig(max_cpu_utilisation=0.4, batch=4, framework="torch-fp32")
B1_MS, B4_MS = 5.0, 12.0  # the torch variant's batch-1 and batch-4 latency


def _v(name: str, framework: str, b1_ms: float, b4_ms: float, *, cores: int = 1, max_batch: int = 4) -> Variant:
    pts = {1: (b1_ms, b1_ms * 1.5)}
    if max_batch >= 4:
        pts[4] = (b4_ms, b4_ms * 1.5)
    return make_variant(name=name, model=name.split("-")[0], task=TASK, framework=framework, hardware="cpu",
                        cores=cores, max_batch=max_batch, load_latency_ms=500.0, memory_mb=200.0, accuracy=0.7,
                        source="modeled:test", points=pts)


def catalog(online_cores: int = 1) -> Catalog:
    return Catalog([_v("a-torch", "torch-fp32", B1_MS, B4_MS),
                    _v("a-onnx", "onnx-fp32", 10.0, 10.0, cores=online_cores, max_batch=1)])


def cluster(vcpus: int) -> ClusterSpec:
    t = InstanceType("box", 1.0, vcpus, 64.0, 5.0)
    return ClusterSpec((t,), (("box", 1),), (("box", 1),))


def with_jobs(inp: SimInputs, *jobs: OfflineJob) -> SimInputs:
    return replace(inp, offline=RULE, sim=replace(inp.sim, offline=OfflineJobs(jobs)))


def job_of(r: RunResult) -> dict[str, Any]:
    (j,) = r.summary["offline"]["jobs"]
    return dict(j)


@register("test_offline_pinned")
class Pinned(Policy):
    """Test policy: loads ``params['initial']`` at 0, routes every query to the instance of
    ``params['route_variant']``; its monitor (1 s) flags that instance overloaded while
    ``flag_from_s <= now < flag_until_s`` (the monitor's verdict, through the control layer)."""

    monitor_period_s = 1.0

    def __init__(self, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> None:
        from infaas_edge import compose_group

        super().__init__(ctx, {"observation": compose_group("policy", "static")["observation"], **(params or {})})

    def initial_actions(self, view: ClusterView) -> list[Action]:
        return list(self.params["initial"])

    def select(self, req: Requirements, view: ClusterView, app: str | None = None, batch: int = 1) -> Decision:
        (inst,) = [i for i in view.instances_of(self.params["route_variant"]) if i.state is not InstanceState.UNLOADING]
        return Route(inst.id)

    def monitor(self, view: ClusterView) -> list[Action]:
        lo, hi = self.params.get("flag_from_s", np.inf), self.params.get("flag_until_s", np.inf)
        on = lo <= view.now_s < hi
        out: list[Action] = [SetFlags(i.id, overloaded=on, interfered=False)
                             for i in view.instances_of(self.params["route_variant"])]
        if abs(view.now_s - self.params.get("unload_torch_at_s", -1.0)) < 1e-9:  # as an autoscaler may
            out += [UnloadVariant(i.id, i.replicas) for i in view.instances_of("a-torch")
                    if i.state is not InstanceState.UNLOADING]
        return out


def pinned(cat: Catalog, times: np.ndarray, vcpus: int, duration_s: float, route: str, **params: Any) -> SimInputs:
    return inputs(cat, times, apps=(App("on", Requirements(variant=route, latency_slo_ms=100.0), 1.0),),
                  cluster=cluster(vcpus), policy="test_offline_pinned", duration_s=duration_s,
                  latency_model="deterministic",
                  params={"initial": [LoadVariant(route, 0, 1)], "route_variant": route, **params})


# -- acceptance ---------------------------------------------------------------------------
def test_10k_input_job_completes_beside_online_load_without_more_violations() -> None:
    apps = (App("on", Requirements(task=TASK, min_accuracy=0.6, latency_slo_ms=50.0), 1.0),)
    base = inputs(catalog(), poisson(100.0, 12_000, 1), apps=apps, cluster=cluster(8), policy="infaas",
                  duration_s=120.0)
    online = simulate(base)
    both = simulate(with_jobs(base, OfflineJob(10.0, 10_000, TASK, 0.6)))
    assert "offline" not in online.summary
    j = job_of(both)
    assert j["status"] == "finished" and j["inputs_done"] == 10_000 and j["variant"] == "a-torch"
    assert 0 < j["completion_s"] < 110.0
    # 2,500 batches of 4 at ~12 ms each (profile noise): busy time, and its cost, are counted
    assert 2_500 * B4_MS / 1000 * 0.8 < j["busy_replica_s"] < 2_500 * B4_MS / 1000 * 1.5
    assert 0 < j["cost_share"] < 1
    assert j["worker"] == 0  # online and offline share the a-torch instance the policy loaded
    v_on = online.summary["per_app"]["on"]["violation_rate"]
    v_both = both.summary["per_app"]["on"]["violation_rate"]
    assert both.summary["per_app"]["on"]["queries"] == online.summary["per_app"]["on"]["queries"]
    assert v_both <= v_on
    from infaas_sim.cli import format_summary

    assert "offline: 10,000 of 10,000 inputs, 1 of 1 jobs finished" in format_summary(both.summary)
    assert "offline:" not in format_summary(online.summary)


def test_no_jobs_changes_nothing() -> None:
    base = pinned(catalog(), poisson(50.0, 1_000, 2), 8, 20.0, "a-torch")
    a, b = simulate(base), simulate(with_jobs(base))
    assert "offline" not in b.summary
    assert a.summary["per_app"] == b.summary["per_app"] and a.actions == b.actions


# -- online first ---------------------------------------------------------------------------
def test_online_queries_wait_at_most_one_offline_batch() -> None:
    """Online and offline share one replica: an online query that arrives while an offline
    batch runs waits for it (and only it), so its latency is at most b1 + b4."""
    times = np.arange(1.0, 30.0, 0.037)  # spaced wider than b1 + b4: no online query waits for another
    base = pinned(catalog(), times, 8, 40.0, "a-torch")
    alone = simulate(base)
    both = simulate(with_jobs(base, OfflineJob(1.0, 2_000, TASK, 0.6)))
    assert job_of(both)["status"] == "finished"
    lat = lambda r: (r.queries.finish_s - r.queries.arrival_s) * 1000.0  # noqa: E731
    assert np.allclose(lat(alone), B1_MS)
    lb = lat(both)
    assert lb.max() > B1_MS + 1.0  # some waited behind an offline batch
    assert lb.max() <= B1_MS + B4_MS + 1e-6  # never more than one batch
    assert both.summary["per_app"]["on"]["violation_rate"] == alone.summary["per_app"]["on"]["violation_rate"] == 0.0


# -- the run condition ------------------------------------------------------------------------
def test_pauses_while_cpu_utilisation_is_over_the_bound_and_resumes() -> None:
    """Online keeps a 2-core replica of a 4-vCPU worker 95% busy for 30 s (CPU 0.475 > 0.4),
    then 5% (0.025): the job submitted at 2 s runs nothing until the load drops."""
    heavy = np.arange(0.0, 30.0, 1.0 / 95.0)
    light = np.arange(30.0, 200.0, 1.0 / 5.0)
    cat = catalog(online_cores=2)
    job = OfflineJob(2.0, 4_000, TASK, 0.6)
    cut = simulate(with_jobs(pinned(cat, heavy, 4, 30.0, "a-onnx"), job))
    j = job_of(cut)
    assert j["status"] == "paused" and j["inputs_done"] == 0 and j["paused_s"] == pytest.approx(28.0)
    full = simulate(with_jobs(pinned(cat, np.concatenate((heavy, light)), 4, 200.0, "a-onnx"), job))
    j = job_of(full)
    assert j["status"] == "finished" and j["inputs_done"] == 4_000
    # paused until the first window after the heavy phase (closing at 31 s) allows it
    assert j["paused_s"] == j["paused_utilisation_s"] == pytest.approx(29.0)
    assert j["paused_flagged_s"] == j["paused_no_worker_s"] == 0.0
    assert j["completion_s"] >= j["paused_s"] + 1_000 * B4_MS / 1000


def test_pauses_while_a_model_on_the_worker_is_flagged_and_resumes() -> None:
    """Another model's instance on the worker is flagged overloaded during [20, 40) s while CPU
    utilisation stays low: the job starts nothing then, and finishes after."""
    times = np.arange(0.0, 200.0, 1.0 / 20.0)
    job = OfflineJob(5.0, 20_000, TASK, 0.6)
    flags = {"flag_from_s": 20.0, "flag_until_s": 40.0}
    runs = {h: simulate(with_jobs(pinned(catalog(), times, 8, h, "a-onnx", **flags), job)) for h in (20.0, 40.0, 200.0)}
    done = {h: job_of(r) for h, r in runs.items()}
    assert (5.0, "load", "a-torch", 0, 1, None) in runs[200.0].actions  # loaded through the control layer
    assert 0 < done[20.0]["inputs_done"] == done[40.0]["inputs_done"] < 20_000
    assert done[40.0]["status"] == "paused" and done[40.0]["paused_s"] == pytest.approx(20.0)
    assert done[200.0]["status"] == "finished" and done[200.0]["inputs_done"] == 20_000
    assert done[200.0]["paused_s"] == done[200.0]["paused_flagged_s"] == pytest.approx(20.0)
    assert done[200.0]["paused_utilisation_s"] == 0.0


def test_unfinished_at_the_horizon_and_infeasible_jobs_are_reported() -> None:
    base = pinned(catalog(), poisson(20.0, 100, 3), 8, 5.0, "a-onnx")
    r = simulate(with_jobs(base, OfflineJob(1.0, 1_000_000, TASK, 0.6)))
    j = job_of(r)
    assert j["status"] == "running" and 0 < j["inputs_done"] < 1_000_000 and j["completion_s"] is None
    r = simulate(with_jobs(base, OfflineJob(1.0, 100, TASK, 0.9)))  # no torch variant that accurate
    j = job_of(r)
    assert j["status"] == "infeasible" and j["inputs_done"] == 0 and j["variant"] is None


@pytest.mark.parametrize(
    ("jobs", "key"),
    [
        ({"jobs": [{"arrival_s": -1, "inputs": 4, "task": "t", "min_accuracy": 0.5}]}, "sim.offline.jobs[0].arrival_s"),
        ({"jobs": [{"arrival_s": 0, "inputs": 0, "task": "t", "min_accuracy": 0.5}]}, "sim.offline.jobs[0].inputs"),
        ({"jobs": [{"arrival_s": 0, "inputs": 4, "task": "t", "min_accuracy": 2}]}, "sim.offline.jobs[0].min_accuracy"),
        ({"jobs": [{"arrival_s": 0, "inputs": 4, "task": "t"}]}, "sim.offline.jobs[0].min_accuracy"),
        ({"jobs": [], "extra": 1}, "sim.offline.extra"),
        ({"jobs": 3}, "sim.offline.jobs"),
    ],
)
def test_job_config_errors_name_the_key(jobs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        OfflineJobs.from_mapping(jobs)
    assert e.value.key == key


def test_summary_totals_and_report_rows(tmp_path: Any) -> None:
    """summary.json's offline block holds per-job figures and scalar totals; the report prints them."""
    from infaas_sim.report_table import build_table, find_runs
    from infaas_sim.report_text import format_report

    base = pinned(catalog(), np.arange(0.0, 30.0, 0.05), 8, 30.0, "a-onnx")
    r = simulate(with_jobs(base, OfflineJob(1.0, 400, TASK, 0.6), OfflineJob(2.0, 800, TASK, 0.6)))
    off = r.summary["offline"]
    assert [j["status"] for j in off["jobs"]] == ["finished", "finished"]
    assert off["jobs_finished"] == 2 and off["inputs_done"] == off["inputs"] == 1_200
    assert off["busy_replica_s"] == pytest.approx(300 * B4_MS / 1000)  # deterministic latencies
    assert off["completion_s"] == max(j["completion_s"] for j in off["jobs"])
    # one offline batch at a time per instance, in submission order: the second job (submitted
    # while the first runs) starts when the first ends, and takes its 200 batches after it
    end0, end1 = off["jobs"][0]["completion_s"] + 1.0, off["jobs"][1]["completion_s"] + 2.0
    assert end1 == pytest.approx(end0 + 200 * B4_MS / 1000)
    r.write(tmp_path / "run")
    text = format_report(build_table(find_runs(tmp_path), tmp_path), tmp_path)
    assert any(line.startswith("offline inputs done") and line.rstrip().endswith("1,200") for line in text.splitlines())
    assert "offline cost share" in text


def test_waits_while_no_worker_has_room() -> None:
    """The only worker's one core is taken by the online replica: the job waits, counted apart."""
    r = simulate(with_jobs(pinned(catalog(), np.arange(0.0, 10.0, 0.1), 1, 10.0, "a-onnx"),
                           OfflineJob(2.0, 100, TASK, 0.6)))
    j = job_of(r)
    assert j["status"] == "waiting" and j["worker"] is None and j["inputs_done"] == 0
    assert j["paused_s"] == j["paused_no_worker_s"] == pytest.approx(8.0)
    assert not [a for a in r.actions if a[1] == "load" and a[2] == "a-torch"]


def test_interleaving_is_exact_at_any_routing_window() -> None:
    """Offline and online batches interleave in time order whatever the routing window groups
    (the shared queue's advance, including the lazy one a view read makes): the same results."""
    times = poisson(150.0, 6_000, 4)
    job = OfflineJob(2.0, 2_000, TASK, 0.6)
    runs = [simulate(with_jobs(replace(pinned(catalog(), times, 8, 40.0, "a-torch"),
                                       sim=sim_settings(progress="off", route_period_s=rp)), job))
            for rp in (0.05, 0.01, 0.0005)]
    for r in runs[1:]:
        assert r.summary["offline"] == runs[0].summary["offline"]
        assert r.summary["per_app"] == runs[0].summary["per_app"]
        qa, q0 = r.queries, runs[0].queries
        assert qa is not None and q0 is not None and np.array_equal(qa.finish_s, q0.finish_s)
    assert runs[0].summary["offline"]["jobs_finished"] == 1


def test_redispatched_when_its_instance_is_unloaded() -> None:
    """A policy unloads the job's instance mid-job (INFaaS's autoscaler counts online demand
    only): the job is dispatched again at that instant, loads it again and finishes."""
    base = pinned(catalog(), np.arange(0.0, 60.0, 0.05), 8, 60.0, "a-onnx", unload_torch_at_s=10.0)
    r = simulate(with_jobs(base, OfflineJob(2.0, 8_000, TASK, 0.6)))
    torch = [a[:3] for a in r.actions if a[2] == "a-torch"]
    assert torch == [(2.0, "load", "a-torch"), (10.0, "unload", "a-torch"), (10.0, "load", "a-torch")]
    j = job_of(r)
    assert j["status"] == "finished" and j["inputs_done"] == 8_000
    # the second load's latency (0.5 s) is the only gap: 2,000 batches of 12 ms, two loads
    assert j["completion_s"] == pytest.approx(2_000 * B4_MS / 1000 + 2 * 0.5, abs=0.05)
