"""The simulator against queueing theory: one CPU variant, max batch 1, the ``static``
policy, Poisson arrivals at utilisation 0.8, 1,000,000 queries each.

- M/D/1 (``latency_model=deterministic``): Pollaczek–Khinchine mean response time
  ``S + rho * S / (2 (1 - rho))``;
- M/M/c (``exponential``), c = 1 and c = 4 replicas sharing one queue: Erlang C,
  ``S + C(c, a) / (c mu - lambda)``.

Each must match within 3%. A Lindley-recursion cross-check shows the M/D/1 run is exact
for its sample path (so the 3% is sampling error, not model error).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sim_helpers import inputs, poisson, variant

from infaas_core.catalog import Catalog
from infaas_sim import simulate

N = 1_000_000  # >= 400,000 asked; 1M keeps the sampling error (~1%) well inside 3%
RHO = 0.8
S_MS = 1.0


def erlang_c(c: int, a: float) -> float:
    """Probability an arrival waits in M/M/c with offered load ``a = lambda / mu``."""
    top = a**c / math.factorial(c) / (1.0 - a / c)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_erlang_c_textbook_value() -> None:
    """Erlang C helper: c=2, a=1 -> 1/3 (textbook)."""
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)


def _mean_latency_ms(model: str, replicas: int, seed: int) -> tuple[float, int]:
    lam = RHO * replicas / (S_MS / 1000.0)
    times = poisson(lam, N, seed)
    cat = Catalog([variant("v", p50_ms=S_MS, p99_ms=3 * S_MS)])
    res = simulate(inputs(cat, times, params={"replicas": replicas}, latency_model=model, seed=seed))
    s = res.summary
    assert s["queries"] == N and s["completed"] == N and s["rejected"] == 0
    return s["latency_ms"]["mean"], s["queries"]


@pytest.mark.slow
def test_md1_mean_matches_pollaczek_khinchine() -> None:
    """M/D/1 at rho 0.8: mean response = S + rho S / (2 (1 - rho)) within 3%."""
    mean, _ = _mean_latency_ms("deterministic", 1, seed=1)
    theory = S_MS + RHO * S_MS / (2 * (1 - RHO))
    assert mean == pytest.approx(theory, rel=0.03)


@pytest.mark.slow
def test_mm1_mean_matches_erlang_c() -> None:
    """M/M/1 at rho 0.8 (Erlang C with c = 1 is S / (1 - rho)) within 3%."""
    mean, _ = _mean_latency_ms("exponential", 1, seed=2)
    theory = S_MS + erlang_c(1, RHO) / (1 / S_MS - RHO / S_MS)
    assert theory == pytest.approx(S_MS / (1 - RHO))
    assert mean == pytest.approx(theory, rel=0.03)


@pytest.mark.slow
def test_mm4_mean_matches_erlang_c() -> None:
    """M/M/4 (4 replicas, one shared queue) at rho 0.8: S + C(4, a) / (4 mu - lambda) within 3%."""
    c = 4
    mean, _ = _mean_latency_ms("exponential", c, seed=3)
    mu = 1.0 / S_MS
    lam = RHO * c * mu
    theory = S_MS + erlang_c(c, lam / mu) / (c * mu - lam)
    assert mean == pytest.approx(theory, rel=0.03)


def test_single_server_is_exactly_lindley() -> None:
    """Windowed bulk advancing equals the Lindley recursion of the same sample path."""
    times = poisson(700.0, 20_000, seed=5)
    cat = Catalog([variant("v", p50_ms=1.2)])
    res = simulate(inputs(cat, times, latency_model="deterministic"))
    s = np.full(times.size, 1.2e-3)
    cs = np.cumsum(s)
    finish = cs + np.maximum.accumulate(times - (cs - s))
    assert res.queries is not None
    np.testing.assert_allclose(res.queries.finish_s, finish, rtol=0, atol=1e-9)


@pytest.mark.parametrize("route_period_s", [0.0005, 0.01, 1.0])
def test_results_do_not_depend_on_the_routing_window(route_period_s: float) -> None:
    """With one instance the routing window cannot matter: identical per-query finish times."""
    times = poisson(1500.0, 5_000, seed=6)
    cat = Catalog([variant("v", p50_ms=1.0, max_batch=4, slope_ms=0.5)])
    base = simulate(inputs(cat, times, latency_model="profile", params={"replicas": 2}))
    other = simulate(inputs(cat, times, latency_model="profile", params={"replicas": 2},
                            route_period_s=route_period_s))
    assert base.queries is not None and other.queries is not None
    np.testing.assert_array_equal(base.queries.finish_s, other.queries.finish_s)
