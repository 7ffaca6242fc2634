"""The control contract: the same actions in the same order give the same observable view in
every backend — the snapshot view (the reference), the simulator and the server.

Each scenario drives a harness (``harness.py``) and returns the views it saw at its
checkpoints (``Cluster.observable()``: workers and their states, free capacity and
utilisation, instances with states, replicas, flags and window statistics, and the refusals
counted by reason). A backend passes when every checkpoint equals the snapshot's.

The last tests show the suite has teeth: a backend that alone changes the idle-latency
decay, the utilisation rule or the meaning of ``LoadAndRoute`` fails it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from harness import HARNESSES, VARIANT, Harness, SimHarness, _ray_available, shutdown_ray

from infaas_core.actions import (
    AddWorker,
    LoadAndRoute,
    LoadVariant,
    RemoveWorker,
    Route,
    SetFlags,
    SetScaleDown,
    UnloadVariant,
)  # fmt: skip

V = VARIANT.name
Views = list[dict[str, Any]]


def _server_available() -> str | None:
    try:
        import infaas_real.runtime  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the real extra is part of `make test`
        return f"the real backend is not installed ({exc})"
    return None


@pytest.fixture(scope="module", autouse=True)
def _one_ray_cluster_per_module() -> Iterator[None]:
    """The Ray harness's cluster is started once (on first use) and stopped after the module."""
    yield
    shutdown_ray()


@pytest.fixture(params=sorted(HARNESSES))
def make(request: pytest.FixtureRequest) -> Iterator[Callable[[], Harness]]:
    if request.param in ("server", "ray") and (why := _server_available()):
        pytest.skip(why)
    if request.param == "ray" and (why := _ray_available()):
        pytest.skip(why)
    made: list[Harness] = []

    def build() -> Harness:
        h = HARNESSES[request.param]()
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()


# -- scenarios -----------------------------------------------------------------------------
def loads_and_replicas(h: Harness) -> Views:
    """LoadVariant: a new instance is LOADING, then READY; a second load on the same worker adds
    a replica to that instance; loads that do not fit, on an unknown variant or with a bad
    count are refused by reason, and take nothing."""
    seen = []
    assert h.apply([LoadVariant(V, 0)]) == [None]
    seen.append(h.observable())
    h.settle()
    seen.append(h.observable())
    assert h.apply([LoadVariant(V, 0), LoadVariant(V, 0), LoadVariant("nope", 0), LoadVariant(V, 0, 0)]) == [
        None, "load_no_free_cores", "load_unknown_variant", "load_bad_replicas"]
    h.settle()
    seen.append(h.observable())
    return seen


def load_and_route(h: Harness) -> Views:
    """LoadAndRoute onto a worker that holds the variant routes there and loads nothing;
    onto one that does not, it loads one replica and routes to the new instance."""
    h.apply([LoadVariant(V, 0), AddWorker("two")])
    h.settle()
    inst, why = h.route(LoadAndRoute(V, 0))
    assert why is None and inst is not None and inst.worker_id == 0 and inst.replicas == 1
    seen = [h.observable()]
    inst2, why = h.route(LoadAndRoute(V, 1))
    assert why is None and inst2 is not None and inst2.worker_id == 1
    h.settle()
    seen.append(h.observable())
    return seen


def unloads(h: Harness) -> Views:
    """UnloadVariant of fewer replicas than the instance has frees them at once; of all of
    them the instance is UNLOADING (holding its resources) until it has drained; unloading
    an unknown or unloading instance is refused; a route to an unloading instance is refused."""
    h.apply([LoadVariant(V, 0, 2)])
    h.settle()
    (iid,) = [i.id for i in h.cluster.instances.values()]
    h.apply([UnloadVariant(iid, 1)])
    seen = [h.observable()]
    h.apply([UnloadVariant(iid, 5)])
    assert h.route(Route(iid)) == (None, "route_instance_unloading")
    assert h.apply([UnloadVariant(iid, 1), UnloadVariant(99, 1)]) == ["unload_unknown_instance"] * 2
    seen.append(h.observable())
    h.settle()
    assert h.route(Route(iid)) == (None, "route_unknown_instance")
    seen.append(h.observable())
    return seen


def workers(h: Harness) -> Views:
    """AddWorker starts a STARTING worker (RUNNING after its start-up), never past
    max_workers; RemoveWorker stops a worker (and unloads what it runs), once."""
    assert h.apply([AddWorker("two"), AddWorker("two"), AddWorker("gpu")]) == [
        None, "add_worker_at_max", "add_worker_unknown_type"]
    seen = [h.observable()]
    assert h.apply([LoadVariant(V, 1)]) == ["load_worker_not_running"]
    h.settle()
    seen.append(h.observable())
    h.apply([LoadVariant(V, 1)])
    h.settle()
    assert h.apply([RemoveWorker(1), RemoveWorker(1), RemoveWorker(7)]) == [
        None, "remove_worker_stopping", "remove_worker_unknown"]
    seen.append(h.observable())
    h.settle()
    seen.append(h.observable())
    return seen


def flags(h: Harness) -> Views:
    """SetFlags / SetScaleDown change what they name; unknown targets are refused."""
    h.apply([LoadVariant(V, 0)])
    h.settle()
    (iid,) = list(h.cluster.instances)
    v0 = h.cluster.version
    assert h.apply([SetFlags(iid, True, False), SetScaleDown(0, frozenset({"mlp_small"})),
                    SetFlags(42, True, True), SetScaleDown(9, frozenset())]) == [
        None, None, "set_flags_unknown_instance", "set_scale_down_unknown_worker"]
    assert h.cluster.version > v0
    return [h.observable()]


def windows(h: Harness) -> Views:
    """Window statistics and utilisation come from the raw counts of a window, by one rule;
    an idle window decays the observed latency by the policy's divisor."""
    h.apply([LoadVariant(V, 0, 2)])
    h.settle()
    (inst,) = list(h.cluster.instances.values())
    c = inst.counters
    for _ in range(10):
        c.arrived(100.0)
    c.completions, c.latency_sum_ms, c.batches, c.batch_items, c.busy_s = 8, 80.0, 4, 8, 0.5
    h.close_window(2.0)
    seen = [h.observable()]
    h.close_window(2.0)  # nothing happened: latency decays, rate/batch/SLO reset
    seen.append(h.observable())
    return seen


SCENARIOS = [loads_and_replicas, load_and_route, unloads, workers, flags, windows]


def run(h: Harness, scenario: Callable[[Harness], Views]) -> Views:
    return scenario(h)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_backend_matches_the_snapshot_reference(make: Callable[[], Harness], scenario: Callable[[Harness], Views]) -> None:
    from harness import SnapshotHarness

    got = run(make(), scenario)
    want = run(SnapshotHarness(), scenario)
    assert got == want


def test_window_statistics_follow_the_definitions() -> None:
    """The reference itself: rate = arrivals / window, latency = mean over completions,
    batch = items / batches, SLO = mean over arrivals, CPU utilisation = busy x cores /
    (vCPUs x window); an idle window divides the latency by the CPU divisor (15)."""
    from harness import SnapshotHarness

    first, idle = windows(SnapshotHarness())
    (w,) = first["workers"]
    (i,) = w["instances"]
    assert (i["rate_qps"], i["observed_latency_ms"], i["batch"], i["slo_ms"]) == (5.0, 10.0, 2.0, 100.0)
    assert w["utilization"] == {"cpu": pytest.approx(0.5 * 1 / (2 * 2.0))}
    (i2,) = idle["workers"][0]["instances"]
    assert (i2["rate_qps"], i2["observed_latency_ms"], i2["batch"], i2["slo_ms"]) == (0.0, pytest.approx(10.0 / 15), 0.0, float("inf"))


# -- the suite has teeth ------------------------------------------------------------------
class OwnDecay(SimHarness):
    """A backend that halves an idle instance's latency itself (the server used to)."""

    def close_window(self, window_s: float) -> None:
        before = {i.id: (i.observed_latency_ms, i.counters.completions) for i in self.cluster.instances.values()}
        super().close_window(window_s)
        for i in self.cluster.instances.values():
            lat, done = before[i.id]
            if not done:
                i.observed_latency_ms = lat * 0.5


class OwnUtilisation(SimHarness):
    """A backend that reports busy time over the window, ignoring cores and vCPUs."""

    def close_window(self, window_s: float) -> None:
        super().close_window(window_s)
        for w in self.cluster.workers:
            w.utilization = {"cpu": min(sum(i.busy_s for i in w.instances) / window_s, 1.0)}


class OwnLoadAndRoute(SimHarness):
    """A backend whose LoadAndRoute adds a replica where the variant is already loaded (the
    simulator used to)."""

    def route(self, d: Route | LoadAndRoute) -> Any:
        if isinstance(d, LoadAndRoute) and self.cluster.worker(d.worker_id).holding(d.variant) is not None:
            self.cluster.apply([LoadVariant(d.variant, d.worker_id)])
        return super().route(d)


@pytest.mark.parametrize(("drifted", "scenario"), [(OwnDecay, windows), (OwnUtilisation, windows),
                                                   (OwnLoadAndRoute, load_and_route)],
                         ids=["decay", "utilisation", "load_and_route"])
def test_a_backend_that_drifts_alone_fails_the_contract(drifted: type[Harness], scenario: Callable[[Harness], Views]) -> None:
    from harness import SnapshotHarness

    want = run(SnapshotHarness(), scenario)
    assert run(SimHarness(), scenario) == want  # the honest simulator passes
    try:
        got = run(drifted(), scenario)
    except AssertionError:
        return  # the scenario's own checks caught it
    assert got != want


def test_a_lost_worker_is_retired_at_once_with_its_instances() -> None:
    """``Cluster.worker_lost`` (a mechanism's report): the worker and its instances are gone
    from the view at once, its capacity with them, counted; a second report is ignored; the
    max_workers room it held is free again."""
    from harness import SnapshotHarness

    h = SnapshotHarness()
    h.apply([LoadVariant(V, 0), AddWorker("two")])
    h.settle()
    h.apply([LoadVariant(V, 1, 2)])
    h.settle()
    lost = h.cluster.worker(1)
    v0 = h.cluster.version
    h.cluster.worker_lost(lost)
    h.cluster.worker_lost(lost)
    assert h.cluster.version > v0
    assert [w.id for w in h.cluster.workers] == [0]
    assert [i.worker_id for i in h.cluster.instances.values()] == [0]
    assert [i.worker_id for i in h.cluster.instances_of(V)] == [0]
    assert h.cluster.counts["workers_lost"] == 1 and h.cluster.counts["instances_lost"] == 1
    assert h.cluster.gone_workers == [lost] and lost.removed_s == h.cluster.now_s
    assert h.route(Route(max(h.cluster.instances) + 1)) == (None, "route_unknown_instance")
    assert h.apply([AddWorker("two")]) == [None]  # its max_workers room is free again
