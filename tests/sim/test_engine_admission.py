"""The server's admission in the simulator (``sim.admission``, :mod:`infaas_sim.admission`):
the per-instance queue cap and deadline shedding, checked against hand-computed queues."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sim_helpers import inputs, one_app, poisson, variant

from infaas_core.catalog import Catalog
from infaas_core.errors import ConfigError
from infaas_core.metrics import COMPLETED, DROPPED, QueryTable
from infaas_sim.admission import AdmissionSettings, RowEstimate, estimate_finish_ms, late
from infaas_sim.run import simulate

US = 1e-6
SERVICE_MS = 10.0


def _adm(max_queue: int | None = None, shed: bool = False, depth: int = 0) -> dict[str, object]:
    return {"max_queue": max_queue, "shed_by_deadline": shed, "service_estimate_answers": 256,
            "max_rows_in_flight": depth}  # fmt: skip


def _run(times: np.ndarray, slo_ms: float = 1e9, **adm: Any) -> tuple[dict[str, Any], QueryTable]:
    cat = Catalog([variant("v", p50_ms=SERVICE_MS, max_batch=1)])
    res = simulate(inputs(cat, times, apps=one_app("v", slo_ms), latency_model="deterministic",
                          admission=_adm(**adm), duration_s=float(times[-1]) + 1.0))
    assert res.queries is not None
    return res.summary, res.queries


def test_queue_cap_refuses_the_query_that_finds_it_full() -> None:
    # ten queries 1 us apart at one replica of 10 ms: q0 starts, q1-q3 wait (3 = the cap), q4-q9
    # each find 3 waiting and are refused at once
    times = 1.0 + US * np.arange(10)
    s, q = _run(times, max_queue=3)
    assert s["shed"] == {"queue_full": 6, "deadline_admission": 0, "deadline_queue": 0}
    assert s["completed"] == 4 and s["dropped"] == 6
    status = np.asarray(q.status)
    assert (status[:4] == COMPLETED).all() and (status[4:] == DROPPED).all()
    assert (np.asarray(q.variant)[4:] == 0).all()  # recorded with the instance's variant, as the server's 429
    expected = 1.0 + np.arange(1, 5, dtype=np.float64) * SERVICE_MS / 1000.0
    np.testing.assert_allclose(np.asarray(q.finish_s)[:4], expected, atol=1e-5)


def test_rows_in_flight_are_not_waiting() -> None:
    # with a pipe of 2 rows per replica (max_rows_in_flight), one not-started query sits in the
    # replica's pipe: 5 are admitted (1 in service, 1 in the pipe, 3 waiting), 5 refused
    s, _ = _run(1.0 + US * np.arange(10), max_queue=3, depth=2)
    assert s["shed"]["queue_full"] == 5 and s["completed"] == 5


def test_a_query_that_waits_once_the_queue_drains_is_admitted() -> None:
    # the same burst, then one query after the queue has drained: admitted
    times = np.concatenate([1.0 + US * np.arange(10), [2.0]])
    s, q = _run(times, max_queue=3)
    assert s["shed"]["queue_full"] == 6 and np.asarray(q.status)[-1] == COMPLETED


def test_deadline_admission_refuses_an_estimated_finish_past_the_slo() -> None:
    # SLO 35 ms, 10 ms per query, one replica: the estimate is ahead x 10 + 10 ms, so with 0,
    # 1 and 2 ahead (0, 20, 30 ms) a query is admitted and with 3 ahead (40 ms) refused
    s, _ = _run(1.0 + US * np.arange(8), slo_ms=35.0, shed=True)
    assert s["shed"] == {"queue_full": 0, "deadline_admission": 5, "deadline_queue": 0}
    assert s["completed"] == 3 and s["late"] == 0


def test_queries_before_the_first_replica_is_ready_are_not_shed() -> None:
    # the executor's rule: deadlines apply once a replica has been ready (the policy loaded for
    # the queries that wait for the load); a 200 ms load with the same burst before it
    cat = Catalog([variant("v", p50_ms=SERVICE_MS, max_batch=1, load_ms=200.0)])
    times = 0.001 + US * np.arange(8)
    res = simulate(inputs(cat, times, apps=one_app("v", 35.0), latency_model="deterministic",
                          admission=_adm(shed=True), duration_s=2.0))
    assert res.summary["shed"] == {"queue_full": 0, "deadline_admission": 0, "deadline_queue": 0}
    assert res.summary["dropped"] == 0 and res.summary["late"] == 8  # all served, late (the load is 200 ms)


def test_shedding_keeps_served_queries_within_their_deadline() -> None:
    # exponential service at high load: every query that was served started early enough to
    # finish by its SLO at its profiled latency, and the sheds add up to the dropped queries
    cat = Catalog([variant("v", p50_ms=SERVICE_MS, max_batch=1)])
    slo_ms = 60.0
    times = 0.5 + poisson(95.0, 4000, seed=3)
    res = simulate(inputs(cat, times, apps=one_app("v", slo_ms), latency_model="exponential",
                          admission=_adm(shed=True), duration_s=float(times[-1]) + 1.0))
    s, q = res.summary, res.queries
    assert q is not None
    shed = s["shed"]
    assert shed["deadline_admission"] > 0 and shed["deadline_queue"] > 0
    assert sum(shed.values()) == s["dropped"]
    served = np.asarray(q.batch_size) > 0
    wait_ms = (np.asarray(q.start_s)[served] - np.asarray(q.arrival_s)[served]) * 1000.0
    assert (wait_ms + SERVICE_MS <= slo_ms + 1e-6).all()
    # without the admission the same load serves many queries late
    off = simulate(inputs(cat, times, apps=one_app("v", slo_ms), latency_model="exponential",
                          duration_s=float(times[-1]) + 1.0)).summary
    assert off["late"] > s["late"] and "shed" not in off


def test_off_by_default_no_summary_key() -> None:
    cat = Catalog([variant("v", p50_ms=SERVICE_MS, max_batch=1)])
    s = simulate(inputs(cat, 1.0 + US * np.arange(10))).summary
    assert "shed" not in s and "admission" not in s["sim"]


def test_rule_functions_follow_the_executor() -> None:
    assert estimate_finish_ms(0, 1, 5.0, 5.0, float("inf")) == 0.0  # nothing ahead: it starts now
    assert estimate_finish_ms(4, 2, 5.0, 5.0, float("inf")) == 15.0  # 4 rows x 5 ms over 2 replicas + own
    assert estimate_finish_ms(4, 0, 5.0, 5.0, 100.0) == 105.0  # none serving: the start's rest + own
    assert estimate_finish_ms(4, 0, 5.0, 5.0, float("inf")) == float("inf")
    assert late(30.0, 10.0, 35.0) and not late(25.0, 10.0, 35.0)
    r = RowEstimate(4.0, 2)
    assert r.ms == 4.0
    r.add(10.0, 2)  # 5 ms per row
    r.add(6.0, 3)  # (10 + 6) / 5 = 3.2, newest 2.0: 3.2
    assert r.ms == pytest.approx(3.2)
    r.add(30.0, 3)  # window of 2: (6 + 30) / 6 = 6.0, newest 10.0: 10.0
    assert r.ms == pytest.approx(10.0)


@pytest.mark.parametrize("bad", [{"max_queue": 0}, {"max_queue": True}, {"shed_by_deadline": "yes"},
                                 {"service_estimate_answers": 0}, {"max_rows_in_flight": -1}, {"oops": 1}])
def test_bad_settings_name_the_key(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"sim\.admission"):
        AdmissionSettings.from_mapping({**_adm(), **bad})
