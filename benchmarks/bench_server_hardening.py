"""Hardening figures of the real server (docs/server-hardening.md), on the digits catalog:

    .venv/bin/python benchmarks/bench_server_hardening.py [--requests 100000] [--connections 32]
        [--idle 5000] [--serve-override KEY=VALUE ...] [--out hardening.json]

1. RSS growth of the server process over ``--requests`` requests with distinct
   (min_accuracy, latency_slo_ms) pairs (one in ``--feasible-every`` served by a variant, the
   others rejected 422 by the policy after selection), sent over ``--connections`` keep-alive
   connections after a warm-up of ``--warmup`` requests with one fixed pair. Acceptance: less
   than 50 MB per 100,000 requests.
2. Readiness latency (best and worst of ``--probes`` fresh connections) with ``--idle`` idle
   connections held open, and one inference. Acceptance: 200 within 100 ms, and 200.
Client and server share this machine's cores; the figures include the client's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench_common import free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]
TASK = "classification-digits"
ITEM = 64  # digits: 8x8 pixels


def _probe_ms(port: int) -> tuple[float, int]:
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n")
        data = s.recv(4096)
    return (time.perf_counter() - t) * 1000.0, int(data[9:12])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--feasible-every", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--probes", type=int, default=5)
    ap.add_argument("--serve-override", action="append", default=[])
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    from infaas_real.server.config import build_catalog, compose
    from infaas_real.server.rawhttp import (
        infer_body,
        read_response,
        request_bytes,
        rss_bytes,
        unique_pairs_load,
    )

    cfg = compose("serve", a.serve_override).cfg
    tight = float(cfg["policy"]["selection"]["tight_slo_ms"])
    # an SLO below every variant of the task: answered 422 by the policy, after selection
    infeasible = min(v.batch1_latency_ms for v in build_catalog(cfg).by_task(TASK)) / 2.0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = free_port()
    cmd = [sys.executable, "-m", "infaas_real", "serve", f"server.port={port}", *a.serve_override]
    proc = subprocess.Popen(cmd, cwd=REPO)
    path = f"/v2/models/{TASK}/infer"
    out: dict[str, object] = {"requests": a.requests, "connections": a.connections, "idle": a.idle}
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, 180, "bench_server_hardening")

        async def warm() -> None:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(a.warmup):
                w.write(request_bytes("POST", path, infer_body(0.5, 2 * tight + 100, ITEM)))
                await read_response(r)
            w.close()

        asyncio.run(warm())
        rss0 = rss_bytes(proc.pid)
        t = time.perf_counter()
        statuses = asyncio.run(unique_pairs_load(port, path, a.requests, a.connections, ITEM, a.feasible_every,
                                                 infeasible, 2 * tight + 100))  # fmt: skip
        wall = time.perf_counter() - t
        rss1 = rss_bytes(proc.pid)
        out |= {"rss_before_mb": rss0 / 2**20, "rss_after_mb": rss1 / 2**20, "rss_growth_mb": (rss1 - rss0) / 2**20,
                "load_wall_s": wall, "load_qps": a.requests / wall, "statuses": dict(statuses)}  # fmt: skip
        print(f"RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MB (+{(rss1 - rss0) / 2**20:.1f} MB) over "
              f"{a.requests} distinct pairs in {wall:.1f} s; statuses {dict(statuses)}", flush=True)  # fmt: skip

        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(a.idle)]
        time.sleep(0.5)
        probes = [_probe_ms(port) for _ in range(a.probes)]
        status, _ = 0, b""
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(request_bytes("POST", path, infer_body(0.5, 2 * tight + 100, ITEM)))
            status = int(s.recv(65536)[9:12])
        for s in idle:
            s.close()
        ms = [p[0] for p in probes]
        out |= {"ready_ms_best": min(ms), "ready_ms_worst": max(ms), "ready_statuses": [p[1] for p in probes],
                "infer_status_under_idle": status}  # fmt: skip
        print(f"{a.idle} idle connections: readiness {[p[1] for p in probes]} in {min(ms):.1f}-{max(ms):.1f} ms; "
              f"inference {status}", flush=True)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if a.out:
        a.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
