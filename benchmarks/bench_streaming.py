"""Streaming-mode memory: simulate N queries with ``sim.stream=true`` and report peak RSS.

Scenario (cheap on purpose, the point is memory): the ``static`` policy, one CPU variant
(p50 1 ms at batch 1, +0.02 ms per extra query, max batch 32) with 16 replicas (capacity about 316,000 queries/s), Poisson
arrivals at ``--rate`` queries/s generated chunk by chunk. Peak RSS is the process's
``ru_maxrss`` after the run (it includes the interpreter, numpy, pandas and SimPy).

    python benchmarks/bench_streaming.py --queries 100000000
    python benchmarks/bench_streaming.py --queries 2000000 --json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any


def run(queries: int, rate_qps: float, seed: int = 0) -> dict[str, Any]:
    from infaas_core.catalog import Catalog
    from infaas_core.model import App, ClusterSpec, InstanceType, Requirements, make_variant
    from infaas_core.workload import generate_chunks
    from infaas_edge import compose_group, policy_params
    from infaas_sim import Arrivals, SimInputs, SimSettings, simulate

    v = make_variant(name="v", model="m", task="t", framework="onnx", hardware="cpu", cores=1, max_batch=32,
                     load_latency_ms=0.0, memory_mb=100.0, accuracy=0.7, source="modeled:bench",
                     points={1: (1.0, 2.0), 32: (1.0 + 31 * 0.02, 2.0 + 31 * 0.02)})
    t = InstanceType("big", 1.0, 64, 256.0, 0.0)
    cluster = ClusterSpec((t,), (("big", 1),), (("big", 1),))
    duration_s = queries / rate_qps
    settings = SimSettings.from_mapping({**compose_group("sim", "default"), "stream": True, "progress": "off", "chunk_s": 1.0})
    chunk = max(int(rate_qps * settings.chunk_s), 1024)

    def chunks() -> Any:
        return generate_chunks("poisson", rate_qps=rate_qps, duration_s=duration_s, seed=seed, chunk_size=chunk)

    inputs = SimInputs(Catalog([v]), cluster, (App("a", Requirements(variant="v", latency_slo_ms=50.0), 1.0),),
                       Arrivals(chunks, duration_s, None, "poisson"), policy="static",
                       policy_params=policy_params("static", updates={"replicas": 16}), seed=seed, sim=settings)
    t0 = time.perf_counter()
    res = simulate(inputs)
    wall = time.perf_counter() - t0
    s = res.summary
    return {
        "queries": s["queries"],
        "completed": s["completed"],
        "wall_s": wall,
        "queries_per_wall_s": s["queries"] / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "latency_p99_ms": s["latency_ms"]["p99"],
        "latency_source": s["latency_source"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=10_000_000)
    ap.add_argument("--rate", type=float, default=200_000.0, help="offered load, queries/s")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    out = run(a.queries, a.rate)
    if a.json:
        print(json.dumps(out))
    else:
        print(f"streaming: {out['queries']:,} queries in {out['wall_s']:.1f} s wall "
              f"({out['queries_per_wall_s']:,.0f} queries/s); peak RSS {out['peak_rss_mb']:.0f} MB; "
              f"p99 {out['latency_p99_ms']:.2f} ms ({out['latency_source']})")


if __name__ == "__main__":
    main()
