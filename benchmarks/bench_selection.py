"""Per-query selection cost of the ``infaas`` (and ``infaas_cost``) policy.

A synthetic but realistic world: 200 variants (20 architectures x 10 variants over CPU,
gpu-v100, gpu-t4 and inferentia), 50 workers of four instance types, ~150 loaded
instances, and a mix of requirements (use case + accuracy + SLO, loose and tight;
architecture + SLO; exact variant). It times ``policy.select`` as a backend calls it:

- cached: the view's version stays the same (as in the simulator between monitor ticks);
- uncached: the version is bumped before every call, so every call recomputes.

Each call is timed alone with ``perf_counter_ns``; the timer's own cost (measured on an
empty call) is subtracted. Usage::

    python benchmarks/bench_selection.py [--calls 200000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from typing import Any

from infaas_core.catalog import Catalog
from infaas_core.model import ClusterSpec, InstanceType, Requirements, make_variant
from infaas_core.policies import PolicyContext, make_policy
from infaas_core.view_snapshot import SnapshotView
from infaas_edge import policy_params

TASK = "classification-imagenet-224"


def build_world(seed: int = 0) -> tuple[PolicyContext, SnapshotView, list[Requirements]]:
    rng = random.Random(seed)
    variants = []
    for m in range(20):
        model = f"arch{m:02d}"
        acc = 0.56 + 0.26 * m / 19
        base = 2.0 + 3.0 * m  # batch-1 GPU latency grows with accuracy
        specs = [
            ("cpu", 1, 8, base * 30), ("cpu", 2, 8, base * 16), ("cpu", 4, 8, base * 9), ("cpu", 8, 8, base * 5),
            ("gpu-v100", 1, 1, base), ("gpu-v100", 1, 8, base * 1.2), ("gpu-v100", 1, 32, base * 1.5),
            ("gpu-t4", 1, 1, base * 1.8), ("gpu-t4", 1, 8, base * 2.1), ("inferentia", 1, 1, base * 1.4),
        ]  # fmt: skip
        for hw, cores, mb, b1 in specs:
            pts = {1: b1}
            if mb > 1:
                pts[mb] = b1 * (1 + 0.25 * mb)
            variants.append(
                make_variant(
                    name=f"{model}-{hw}-c{cores}-b{mb}", model=model, task=TASK, framework="synthetic",
                    hardware=hw, cores=cores, max_batch=mb, load_latency_ms=1000 + 200 * m,
                    memory_mb=300 + 90 * m, accuracy=round(acc, 3), source="modeled:benchmark",
                    points={b: (p, 1.5 * p) for b, p in pts.items()},
                )
            )  # fmt: skip
    cat = Catalog(variants)
    types = (
        InstanceType("m5.2xlarge", 0.384, 8, 32.0, 60.0),
        InstanceType("p3.2xlarge", 3.06, 8, 61.0, 90.0, (("gpu-v100", 1),), (("gpu-v100", 16.0),)),
        InstanceType("g4dn.xlarge", 0.526, 4, 16.0, 90.0, (("gpu-t4", 1),), (("gpu-t4", 16.0),)),
        InstanceType("inf1.2xlarge", 0.362, 8, 16.0, 90.0, (("inferentia", 1),), (("inferentia", 8.0),)),
    )
    counts = {"m5.2xlarge": 20, "p3.2xlarge": 15, "g4dn.xlarge": 10, "inf1.2xlarge": 5}
    spec = ClusterSpec(types, tuple(counts.items()), tuple((k, 2 * v) for k, v in counts.items()))
    view = SnapshotView(cat, spec)
    for name, n in counts.items():
        for _ in range(n):
            view.add_worker(name, utilization={"cpu": rng.random()})
    for w in view.workers:
        offered = w.instance_type.device_classes
        pool = [v for v in variants if v.hardware in offered]
        for v in rng.sample(pool, 3):
            free = w.free_memory_mb if v.is_cpu else w.free_accelerator_memory_mb.get(v.hardware, 0.0)
            if (not v.is_cpu or w.free_cores >= v.cores) and free >= v.memory_mb:
                view.add_instance(
                    w.id, v.name, rate_qps=rng.uniform(0, 50), queue_len=rng.randrange(5),
                    overloaded=rng.random() < 0.1,
                )  # fmt: skip
    reqs = [
        Requirements(task=TASK, min_accuracy=0.70, latency_slo_ms=200),
        Requirements(task=TASK, min_accuracy=0.75, latency_slo_ms=50),
        Requirements(task=TASK, min_accuracy=0.60, latency_slo_ms=100),
        Requirements(model="arch10", latency_slo_ms=80),
        Requirements(variant=variants[45].name),
    ]
    return PolicyContext(cat, spec), view, reqs


def _timer_overhead_ns(n: int = 20000) -> int:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        samples.append(clock() - t0)
    return int(statistics.median(samples))


def measure(policy_name: str, calls: int, bump: bool) -> dict[str, float]:
    ctx, view, reqs = build_world()
    policy = make_policy(policy_name, ctx, policy_params(policy_name))
    select = policy.select
    clock = time.perf_counter_ns
    overhead = _timer_overhead_ns()
    samples = [0] * calls
    nreq = len(reqs)
    for i in range(min(calls, 2000)):  # warm up: static candidate lists, first index
        select(reqs[i % nreq], view)
    for i in range(calls):
        r = reqs[i % nreq]
        if bump:
            view.version += 1
        t0 = clock()
        select(r, view)
        samples[i] = clock() - t0 - overhead
    samples.sort()
    return {
        "median_us": samples[len(samples) // 2] / 1000.0,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000.0,
        "mean_us": sum(samples) / len(samples) / 1000.0,
        "calls": calls,
        "timer_overhead_ns": overhead,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--json", dest="json_path", default=None)
    args = ap.parse_args()
    ctx, view, _ = build_world()
    n_inst = sum(len(w.instances) for w in view.workers)
    print(f"world: {len(ctx.catalog)} variants, {len(view.workers)} workers, {n_inst} instances")
    rows: list[dict[str, Any]] = []
    print(f"{'policy':<14}{'path':<10}{'median_us':>11}{'p99_us':>10}{'mean_us':>10}")
    for name in ("infaas", "infaas_cost"):
        for path, bump in (("cached", False), ("uncached", True)):
            n = args.calls if not bump else max(args.calls // 10, 1000)
            r = measure(name, n, bump)
            rows.append({"policy": name, "path": path, **r})
            print(f"{name:<14}{path:<10}{r['median_us']:>11.2f}{r['p99_us']:>10.2f}{r['mean_us']:>10.2f}")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(
                {"python": platform.python_version(), "machine": platform.machine(),
                 "variants": len(ctx.catalog), "workers": len(view.workers), "instances": n_inst,
                 "results": rows}, f, indent=2,
            )  # fmt: skip


if __name__ == "__main__":
    main()
