"""Added latency of KServe v2 over gRPC beside HTTP: the same model-less requests (a task
with ``min_accuracy`` and ``latency_slo_ms`` in the parameters) sent to one ``infaas-real
serve`` over ``tritonclient.http`` (binary tensors, keep-alive) and ``tritonclient.grpc``
(raw_input_contents, one channel), interleaved in one run, one query at a time.

    .venv/bin/python benchmarks/bench_grpc_vs_http.py [--queries 2000] [--rows 1]
        [--min-accuracy 0.95] [--latency-slo-ms 1000] [--serve-override KEY=VALUE ...]
        [--out grpc_vs_http.json]

Each pair sends the same input over both transports, in alternating order (HTTP first on even
pairs, gRPC first on odd ones) so that neither always follows the other. Reports the client's
p50 / p90 / p99 latency of each transport, their differences, the median of the per-pair
differences (gRPC - HTTP), and the server's own ``infer_ms`` per transport (the part the
transport does not touch), with the load average before and after: client and server share
this machine's cores. The run is bounded by ``--queries`` and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]
TASK = "classification-digits"


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.median(a)), "p90_ms": float(np.quantile(a, 0.9)),
            "p99_ms": float(np.quantile(a, 0.99)), "mean_ms": float(a.mean())}


def run(a: argparse.Namespace) -> dict[str, Any]:
    import tritonclient.grpc as tg
    import tritonclient.http as th

    from infaas_real.zoo import get_zoo

    x_all, _ = get_zoo("digits").eval_data()
    x_all = np.ascontiguousarray(x_all, dtype=np.float32)
    http_port = grpc_port = free_port()
    while grpc_port == http_port:  # two picks may return the same free port
        grpc_port = free_port()
    cmd = [sys.executable, "-m", "infaas_real", "serve", "policy=infaas", f"server.port={http_port}",
           f"server.grpc_port={grpc_port}", "server.log_level=warning", *a.serve_override]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    params = {"min_accuracy": a.min_accuracy, "latency_slo_ms": a.latency_slo_ms}
    try:
        wait_ready(f"http://127.0.0.1:{http_port}", proc, a.ready_timeout_s, "bench_grpc_vs_http")
        hc = th.InferenceServerClient(f"127.0.0.1:{http_port}")
        gc = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")

        def http(x: np.ndarray) -> tuple[float, float, str]:
            inp = th.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            t = time.perf_counter()
            r = hc.infer(TASK, [inp], parameters=params)
            ms = (time.perf_counter() - t) * 1000.0
            resp = r.get_response()
            return ms, float(resp["parameters"]["infer_ms"]), str(resp["model_name"])

        def grpc(x: np.ndarray) -> tuple[float, float, str]:
            inp = tg.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            t = time.perf_counter()
            r = gc.infer(TASK, [inp], parameters=params)
            ms = (time.perf_counter() - t) * 1000.0
            resp = r.get_response()
            return ms, float(resp.parameters["infer_ms"].double_param), resp.model_name

        warm = max(a.queries // 10, 1)
        load_before = os.getloadavg()
        lat: dict[str, list[float]] = {"http": [], "grpc": []}
        infer: dict[str, list[float]] = {"http": [], "grpc": []}
        served: dict[str, set[str]] = {"http": set(), "grpc": set()}
        pair_diff: list[float] = []
        n = len(x_all) - a.rows
        for i in range(warm + a.queries):
            lo = i % n
            x = x_all[lo: lo + a.rows]
            order = (("http", http), ("grpc", grpc)) if i % 2 == 0 else (("grpc", grpc), ("http", http))
            got = {name: fn(x) for name, fn in order}
            if i < warm:
                continue
            for name, (ms, inf_ms, variant) in got.items():
                lat[name].append(ms)
                infer[name].append(inf_ms)
                served[name].add(variant)
            pair_diff.append(got["grpc"][0] - got["http"][0])
        load_after = os.getloadavg()
        hc.close()
        gc.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(2)  # SIGINT: the server's graceful shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    h, g = _stats(lat["http"]), _stats(lat["grpc"])
    return {
        "task": TASK, "rows": a.rows, "queries_per_transport": a.queries, "requirements": params,
        "served_by": {k: sorted(v) for k, v in served.items()},
        "http": h, "grpc": g,
        "grpc_minus_http_ms": {k: g[k] - h[k] for k in h},
        "pair_difference_p50_ms": float(np.median(pair_diff)),
        "server_infer_ms_p50": {k: float(np.median(v)) for k, v in infer.items()},
        "load_average_1m": {"before": load_before[0], "after": load_after[0]},
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--queries", type=int, default=2000, help="measured queries per transport (after 10%% warm-up)")
    p.add_argument("--rows", type=int, default=1, help="rows per query")
    p.add_argument("--min-accuracy", type=float, default=0.95)
    p.add_argument("--latency-slo-ms", type=float, default=1000.0)
    p.add_argument("--ready-timeout-s", type=float, default=180.0)
    p.add_argument("--serve-override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    a = p.parse_args(argv)
    if a.queries < 1 or a.rows < 1:
        p.error("--queries and --rows must be >= 1")
    res = run(a)
    for name in ("http", "grpc"):
        s = res[name]
        print(f"{name:5s} p50 {s['p50_ms']:.3f} ms  p90 {s['p90_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
              f"(server infer {res['server_infer_ms_p50'][name]:.3f} ms; served by {', '.join(res['served_by'][name])})")
    d = res["grpc_minus_http_ms"]
    print(f"grpc - http: p50 {d['p50_ms']:+.3f} ms  p99 {d['p99_ms']:+.3f} ms  "
          f"per-pair median {res['pair_difference_p50_ms']:+.3f} ms")
    la = res["load_average_1m"]
    print(f"load average (1 min): {la['before']:.2f} before, {la['after']:.2f} after, on {res['cpus']} cores")
    if a.out is not None:
        a.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
