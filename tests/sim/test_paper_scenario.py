"""The paper's comparison as the simulator runs it (issue 11): warm-up excluded from the
metrics, the paper's per-instance cost (§6.2), dedicated baseline deployments, and the
experiment config that states them."""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import inputs, poisson, variant

from infaas_core.catalog import Catalog
from infaas_core.metrics import InstanceCostMeter, instance_cost_rate_usd_per_s
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements
from infaas_sim import simulate
from infaas_sim.config import apply_baselines


def test_warmup_queries_are_simulated_but_left_out_of_the_summary():
    """Rule (sim.warmup_s): a query arriving before the warm-up is in queries.parquet with its
    one final status, but in no summary count; duration_s and cost_usd cover the window after it."""
    cat = Catalog([variant("v", p50_ms=5.0)])
    times = poisson(50.0, 1000, seed=1)
    times = times[times < 10.0]
    res = simulate(inputs(cat, times, duration_s=10.0, params={"replicas": 1}, warmup_s=4.0))
    s, t = res.summary, res.queries
    assert t is not None and len(t) == times.size  # every query kept, each ended once
    t.check_exactly_once()
    assert s["queries"] == int(np.count_nonzero(times >= 4.0)) < times.size
    assert s["warmup_s"] == 4.0 and s["duration_s"] == pytest.approx(6.0)
    assert s["cost_usd"] == pytest.approx(6.0 / 3600.0)  # one $1/h worker over the 6 measured seconds
    base = simulate(inputs(cat, times, duration_s=10.0, params={"replicas": 1})).summary
    assert base["queries"] == times.size and base["warmup_s"] == 0.0


def test_warmup_longer_than_the_run_is_refused():
    from infaas_core.errors import ConfigError

    cat = Catalog([variant("v")])
    with pytest.raises(ConfigError, match=r"sim\.warmup_s"):
        simulate(inputs(cat, np.array([0.5]), duration_s=2.0, warmup_s=2.0))


def test_instance_cost_is_memory_share_times_price_over_time():
    """Rule (§6.2): a replica costs its memory's share of its worker's type times the price,
    while loaded. 2 replicas x 1 GB on a 256 GB, $1/h machine for 100 s = 2/256 x 100/3600 $;
    with a 40 s warm-up, 60 s of it. cost_usd (VM-hours) is the whole machine."""
    cat = Catalog([variant("v", memory_mb=1024.0)])
    times = np.linspace(0.1, 99.0, 50)
    s = simulate(inputs(cat, times, duration_s=100.0, params={"replicas": 2})).summary
    assert s["cost_instance_usd"] == pytest.approx(2 / 256 * 100 / 3600)
    assert s["cost_usd"] == pytest.approx(100 / 3600)
    w = simulate(inputs(cat, times, duration_s=100.0, params={"replicas": 2}, warmup_s=40.0)).summary
    assert w["cost_instance_usd"] == pytest.approx(2 / 256 * 60 / 3600)


def test_instance_cost_rule_uses_the_device_memory_of_an_accelerator_variant():
    p3 = InstanceType("p3", 3.6, 8, 61.0, 90.0, (("gpu-v100", 1),), (("gpu-v100", 16.0),))
    gv = variant("g", hardware="gpu-v100", memory_mb=1638.4)
    assert instance_cost_rate_usd_per_s(gv, p3) == pytest.approx(0.1 * 3.6 / 3600)
    m = InstanceCostMeter(since_s=10.0)
    m.change(0.0, 1.0)
    m.change(15.0, -0.5)  # 5 s at 1 after the warm-up, then 0.5
    assert m.total_usd(20.0) == pytest.approx(5.0 + 2.5)


def test_dedicated_clipper_plus_never_serves_two_applications_on_one_worker():
    """Rule (placement: dedicated): two applications pinned to the same variant get workers of
    their own, started at t=0 with AddWorker; no worker ever serves both."""
    cat = Catalog([variant("v", p50_ms=10.0, cores=2)])
    t = InstanceType("m", 1.0, 2, 8.0, 1.0)
    spec = ClusterSpec((t,), (("m", 1),), (("m", 8),))
    apps = (App("a", Requirements(variant="v", latency_slo_ms=1e9), 0.5),
            App("b", Requirements(variant="v", latency_slo_ms=1e9), 0.5))
    times = poisson(40.0, 400, seed=2)
    res = simulate(inputs(cat, times, apps=apps, cluster=spec, policy="clipper_plus", duration_s=float(times[-1]) + 1,
                          params={"placement": "dedicated", "provision_qps": 40.0}, warmup_s=3.0))
    q = res.queries
    assert q is not None
    served = q.batch_size > 0
    pairs = {(int(w), int(a)) for w, a in zip(q.worker[served], q.app[served], strict=True)}
    by_worker: dict[int, set[int]] = {}
    for w, a in pairs:
        by_worker.setdefault(w, set()).add(a)
    assert len(by_worker) >= 2 and all(len(apps_) == 1 for apps_ in by_worker.values())
    assert res.summary["violation_rate"] == 0.0  # warm-up covers the boot; each app's replica carries 20 q/s


def test_baselines_section_reaches_only_the_pinned_policies():
    """Rule (infaas_sim/config.py apply_baselines): an experiment's `baselines` keys are merged
    into pinned policies' params (nested too, where the policy has the key); INFaaS never sees them."""
    b = {"placement": "dedicated", "scaling": {"scale_out_cooldown_s": 300}}
    assert "placement" not in apply_baselines("infaas", {"name": "infaas"}, b)
    sm = apply_baselines("sagemaker_plus", {"placement": "shared", "scaling": {"scale_out_cooldown_s": 0, "slack": 1.05}}, b)
    assert sm["placement"] == "dedicated" and sm["scaling"] == {"scale_out_cooldown_s": 300, "slack": 1.05}
    assert "scaling" not in apply_baselines("clipper_plus", {"placement": "shared"}, b)


def test_paper_experiment_composes_with_dedicated_baselines_and_one_cpu_worker():
    import yaml
    from sim_helpers import REPO

    exp = yaml.safe_load((REPO / "configs/experiment/infaas_paper.yaml").read_text())
    assert exp["sim"]["warmup_s"] >= 60 and exp["trace"]["duration_s"] - exp["sim"]["warmup_s"] >= 1800
    assert exp["baselines"]["placement"] == "dedicated" and exp["baselines"]["pin_rule"] == "least_accurate"
    cl = yaml.safe_load((REPO / "configs/cluster/aws_infaas_paper.yaml").read_text())
    assert {k: v for k, v in cl["initial_workers"].items() if v} == {"m5.2xlarge": 1}
