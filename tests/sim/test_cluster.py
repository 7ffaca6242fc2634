"""Cluster mechanics: worker start-up and cost, capacity refusals, loading and unloading,
accelerator sharing, and the version bumps the policies' caches rely on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from sim_helpers import OBSERVATION, inputs, poisson, variant

from infaas_core.actions import (
    Action,
    AddWorker,
    Decision,
    LoadVariant,
    RemoveWorker,
    Route,
    UnloadVariant,
)
from infaas_core.catalog import Catalog
from infaas_core.control.resources import capacity
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements
from infaas_core.policies.base import Policy, PolicyContext, register
from infaas_core.view import ClusterView, InstanceState, WorkerState
from infaas_sim import simulate
from infaas_sim.engine import Simulation

CPU_T = InstanceType("cpu8", 0.36, 8, 16.0, 10.0)
GPU_T = InstanceType("gpu1", 3.6, 4, 16.0, 20.0, accelerators=(("gpu-x", 1),), accelerator_memory_gb=(("gpu-x", 4.0),))


def cluster(cpu: int = 1, gpu: int = 0, max_cpu: int = 2, max_gpu: int = 1) -> ClusterSpec:
    return ClusterSpec((CPU_T, GPU_T), (("cpu8", cpu), ("gpu1", gpu)), (("cpu8", max_cpu), ("gpu1", max_gpu)))


@register("test_scripted")
class Scripted(Policy):
    """Test policy: applies ``params['script']`` = [(time_s, action)] at a 0.5 s period and
    routes every query to the instance of ``params['route_variant']`` with the shortest queue."""

    model_autoscale_period_s = 0.5

    def __init__(self, ctx: PolicyContext, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(ctx, {"observation": OBSERVATION, **(params or {})})
        self.script: list[tuple[float, Action]] = list(self.params.get("script", []))
        self.log: list[tuple[float, int, str]] = []

    def initial_actions(self, view: ClusterView) -> list[Action]:
        return list(self.params.get("initial", []))

    def select(self, req: Requirements, view: ClusterView, app: str | None = None, batch: int = 1) -> Decision:
        insts = [i for i in view.instances_of(self.params["route_variant"]) if i.state is not InstanceState.UNLOADING]
        return Route(min(insts, key=lambda i: i.queue_len).id)

    def autoscale_models(self, view: ClusterView) -> list[Action]:
        self.log.append((view.now_s, view.version, ",".join(f"{w.id}:{w.state.value}" for w in view.workers)))
        due = [a for t, a in self.script if t <= view.now_s + 1e-9]
        self.script = [(t, a) for t, a in self.script if t > view.now_s + 1e-9]
        return due


def _run(cat: Catalog, times: np.ndarray, spec: ClusterSpec, duration_s: float, **params: Any) -> tuple[Simulation, Any]:
    inp = inputs(cat, times, cluster=spec, policy="test_scripted", params=params, duration_s=duration_s,
                 latency_model="deterministic")
    sim = Simulation(inp)
    sim.run()
    return sim, sim.policy


def test_worker_starts_after_its_delay_and_costs_from_the_request() -> None:
    """AddWorker: STARTING for startup_s, then RUNNING; cost from the request to the end."""
    cat = Catalog([variant("v", p50_ms=1.0)])
    sim, pol = _run(cat, poisson(100, 100, 1), cluster(), 30.0, route_variant="v",
                    initial=[LoadVariant("v", 0, 1)], script=[(1.0, AddWorker("cpu8"))])
    states = {t: s for t, _, s in pol.log}
    assert "1:starting" in states[10.5] and "1:running" in states[11.5]
    assert sim.cluster.cost_usd(30.0) == pytest.approx(0.36 * 30 / 3600 + 0.36 * 29 / 3600)


def test_actions_that_do_not_fit_are_refused_and_counted() -> None:
    """Too many cores, a worker past max_workers, a load on a starting worker: refused."""
    cat = Catalog([variant("v", p50_ms=1.0, cores=6)])
    script = [(0.5, LoadVariant("v", 0, 1)), (1.0, AddWorker("cpu8")), (1.0, AddWorker("cpu8")),
              (1.5, LoadVariant("v", 1, 1))]  # fmt: skip
    sim, _ = _run(cat, poisson(100, 50, 1), cluster(), 5.0, route_variant="v", initial=[LoadVariant("v", 0, 1)],
                  script=script)
    r = sim.cluster.refused
    assert r["load_no_free_cores"] == 1 and r["add_worker_at_max"] == 1 and r["load_worker_not_running"] == 1


def test_queries_routed_to_a_loading_instance_wait_for_it() -> None:
    """The load latency counts against the queries that arrive while the variant loads."""
    cat = Catalog([variant("v", p50_ms=2.0, load_ms=500.0)])
    times = np.array([0.1, 0.2, 0.3, 0.9])
    res = simulate(inputs(cat, times, cluster=cluster(), policy="test_scripted", duration_s=1.0,
                          params={"route_variant": "v", "initial": [LoadVariant("v", 0, 1)]},
                          latency_model="deterministic"))
    q = res.queries
    assert q is not None
    np.testing.assert_allclose(q.start_s, [0.5, 0.502, 0.504, 0.9])


def test_unload_drains_the_queue_then_frees_memory() -> None:
    """UnloadVariant to zero: queued queries still complete; then the memory is free."""
    cat = Catalog([variant("v", p50_ms=50.0, memory_mb=1000.0)])
    times = np.linspace(0.0, 0.45, 10)
    sim, _ = _run(cat, times, cluster(), 3.0, route_variant="v", initial=[LoadVariant("v", 0, 1)],
                  script=[(0.5, UnloadVariant(0, 1))])
    assert sim.recorder.total.completed == 10
    w = sim.cluster.worker(0)
    assert not w.instances and w.free == capacity(w.instance_type)
    assert sim.cluster.counts["instance_unloads"] == 1


def test_remove_worker_stops_its_cost_after_draining() -> None:
    """RemoveWorker: no new loads, the queue drains, then the worker stops costing."""
    cat = Catalog([variant("v", p50_ms=1.0)])
    sim, _ = _run(cat, poisson(50, 20, 2), cluster(cpu=2, max_cpu=2), 10.0, route_variant="v",
                  initial=[LoadVariant("v", 0, 1)], script=[(2.0, RemoveWorker(1))])
    assert 1 not in {w.id for w in sim.cluster.workers} and sim.cluster.counts["workers_removed"] == 1
    assert sim.cluster.cost_usd(10.0) == pytest.approx(0.36 * (10 + 2) / 3600)


def test_accelerator_replicas_on_one_device_share_it() -> None:
    """Two GPU variants on one device, each needing 70% of it: with sharing their service
    stretches (demand 1.4 > 1), without it each runs as if alone."""
    cat = Catalog([variant("a", hardware="gpu-x", p50_ms=1.0, memory_mb=500.0),
                   variant("b", hardware="gpu-x", p50_ms=1.0, memory_mb=500.0)])  # fmt: skip
    apps = (App("x", Requirements(variant="a"), 0.5), App("y", Requirements(variant="b"), 0.5))
    times = poisson(1400.0, 14_000, seed=3)
    res = {}
    for sharing in (True, False):
        inp = inputs(cat, times, apps=apps, cluster=cluster(cpu=0, gpu=1, max_cpu=0), policy="static",
                     params={"replicas": 1, "observation": {"gpu_utilisation": "compute"}},  # busy time, not memory
                     latency_model="deterministic", accelerator_sharing=sharing)
        sim = Simulation(inp)
        sim.run()
        res[sharing] = (sim.recorder.total.latency_sum_ms / sim.recorder.total.completed,
                        sim.cluster.worker(0).utilization["gpu-x"])  # fmt: skip
    assert res[False][0] < 5.0  # two independent M/D/1 at rho 0.7
    assert res[True][0] > 10 * res[False][0]  # over capacity: the queues grow
    assert res[True][1] == pytest.approx(1.0)


def test_every_change_selection_reads_bumps_the_version() -> None:
    """Load start, ready, worker start-up and monitor ticks each bump view.version."""
    cat = Catalog([variant("v", p50_ms=1.0, load_ms=700.0)])
    sim, pol = _run(cat, poisson(10, 5, 1), cluster(), 12.0, route_variant="v",
                    initial=[LoadVariant("v", 0, 1)], script=[(1.0, AddWorker("cpu8"))])
    versions = [v for _, v, _ in pol.log]
    assert versions == sorted(versions) and len(set(versions)) > 5
    assert sim.cluster.worker(1).state is WorkerState.RUNNING


def test_queries_refused_for_lack_of_capacity_are_dropped_violations_not_rejections() -> None:
    """Results contract: a query no instance can take *now* (INFaaS with ``when_no_room:
    reject``: its variant finds no room on the one worker the first variant fills) is
    ``dropped`` — admitted, and a violation — never ``rejected``."""
    cat = Catalog([variant("a", p50_ms=1.0, cores=2, model="ma"), variant("b", p50_ms=1.0, cores=2, model="mb")])
    apps = (App("first", Requirements(variant="a", latency_slo_ms=100.0), 0.5),
            App("second", Requirements(variant="b", latency_slo_ms=100.0), 0.5))  # fmt: skip
    spec = ClusterSpec((InstanceType("two", 0.36, 2, 8.0, 0.0),), initial_workers=(("two", 1),),
                       max_workers=(("two", 1),))  # fmt: skip
    res = simulate(inputs(cat, poisson(50, 500, 3), apps=apps, cluster=spec, policy="infaas",
                          params={"selection": {"when_no_room": "reject"}}, duration_s=10.0))
    s = res.summary
    full, starved = sorted(s["per_app"].values(), key=lambda a: a["dropped"])  # whichever came first loaded
    assert s["rejected"] == 0 and full["dropped"] == 0 and starved["dropped"] == starved["queries"] > 0
    assert s["violations"] == s["late"] + s["dropped"] and s["violation_rate"] > 0.3
