"""Serving overhead of the real server: the same variant called in-process vs through
HTTP + the server + a worker process, side by side, at low load (one query at a time).

    .venv/bin/python benchmarks/bench_server_overhead.py [--variant NAME] [--queries 2000]
        [--serve-override KEY=VALUE ...] [--out overhead.json]

Reports medians (and p90/p99) of:
- ``direct``: ``runner.run(x)`` in this process (batch 1, the variant's thread count);
- ``server (lean client)``: end-to-end latency of ``POST /v2/models/<variant>/infer`` with
  :class:`infaas_real.server.client.V2Client` (binary tensors, keep-alive);
- ``server (tritonclient)``: the same with ``tritonclient.http`` (binary input, default);
- ``added``: server median minus direct median (the acceptance figure: <= 1 ms).
Then the front end's saturation throughput: ``--concurrency`` closed-loop clients for
``--saturation-s`` seconds (what ``configs/validate.yaml`` ``max_rate_qps`` is derived from).
Client and server share this machine's cores; the figures include the client's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_common import free_port

REPO = Path(__file__).resolve().parents[1]


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.median(a)), "p90_ms": float(np.quantile(a, 0.9)), "p99_ms": float(np.quantile(a, 0.99))}


async def _lean(url: str, variant: str, x: np.ndarray, n: int) -> tuple[list[float], list[float]]:
    from infaas_real.replay import wait_ready
    from infaas_real.server.client import V2Client

    client = V2Client(url, 4)
    await wait_ready(client, 180)
    lat, extra = [], []
    for i in range(n + n // 10):
        t = time.perf_counter()
        r = await client.infer(variant, x[i % len(x) : i % len(x) + 1], {})
        ms = (time.perf_counter() - t) * 1000.0
        assert r.status == 200, r.error
        if i >= n // 10:
            lat.append(ms)
            extra.append(ms - float(r.parameters["infer_ms"]))
    await client.close()
    return lat, extra


async def _saturate(url: str, variant: str, x: np.ndarray, concurrency: int, seconds: float) -> float:
    from infaas_real.server.client import V2Client

    client = V2Client(url, concurrency)
    done = 0
    stop = time.perf_counter() + seconds

    async def loop(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop:
            r = await client.infer(variant, x[i % len(x) : i % len(x) + 1], {})
            done += r.status == 200
            i += concurrency

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(k) for k in range(concurrency)))
    qps = done / (time.perf_counter() - t0)
    await client.close()
    return qps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default=None, help="variant to call (default: the catalog's fastest CPU variant)")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--saturation-s", type=float, default=5.0)
    ap.add_argument("--serve-override", action="append", default=[], help="extra override for infaas-real serve")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    import uvloop

    from infaas_real.runtime import load_runner
    from infaas_real.server.config import build_catalog, compose
    from infaas_real.zoo import get_zoo

    cfg = compose("serve", args.serve_override).cfg
    catalog = build_catalog(cfg)
    cpu = [v for v in catalog.cpu_variants() if v.cores == 1] or list(catalog.cpu_variants())
    variant = catalog.get(args.variant) if args.variant else min(cpu, key=lambda v: (v.batch1_latency_ms, v.name))
    x = np.ascontiguousarray(get_zoo("digits").eval_data()[0], dtype=np.float32)

    runner = load_runner(variant)
    direct = []
    for i in range(args.queries + args.queries // 10):
        xb = x[i % len(x) : i % len(x) + 1]
        t = time.perf_counter()
        runner.run(xb)
        if i >= args.queries // 10:
            direct.append((time.perf_counter() - t) * 1000.0)
    runner.close()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "infaas_real", "serve", *args.serve_override, "policy=infaas", f"server.port={port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        lean, lean_extra = uvloop.run(_lean(url, variant.name, x, args.queries))
        import tritonclient.http as th

        tc = th.InferenceServerClient(f"127.0.0.1:{port}")
        triton = []
        for i in range(args.queries // 2):
            inp = th.InferInput("input", [1, x.shape[1]], "FP32")
            inp.set_data_from_numpy(x[i % len(x) : i % len(x) + 1])
            t = time.perf_counter()
            tc.infer(variant.name, inputs=[inp])
            triton.append((time.perf_counter() - t) * 1000.0)
        tc.close()
        sat = uvloop.run(_saturate(url, variant.name, x, args.concurrency, args.saturation_s))
    finally:
        server.terminate()
        server.wait(timeout=15)

    out = {
        "variant": variant.name,
        "queries": args.queries,
        "direct": _stats(direct),
        "server_lean_client": _stats(lean),
        "server_tritonclient": _stats(triton),
        "added_ms_median": float(np.median(lean) - np.median(direct)),
        "added_ms_median_tritonclient": float(np.median(triton) - np.median(direct)),
        "overhead_per_query_ms": _stats(lean_extra),
        "saturation_qps": sat,
        "saturation_concurrency": args.concurrency,
    }
    print(f"variant {variant.name}, {args.queries} sequential queries")
    print(f"{'path':<26}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")
    for key in ("direct", "server_lean_client", "server_tritonclient", "overhead_per_query_ms"):
        s = out[key]
        print(f"{key:<26}{s['p50_ms']:>9.3f}{s['p90_ms']:>9.3f}{s['p99_ms']:>9.3f}")  # type: ignore[index]
    print(f"added latency, median: {out['added_ms_median']:.3f} ms (lean client), "
          f"{out['added_ms_median_tritonclient']:.3f} ms (tritonclient)")  # fmt: skip
    print(f"front-end saturation: {sat:.0f} qps with {args.concurrency} closed-loop clients")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
