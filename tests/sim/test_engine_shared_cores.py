"""Shared cores (``sim.frontend.machine_cores``, :mod:`infaas_sim.frontend`): the front end's
CPU, the CPU replicas' service and loading replicas over the machine's cores stretch the CPU
replicas' service of the next window (window-scale processor sharing)."""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import inputs, one_app, variant

from infaas_core.catalog import Catalog
from infaas_core.errors import ConfigError
from infaas_sim.frontend import FrontendSettings
from infaas_sim.run import simulate

SERVICE_MS = 10.0
FRONT_MS = 5.0


def _fe(machine_cores: int | None, loading_cores: float = 1.0, background_cores: float = 0.0) -> dict[str, object]:
    return {"enabled": True, "path": None, "cores": 1, "per_query_ms": FRONT_MS, "per_item_ms": 0.0,
            "machine_cores": machine_cores, "loading_cores": loading_cores,
            "background_cores": background_cores, "sharing": "window", "busy_cores": 1.0, "transfer_on_loop": False}  # fmt: skip


def _service_ms(rate_qps: float, machine_cores: int | None, load_ms: float = 0.0, duration_s: float = 4.0,
                **fe: float) -> tuple[np.ndarray, np.ndarray]:
    cat = Catalog([variant("v", p50_ms=SERVICE_MS, max_batch=1, load_ms=load_ms)])
    times = np.arange(1, int(rate_qps * duration_s)) / rate_qps
    res = simulate(inputs(cat, times, apps=one_app("v"), latency_model="deterministic", stats_period_s=1.0,
                          frontend=_fe(machine_cores, **fe), duration_s=duration_s))
    q = res.queries
    assert q is not None
    served = np.asarray(q.batch_size) > 0
    start = np.asarray(q.start_s)[served]
    return start, (np.asarray(q.finish_s)[served] - start) * 1000.0


def test_own_cores_or_enough_cores_leave_service_as_profiled() -> None:
    for cores in (None, 2):
        _, ms = _service_ms(80.0, cores)
        np.testing.assert_allclose(ms, SERVICE_MS, atol=1e-9)


def test_one_shared_core_stretches_service_by_the_windows_demand() -> None:
    # 80 q/s on one core: front end 80 x 5 ms + service 80 x 10 ms = 1.2 core-s per 1 s window,
    # so from the second window on each query takes about 10 ms x 1.2 = 12 ms
    start, ms = _service_ms(80.0, 1)
    first = ms[start < 1.0]
    np.testing.assert_allclose(first, SERVICE_MS, atol=1e-9)  # nothing measured before the first window closed
    later = ms[(start >= 2.0) & (start < 3.0)]
    assert later.size > 50
    assert np.ptp(later) < 1e-9  # one stretch per window
    assert 1.15 * SERVICE_MS <= later[0] <= 1.25 * SERVICE_MS
    # below the machine's capacity (40 q/s: 0.6 core-s per s) nothing stretches
    _, low = _service_ms(40.0, 1)
    np.testing.assert_allclose(low, SERVICE_MS, atol=1e-9)


def test_a_loading_replica_takes_its_cores() -> None:
    # the same 40 q/s (0.6 core-s per s) with a replica loading for 1.5 s: in the first window
    # the load's 1 core-s comes on top, so the second window's service stretches
    start, ms = _service_ms(40.0, 1, load_ms=1500.0)
    second = ms[(start >= 1.5) & (start < 2.0)]
    assert second.size and (second > SERVICE_MS * 1.05).all()
    start0, ms0 = _service_ms(40.0, 1, load_ms=1500.0, loading_cores=0.0)  # the load costs no CPU
    np.testing.assert_allclose(ms0[(start0 >= 1.5) & (start0 < 2.0)], SERVICE_MS, atol=1e-9)


def test_other_work_on_the_machine_counts_too() -> None:
    # 40 q/s (0.6 core-s per s) on two cores with 1.6 cores of other work: 2.2 / 2 = 1.1
    start, ms = _service_ms(40.0, 2, background_cores=1.6)
    later = ms[(start >= 2.0) & (start < 3.0)]
    assert later.size and np.ptp(later) < 1e-9 and 1.05 * SERVICE_MS <= later[0] <= 1.15 * SERVICE_MS


def test_bad_machine_cores_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sim\.frontend\.machine_cores"):
        FrontendSettings.from_mapping(_fe(0))


def _event_run(times: np.ndarray, machine_cores: int, busy_cores: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    cat = Catalog([variant("v", p50_ms=SERVICE_MS, max_batch=1)])
    fe = {**_fe(machine_cores), "sharing": "event", "busy_cores": busy_cores}
    res = simulate(inputs(cat, times, apps=one_app("v"), latency_model="deterministic", frontend=fe,
                          duration_s=float(times[-1]) + 1.0))  # fmt: skip
    q = res.queries
    assert q is not None
    assert res.summary["sim"]["frontend"]["sharing"] == "event"
    return np.asarray(q.start_s), np.asarray(q.finish_s)


def test_event_sharing_stretches_a_batch_only_while_the_front_end_serves() -> None:
    # two queries at once on one core: the front end serves the first over [1, 1.005] and the
    # second over [1.005, 1.010]; the first's batch starts at 1.005 and runs at half speed while
    # the front end serves the second (demand 2 on 1 core), then alone: 2.5 ms of work by
    # 1.010, the other 7.5 ms after it; the second starts when the replica frees, with the front
    # end idle, and takes its 10 ms
    start, fin = _event_run(np.array([1.0, 1.0, 3.0]), machine_cores=1)
    np.testing.assert_allclose(start[:2], [1.005, 1.0175], atol=1e-9)
    np.testing.assert_allclose(fin[:2] - start[:2], [0.0125, 0.010], atol=1e-9)
    np.testing.assert_allclose(fin[2] - start[2], 0.010, atol=1e-9)  # a lone query: nothing overlaps it
    # the front end using half a core while it serves: speed 1 / 1.5 for those 5 ms
    start, fin = _event_run(np.array([1.0, 1.0, 3.0]), machine_cores=1, busy_cores=0.5)
    np.testing.assert_allclose(fin[0] - start[0], 0.005 + (0.010 - 0.005 / 1.5), atol=1e-9)
    # two cores hold the replica and the front end: no stretch
    start, fin = _event_run(np.array([1.0, 1.0, 3.0]), machine_cores=2)
    np.testing.assert_allclose(fin - start, 0.010, atol=1e-9)


def test_event_sharing_walks_every_busy_period_it_overlaps() -> None:
    from infaas_sim.sharing import EventSharing

    # the front end serves over [0, 1) and [2, 3) (1 s per query), idle elsewhere; 1 core,
    # busy_cores 1: speed 1/2 inside, 1 outside
    sh = EventSharing(1, 1.0, 1.0, 0.0, [1.0, 3.0], 1.0)
    assert (sh.times, sh.levels) == ([0.0, 1.0, 2.0, 3.0], [1, 0, 1, 0])
    assert sh.finish(0.0, 0.5, 0.0) == pytest.approx(1.0)  # half speed for a second
    assert sh.finish(0.5, 2.0, 0.0) == pytest.approx(3.25)  # work 0.25 by 1, 1.0 by 2, 0.5 by 3, 0.25 after
    assert sh.finish(-1.0, 0.5, 0.0) == pytest.approx(-0.5)  # before the first change: level 0
    assert sh.finish(5.0, 1.0, 0.0) == pytest.approx(6.0)
    assert sh.finish(5.0, 1.0, 1.0) == pytest.approx(7.0)  # another busy replica: demand 2 on 1 core


def test_bad_sharing_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"sim\.frontend\.sharing"):
        FrontendSettings.from_mapping({**_fe(1), "sharing": "hourly"})


def test_with_the_transfer_on_the_loop_a_batch_waits_for_the_front_end_and_later_queries_join() -> None:
    # two queries at once, max_batch 2, two cores (no stretch): the first reaches the instance at
    # 1.005 while the front end serves the second until 1.010; its batch waits for the loop and
    # the second joins it: one batch of two from 1.010
    cat = Catalog([variant("v", p50_ms=SERVICE_MS, max_batch=2)])
    fe = {**_fe(2), "sharing": "event", "busy_cores": 1.0, "transfer_on_loop": True}
    res = simulate(inputs(cat, np.array([1.0, 1.0, 3.0]), apps=one_app("v"), latency_model="deterministic",
                          frontend=fe, duration_s=4.0))  # fmt: skip
    q = res.queries
    assert q is not None
    np.testing.assert_allclose(np.asarray(q.start_s), [1.010, 1.010, 3.005], atol=1e-9)
    assert list(np.asarray(q.batch_size)) == [2, 2, 1]
    assert res.summary["sim"]["frontend"]["transfer_on_loop"] is True
    with pytest.raises(ConfigError, match=r"sim\.frontend\.transfer_on_loop"):
        FrontendSettings.from_mapping({**_fe(2), "transfer_on_loop": True})  # the window model has no busy periods


def test_loop_free_is_when_the_request_the_front_end_serves_leaves_it() -> None:
    from infaas_sim.sharing import EventSharing

    # the front end serves three requests back to back, 0.5 s each: [0.5, 1.0), [1.0, 1.5), [1.5, 2.0)
    sh = EventSharing(2, 1.0, 1.0, 0.0, [1.0, 1.5, 2.0], 0.5, transfer_on_loop=True)
    assert (sh.times, sh.levels) == ([0.5, 1.0, 1.5, 2.0], [1, 1, 1, 0])  # back to back: busy throughout
    assert [sh.loop_free(t) for t in (0.2, 0.7, 1.0, 1.2, 1.99, 2.0, 9.0)] == [0.2, 1.0, 1.5, 1.5, 2.0, 2.0, 9.0]
