"""Streaming mode: memory does not grow with the number of queries, and the counts equal
those of the same run with per-query records."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sim_helpers import REPO, big_cpu_cluster, one_app, policy_params, sim_settings, variant

from infaas_core.catalog import Catalog
from infaas_core.workload import generate, generate_chunks
from infaas_sim import Arrivals, SimInputs, simulate


def _peak_rss_mb(queries: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_streaming.py"), "--queries", str(queries), "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.slow
def test_streaming_memory_is_flat_in_the_number_of_queries() -> None:
    """Peak RSS of a 2M-query streaming run is within 25 MB of a 0.5M-query run (per-query
    records would need ~150 MB more)."""
    small = _peak_rss_mb(500_000)
    large = _peak_rss_mb(2_000_000)
    assert small["completed"] > 0.99 * 500_000 and large["completed"] > 0.99 * 2_000_000
    assert large["peak_rss_mb"] - small["peak_rss_mb"] < 25.0, (small, large)


def test_streaming_counts_equal_the_recorded_run() -> None:
    """Same arrivals, same seed: streaming and recorded runs agree on every count and the
    mean latency; quantiles agree within the sketch's relative error."""
    cat = Catalog([variant("v", p50_ms=2.0, p99_ms=5.0, max_batch=4, slope_ms=0.5)])
    kw = {"rate_qps": 1500.0, "duration_s": 20.0, "seed": 3}
    full = generate("poisson", **kw).arrivals_s

    def run(stream: bool) -> dict:
        if stream:
            arr = Arrivals(lambda: generate_chunks("poisson", chunk_size=4096, **kw), 20.0, None, "poisson")
        else:
            arr = Arrivals.from_array(full, 20.0, "poisson")
        inp = SimInputs(cat, big_cpu_cluster(), one_app("v", slo_ms=8.0), arr, policy="static",
                        policy_params=policy_params("static", {"replicas": 2}), seed=5,
                        sim=sim_settings(stream=stream, progress="off", drop_late=True))
        res = simulate(inp)
        assert (res.queries is None) == stream
        return res.summary

    a, b = run(False), run(True)
    for k in ("queries", "completed", "late", "dropped", "rejected", "cost_usd"):
        assert a[k] == b[k], k
    assert a["latency_ms"]["mean"] == pytest.approx(b["latency_ms"]["mean"], rel=1e-9)
    for q in ("p50", "p99"):
        assert b["latency_ms"][q] == pytest.approx(a["latency_ms"][q], rel=0.02)
    assert b["latency_source"].startswith("sketch") and a["latency_source"] == "exact"
    assert np.isfinite(b["latency_ms"]["p99"])


def test_stream_setting_decides_even_when_the_trace_length_is_known() -> None:
    """sim.stream=true with a whole trace in memory still keeps no per-query records."""
    from sim_helpers import inputs, poisson

    cat = Catalog([variant("v")])
    res = simulate(inputs(cat, poisson(500, 2000, 1), stream=True))
    assert res.queries is None and res.summary["latency_source"].startswith("sketch")
    assert res.summary["completed"] == 2000
