"""Latency models: with no queueing, served latencies reproduce the profile — the lognormal
``profile`` model hits the measured p50 and p99, ``deterministic`` is the p50, and
``exponential`` has mean p50."""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import inputs, variant

from infaas_core.catalog import Catalog
from infaas_core.errors import UnknownNameError
from infaas_sim import simulate
from infaas_sim.latency import latency_model

SPACED = np.arange(50_000) * 0.1  # one query every 100 ms: never a queue


def _latencies(model: str) -> np.ndarray:
    cat = Catalog([variant("v", p50_ms=4.0, p99_ms=9.0)])
    q = simulate(inputs(cat, SPACED, latency_model=model)).queries
    assert q is not None and (q.start_s == q.arrival_s).all()
    return q.latency_ms


def test_profile_model_matches_p50_and_p99() -> None:
    lat = _latencies("profile")
    assert np.quantile(lat, 0.5) == pytest.approx(4.0, rel=0.02)
    assert np.quantile(lat, 0.99) == pytest.approx(9.0, rel=0.04)


def test_deterministic_model_is_the_p50() -> None:
    np.testing.assert_allclose(_latencies("deterministic"), 4.0, rtol=1e-9)


def test_exponential_model_has_mean_p50() -> None:
    lat = _latencies("exponential")
    assert lat.mean() == pytest.approx(4.0, rel=0.02)
    assert np.quantile(lat, 0.5) == pytest.approx(4.0 * np.log(2), rel=0.03)


def test_latency_grows_with_the_batch_as_profiled() -> None:
    """A batch of b takes the interpolated p50(b) (deterministic model)."""
    cat = Catalog([variant("v", p50_ms=2.0, max_batch=8, slope_ms=1.0)])
    times = np.repeat(np.arange(100) * 1.0, 8)  # bursts of 8 simultaneous queries, 1 s apart
    q = simulate(inputs(cat, times, latency_model="deterministic", duration_s=100.0)).queries
    assert q is not None and (q.batch_size == 8).all()
    np.testing.assert_allclose(q.latency_ms, 2.0 + 7 * 1.0, rtol=1e-9)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="deterministic, exponential, profile"):
        latency_model("gaussian")
