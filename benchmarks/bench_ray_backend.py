"""The latency Ray adds per query: ``infaas-real serve`` on one host beside ``cluster=ray``.

    .venv/bin/python benchmarks/bench_ray_backend.py [--queries 400] [--rounds 4]
        [--clients 1 8] [--out ray_backend.json]

Needs the `ray` extra. In one run, on this machine:

- two servers run side by side on the digits catalog with the INFaaS policy: the single-host
  backend (``cluster=local``) and the Ray backend (``cluster=ray``, ``ray.address`` null: the
  server starts a local Ray itself, local-only mode, no dashboard), one worker each
  (``max_workers`` 1, so neither scales out) serving the same variant;
- a closed loop of ``--clients`` clients (one keep-alive HTTP connection each) sends 1-row
  queries naming that variant, ``--queries`` per client per round; rounds alternate between
  the two servers (``--rounds`` each), so both see the same machine load;
- per backend and client count: p50 / p99 / mean of the client-side latency over every
  query, and the throughput; the difference of the p50s is the latency Ray adds per query
  (the front end's actor call to the worker and the answer's way back).

Then, in this process (``--in-process-queries``, 0 to skip), the mechanism hop alone: the
server's ``LiveState`` over each backend (the Ray one on a local one-node Ray cluster this
process drives), one instance of the variant, sequential ``submit``s of a 1-row query,
alternating blocks; p50 / p99 of submit-to-answer. Its difference is the actor call without
HTTP.

Latencies are over the queries answered 200; any other answer (the policy's 503 "no
capacity" when it flags the one instance overloaded) is counted per backend, with an
example. Prints one JSON document and
writes it to ``--out``; both servers (and the Ray the second one started) are stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import free_port, wait_ready

REPO = Path(__file__).resolve().parents[1]
VARIANT = "mlp_small-onnx-fp32-cpu1-b8"
BACKENDS = {
    "single_host": ["cluster=local", "cluster.max_workers.local=1"],
    "ray": ["cluster=ray", "cluster.max_workers.ray-cpu1=1", "cluster.max_workers.ray-cpu2=0"],
}
READY_TIMEOUT_S = 180.0


def _start(name: str, overrides: list[str], log_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, "-m", "infaas_real", "serve", "catalog=digits", "policy=infaas", *overrides,
           f"server.port={port}", "server.grpc_port=null", "server.log_level=warning"]  # fmt: skip
    log = (log_dir / f"{name}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port


def _round(port: int, clients: int, queries: int, body: bytes) -> tuple[list[float], float, list[str]]:
    """A closed loop: ``clients`` threads, ``queries`` each: the latencies (ms) of the queries
    answered 200, the wall time, and the status and body of each other answer."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    bad: list[str] = []
    path = f"/v2/models/{VARIANT}/infer"
    headers = {"Content-Type": "application/json"}

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(queries):
                t0 = time.perf_counter()
                conn.request("POST", path, body, headers)
                r = conn.getresponse()
                out = r.read()
                if r.status == 200:
                    lat[k].append((time.perf_counter() - t0) * 1000.0)
                else:
                    bad.append(f"{r.status} {out[:300].decode(errors='replace')}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return [x for per in lat for x in per], wall, bad


def _summary(lat: list[float], queries: int, wall_s: float) -> dict[str, float]:
    """Latency percentiles over the answered queries; throughput over all ``queries``."""
    a = np.asarray(lat)
    return {"answered_200": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "mean_ms": round(float(a.mean()), 3),
            "throughput_qps": round(queries / wall_s, 1)}  # fmt: skip


def _state(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/infaas/state", timeout=10) as r:
        out: dict[str, Any] = json.loads(r.read())
    return out


def _in_process(queries: int, blocks: int) -> dict[str, Any]:
    """Sequential submits to one instance on each backend's ``LiveState`` (see the docstring)."""
    import asyncio

    from infaas_core.actions import LoadVariant
    from infaas_core.policies.base import Policy, PolicyContext
    from infaas_real.raycluster import mechanism_factory, ray_settings_from_mapping
    from infaas_real.raycluster.local import LocalRayCluster
    from infaas_real.server.config import (
        build_catalog,
        build_cluster,
        build_server_settings,
        compose,
    )
    from infaas_real.server.state import LiveState

    rc = LocalRayCluster(num_cpus=2, memory_gb=2.0, object_store_mb=80)
    try:
        states: dict[str, tuple[list[str], Any]] = {}
        for name, over in BACKENDS.items():
            cfg = compose("serve", ["catalog=digits", *over]).cfg
            factory = mechanism_factory(ray_settings_from_mapping(cfg["ray"])) if "ray" in cfg else None
            states[name] = (over, (cfg, factory))
        x = np.random.default_rng(0).random((1, 64), dtype=np.float32)

        async def run() -> dict[str, Any]:
            live: dict[str, Any] = {}
            for name, (_, (cfg, factory)) in states.items():
                catalog, cluster = build_catalog(cfg), build_cluster(cfg)
                _, st_settings, executor = build_server_settings(cfg)
                policy = Policy(PolicyContext(catalog, cluster), {"observation": cfg["policy"]["observation"]})
                st = LiveState(catalog, cluster, policy, st_settings, executor, time.perf_counter, mechanism=factory)
                await st.start()
                assert st.apply([LoadVariant(VARIANT, 0)]) == [None]
                live[name] = st
            for _ in range(600):
                if all(i.state == "ready" for st in live.values() for i in st.instances.values()):
                    break
                await asyncio.sleep(0.1)
            lat: dict[str, list[float]] = {n: [] for n in live}
            for _ in range(blocks):
                for name, st in live.items():
                    (inst,) = st.instances.values()
                    for _ in range(queries):
                        t0 = time.perf_counter()
                        await inst.mech.submit(x, 1000.0)
                        lat[name].append((time.perf_counter() - t0) * 1000.0)
            for st in live.values():
                await st.close()
            out: dict[str, Any] = {}
            for name, v in lat.items():
                a = np.asarray(v[queries // 10 :])  # the first block's start warms the path
                out[name] = {"queries": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 3),
                             "p99_ms": round(float(np.percentile(a, 99)), 3)}  # fmt: skip
            out["ray_added_p50_ms"] = round(out["ray"]["p50_ms"] - out["single_host"]["p50_ms"], 3)
            return out

        return asyncio.run(run())
    finally:
        rc.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=400, help="queries per client per round")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per backend and client count")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="closed-loop client counts")
    ap.add_argument("--warmup", type=int, default=200, help="queries to each server before measuring")
    ap.add_argument("--in-process-queries", type=int, default=500, help="submits per block in process (0: skip)")
    ap.add_argument("--ray-override", action="append", default=[], help="extra override for the Ray server (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("ray_backend.json"))
    ap.add_argument("--log-dir", type=Path, default=Path("/tmp"))
    args = ap.parse_args()
    if min(args.queries, args.rounds, *args.clients) < 1:
        print("bench_ray_backend: --queries, --rounds and --clients must be >= 1", file=sys.stderr)
        return 2
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                   "data": x.ravel().tolist()}], "parameters": {"latency_slo_ms": 1000}}).encode()  # fmt: skip
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    result: dict[str, Any] = {"variant": VARIANT, "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
                              "queries_per_client_round": args.queries, "rounds": args.rounds}  # fmt: skip
    try:
        result["ray_overrides"] = args.ray_override
        for name, over in BACKENDS.items():
            procs[name] = _start(name, over + (args.ray_override if name == "ray" else []), args.log_dir)
        t_ready: dict[str, float] = {}
        for name, (proc, port) in procs.items():
            t0 = time.perf_counter()
            wait_ready(f"http://127.0.0.1:{port}", proc, READY_TIMEOUT_S, f"bench_ray_backend ({name})")
            t_ready[name] = time.perf_counter() - t0
            _round(port, 1, args.warmup, body)  # loads the variant; warms both paths (answers not counted)
        result["ready_wait_s"] = {k: round(v, 2) for k, v in t_ready.items()}
        ray_state = _state(procs["ray"][1])
        result["ray_workers"] = [{k: w[k] for k in ("id", "node_id", "node_ip", "startup_measured_s")}
                                 for w in ray_state["workers"]]  # fmt: skip
        table: dict[str, dict[str, Any]] = {}
        for clients in args.clients:
            lat: dict[str, list[float]] = {n: [] for n in procs}
            wall: dict[str, float] = dict.fromkeys(procs, 0.0)
            bad: dict[str, list[str]] = {n: [] for n in procs}
            for _ in range(args.rounds):
                for name, (_, port) in procs.items():  # alternate: both see the same machine load
                    got, w, b = _round(port, clients, args.queries, body)
                    lat[name] += got
                    wall[name] += w
                    bad[name] += b
            row: dict[str, Any] = {n: {**_summary(lat[n], len(lat[n]) + len(bad[n]), wall[n]), "not_200": len(bad[n]),
                                       "not_200_example": bad[n][0] if bad[n] else None} for n in procs}  # fmt: skip
            row["ray_added_p50_ms"] = round(row["ray"]["p50_ms"] - row["single_host"]["p50_ms"], 3)
            row["ray_added_p99_ms"] = round(row["ray"]["p99_ms"] - row["single_host"]["p99_ms"], 3)
            table[f"clients_{clients}"] = row
        result["closed_loop"] = table
        for name, (_, port) in procs.items():
            st = _state(port)
            result.setdefault("workers_at_end", {})[name] = len(st["workers"])
            if name == "ray":  # how many queries each actor call carried (coalescing)
                result["ray_counts"] = st["mechanism"]["counts"]
    finally:
        from infaas_real.validate import stop_server

        for proc, _ in procs.values():
            stop_server(proc)
    if args.in_process_queries > 0:
        result["in_process"] = _in_process(args.in_process_queries, args.rounds)
    result["loadavg_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
