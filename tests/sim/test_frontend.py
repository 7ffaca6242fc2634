"""The front-end stage (``sim.frontend``, :mod:`infaas_sim.frontend`): an exact FCFS queue
before the policy; disabled it changes nothing, enabled latency counts from the client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sim_helpers import inputs, poisson, variant

from infaas_core.catalog import Catalog
from infaas_core.errors import ConfigError
from infaas_sim.frontend import FrontendSettings, fcfs_departures, pass_through
from infaas_sim.run import simulate


def test_single_server_matches_a_hand_computed_queue() -> None:
    # arrivals 0, 1, 1.5, 6; service 2: starts 0, 2, 4, 6 -> departures 2, 4, 6, 8
    dep = fcfs_departures(np.array([0.0, 1.0, 1.5, 6.0]), 2.0, 1)
    assert dep.tolist() == [2.0, 4.0, 6.0, 8.0]


def test_two_servers_match_a_hand_computed_queue() -> None:
    # servers free at 0, 0. q0 (t=0, s=3) -> 3; q1 (t=0, s=1) -> 1; q2 (t=0.5, s=2) takes the
    # server free at 1 -> 3; q3 (t=0.5, s=1) takes the one free at 3 -> 4; q4 (t=10) -> 11
    dep = fcfs_departures(np.array([0.0, 0.0, 0.5, 0.5, 10.0]), np.array([3.0, 1.0, 2.0, 1.0, 1.0]), 2)
    assert dep.tolist() == [3.0, 1.0, 3.0, 4.0, 11.0]


@given(st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=60),
       st.lists(st.floats(0.0, 3.0, allow_nan=False), min_size=60, max_size=60))
def test_one_server_is_lindleys_recursion(gaps: list[float], service: list[float]) -> None:
    a = np.cumsum(gaps)
    s = np.array(service[: a.size])
    w = np.zeros(a.size)  # Lindley: W_{n+1} = max(0, W_n + S_n - (a_{n+1} - a_n))
    for i in range(1, a.size):
        w[i] = max(0.0, w[i - 1] + s[i - 1] - (a[i] - a[i - 1]))
    np.testing.assert_allclose(fcfs_departures(a, s, 1), a + w + s, rtol=0, atol=1e-9)


@given(st.lists(st.floats(0.0, 2.0, allow_nan=False), min_size=1, max_size=50),
       st.lists(st.floats(0.01, 3.0, allow_nan=False), min_size=50, max_size=50), st.integers(1, 4))
def test_c_servers_against_a_per_server_scan(gaps: list[float], service: list[float], c: int) -> None:
    """Reference: keep every server's free time and give each query, in order, the one free
    first (plain scan); the departures agree and no more than c queries are ever in service."""
    a = np.cumsum(gaps)
    s = np.array(service[: a.size])
    free = [0.0] * c
    ref, start = [], []
    for t, x in zip(a, s):
        k = min(range(c), key=lambda j: free[j])
        start.append(max(t, free[k]))
        free[k] = start[-1] + x
        ref.append(free[k])
    dep = fcfs_departures(a, s, c)
    np.testing.assert_allclose(dep, ref, rtol=0, atol=1e-9)
    begin = np.array(start)
    for t in begin:
        assert int(((begin <= t) & (dep > t + 1e-9)).sum()) <= c


def _fe(**kw: object) -> dict[str, object]:
    return {"enabled": True, "path": None, "cores": 1, "per_query_ms": 0.0, "per_item_ms": 0.0, "machine_cores": None,
            "loading_cores": 1.0, "background_cores": 0.0, "sharing": "window", "busy_cores": 1.0, "transfer_on_loop": False, **kw}


def test_settings_reject_bad_values_and_read_a_calibration_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sim\.frontend\.cores"):
        FrontendSettings.from_mapping(_fe(cores=0))
    with pytest.raises(ConfigError, match=r"sim\.frontend\.per_query_ms"):
        FrontendSettings.from_mapping(_fe(per_query_ms=-1.0))
    with pytest.raises(ConfigError, match="unknown setting"):
        FrontendSettings.from_mapping({**_fe(), "speed": 1})
    f = tmp_path / "x.frontend.yaml"
    f.write_text("cores: 2\nper_query_ms: 1.5\nper_item_ms: 0.25\nmeasured: here\n")
    fe = FrontendSettings.from_mapping(_fe(path=str(f)))
    assert (fe.cores, fe.per_query_ms, fe.per_item_ms, fe.service_ms) == (2, 1.5, 0.25, 1.75)
    (tmp_path / "bad.yaml").write_text("cores: 2\n")
    with pytest.raises(ConfigError, match="lacks per_query_ms"):
        FrontendSettings.from_mapping(_fe(path=str(tmp_path / "bad.yaml")))


def test_pass_through_keeps_the_clients_arrivals() -> None:
    fe = FrontendSettings.from_mapping(_fe(per_query_ms=2.0))
    p = pass_through(np.array([0.0, 0.001, 0.010]), fe)
    np.testing.assert_allclose(p.policy_s, [0.002, 0.004, 0.012])
    np.testing.assert_allclose(p.client_s, [0.0, 0.001, 0.010])


def _run(frontend: dict[str, object] | None) -> dict[str, Any]:
    cat = Catalog([variant("v", p50_ms=2.0)])
    times = poisson(50.0, 2000, seed=3)
    if frontend is None:
        return simulate(inputs(cat, times, latency_model="deterministic")).summary
    return simulate(inputs(cat, times, latency_model="deterministic", frontend=frontend)).summary


def test_enabled_front_end_adds_its_queue_to_latency_counted_from_the_client() -> None:
    """One 4 ms front-end core at 50 qps: every query waits its 4 ms service plus the M/D/1
    wait of the front end (Pollaczek-Khinchine mean: rho * s / (2 (1 - rho)), rho = 0.2), and
    the replica after it still serves each query in its 2 ms."""
    base = _run(None)
    fe = _run(_fe(per_query_ms=4.0))
    assert fe["queries"] == base["queries"] and fe["completed"] + fe["late"] == base["completed"] + base["late"]
    added = fe["latency_ms"]["mean"] - base["latency_ms"]["mean"]
    rho, s_ms = 50.0 * 0.004, 4.0
    expected = s_ms + rho * s_ms / (2 * (1 - rho))
    assert added == pytest.approx(expected, rel=0.1)  # a 40 s Poisson sample of the mean
    assert fe["sim"]["frontend"]["per_query_ms"] == 4.0


def test_disabled_front_end_changes_nothing() -> None:
    a = _run(None)
    b = _run(_fe(enabled=False, per_query_ms=4.0))
    for key in ("queries", "completed", "late", "violation_rate", "latency_ms"):
        assert json.dumps(a[key]) == json.dumps(b[key])
    assert "frontend" not in b["sim"]
