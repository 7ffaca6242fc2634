"""INFaaS's way out of an all-blacklisted CPU variant (issue 11 acceptance; INFAAS.md §2.4
"all blacklisted", ``queryfe_server.cc:997-1020``), run in the simulator.

One model with a CPU variant (4 cores, 100 ms, two replicas on the CPU worker: ~20 q/s) and
an accelerator variant (a V100 plan, max_batch 8: ~400 q/s), one CPU and one GPU worker
from the start, a loose-SLO application (500 ms: INFaaS prefers the CPU) at 300 q/s, far
beyond the CPU. The CPU variant is loaded first, the monitor blacklists it within a period,
and then selection escapes to the smallest-max_batch plan on the GPU worker.
"""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import inputs, poisson, variant

from infaas_core.catalog import Catalog
from infaas_core.metrics import COMPLETED, QueryTable
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements
from infaas_sim import simulate

DURATION_S = 60.0
RATE_QPS = 300.0
SLO_MS = 500.0
MONITOR_PERIOD_S = 1.0  # configs/policy/infaas.yaml monitor_period_s


def _run(mode: str) -> QueryTable:
    cat = Catalog([
        variant("m-cpu", p50_ms=100.0, p99_ms=130.0, max_batch=1, cores=4, memory_mb=500.0, load_ms=1000.0,
                model="m", task="t"),
        variant("m-gpu", p50_ms=5.0, p99_ms=7.0, max_batch=8, slope_ms=2.0, hardware="gpu-v100",
                memory_mb=1000.0, load_ms=2000.0, model="m", task="t"),
    ])  # fmt: skip
    cpu = InstanceType("cpu8", 0.384, 8, 32.0, 60.0)
    gpu = InstanceType("gpu1", 3.06, 8, 61.0, 90.0, (("gpu-v100", 1),), (("gpu-v100", 16.0),))
    spec = ClusterSpec((cpu, gpu), (("cpu8", 1), ("gpu1", 1)), (("cpu8", 1), ("gpu1", 1)))
    apps = (App("loose", Requirements(task="t", min_accuracy=0.7, latency_slo_ms=SLO_MS), 1.0),)
    times = poisson(RATE_QPS, int(RATE_QPS * DURATION_S), 1)
    res = simulate(inputs(cat, times, apps=apps, cluster=spec, policy="infaas",
                          params={"selection": {"when_all_blacklisted": mode}}, duration_s=DURATION_S))
    assert res.queries is not None
    return res.queries


def _on_accelerator(q: QueryTable, mask: np.ndarray) -> float:
    hw = np.array([q.variant_hardware[i] if i >= 0 else "none" for i in q.variant[mask]])
    return float(np.mean(hw != "cpu")) if hw.size else 0.0


@pytest.fixture(scope="module")
def escape() -> QueryTable:
    return _run("escape")


def test_load_beyond_the_cpu_moves_to_the_accelerator_within_a_few_monitor_periods(escape: QueryTable) -> None:
    """Rule: with the CPU variant blacklisted, 90% of its queries (all once the accelerator
    instance takes queries: it is not blacklisted) go to the accelerator plan; the move is
    complete within three monitor periods and stays."""
    q = escape
    seconds = np.arange(int(DURATION_S))
    share = [_on_accelerator(q, (q.arrival_s >= t) & (q.arrival_s < t + 1)) for t in seconds]
    moved_s = next(t for t, s in zip(seconds, share, strict=True) if s >= 0.8)
    assert moved_s <= 3 * MONITOR_PERIOD_S
    after = q.arrival_s >= moved_s
    assert _on_accelerator(q, after) >= 0.95


def test_violations_after_the_move_stay_under_five_percent(escape: QueryTable) -> None:
    """Acceptance: once the accelerator serves (moved within 3 s, its 2 s load, then the
    queue that built up meanwhile drained at its ~400 q/s: by 10 s), fewer than 5% of the
    queries violate the SLO."""
    q = escape
    after = q.arrival_s >= 10.0
    late_or_dropped = q.status[after] != COMPLETED
    assert late_or_dropped.mean() < 0.05


def test_without_the_escape_the_cpu_variant_drowns() -> None:
    """The switch: ``when_all_blacklisted: load_next`` (our earlier rule) keeps most of the
    load on CPU variants, and most queries violate."""
    q = _run("load_next")
    after = q.arrival_s >= 10.0
    assert _on_accelerator(q, after) < 0.5
    assert (q.status[after] != COMPLETED).mean() > 0.5
