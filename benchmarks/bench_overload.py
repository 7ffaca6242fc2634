"""Overload behaviour of the real server: goodput and answer times past saturation.

    .venv/bin/python benchmarks/bench_overload.py [--model NAME] [--slo-ms 100]
        [--seconds 4] [--saturating 4] [--closed 0.25,1,12.5,50,200] [--open 0.5,1,2,5]
        [--serve-override KEY=VALUE ...] [--out overload.json]

Starts ``infaas-real serve`` (digits catalog, loopback) and drives it twice:

- closed loop: ``k x saturating`` connections, each sending its next query as soon as the
  previous one is answered (success or refusal), for ``--seconds``;
- open loop: Poisson arrivals at ``f x capacity`` queries/s, where capacity is the best
  goodput the closed-loop runs measured (connections capped at ``--open-max-connections``;
  an arrival that finds every connection busy is counted as ``client_dropped``).

For each run it prints and writes: successes/s, refusals/s (every non-200 answer), p99 of the
successes' latency, and the largest answer time minus the query's SLO (``max_over_slo_ms``,
over successes and refusals alike); at the end a markdown table of the closed loop (goodput
vs connections, as a share of the best run, and the slowest answer minus the SLO) with the
server's front gate as it ended (``GET /v2/infaas/state``: its limit and refusals). Compare
with the gate off: ``--serve-override server.admission.adaptive=false``. Client and server share this machine's cores: the
client is one asyncio (uvloop) process with raw keep-alive HTTP (:mod:`infaas_real.server.client`),
the server one process, its replicas one process each. Every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class RunStats:
    mode: str  # closed | open
    load: float  # connections (closed) or offered queries/s (open)
    seconds: float
    successes_per_s: float
    refusals_per_s: float
    p99_success_ms: float
    max_over_slo_ms: float  # largest (answer time - SLO) over every answer
    statuses: dict[str, int]
    client_dropped: int = 0


def _summary(mode: str, load: float, seconds: float, slo_ms: float, rows: list[tuple[int, float]],
             client_dropped: int = 0) -> RunStats:  # fmt: skip
    ok = [ms for st, ms in rows if st == 200]
    statuses: dict[str, int] = {}
    for st, _ in rows:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    return RunStats(
        mode, load, seconds,
        successes_per_s=len(ok) / seconds,
        refusals_per_s=(len(rows) - len(ok)) / seconds,
        p99_success_ms=float(np.quantile(ok, 0.99)) if ok else float("nan"),
        max_over_slo_ms=max((ms for _, ms in rows), default=0.0) - slo_ms,
        statuses=statuses, client_dropped=client_dropped,
    )  # fmt: skip


async def closed_loop(url: str, model: str, x: np.ndarray, params: dict[str, Any], connections: int,
                      seconds: float) -> list[tuple[int, float]]:  # fmt: skip
    """``connections`` clients, each with one request outstanding, for ``seconds``; returns
    (status, answer ms) of every answer that came back before the end. The connections are
    opened first (each sends one request, not counted, and they wait for one another), so
    what is measured is the overload on open keep-alive connections, not a connection storm
    (opening hundreds of connections at once can cost a SYN retransmission, 1 s)."""
    from infaas_real.server.client import V2Client

    client = V2Client(url, connections, timeout_s=seconds + 30.0)
    rows: list[tuple[int, float]] = []
    await asyncio.gather(*(client.infer(model, x[k % len(x) : k % len(x) + 1], params) for k in range(connections)))
    stop = time.perf_counter() + seconds

    async def loop(k: int) -> None:
        i = k
        while True:
            t = time.perf_counter()
            if t >= stop:
                return
            r = await client.infer(model, x[i % len(x) : i % len(x) + 1], params)
            rows.append((r.status, (time.perf_counter() - t) * 1000.0))
            i += connections

    await asyncio.gather(*(loop(k) for k in range(connections)))
    await client.close()
    return rows


async def open_loop(url: str, model: str, x: np.ndarray, params: dict[str, Any], rate_qps: float,
                    seconds: float, max_connections: int, seed: int = 0) -> tuple[list[tuple[int, float]], int]:  # fmt: skip
    """Poisson arrivals at ``rate_qps`` for ``seconds``; an arrival finding all
    ``max_connections`` busy is not sent (counted and returned second)."""
    from infaas_real.server.client import V2Client

    client = V2Client(url, max_connections, timeout_s=seconds + 30.0)
    rng = random.Random(seed)
    rows: list[tuple[int, float]] = []
    busy = 0
    dropped = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        nonlocal busy
        t = time.perf_counter()
        r = await client.infer(model, x[i % len(x) : i % len(x) + 1], params)
        rows.append((r.status, (time.perf_counter() - t) * 1000.0))
        busy -= 1

    t0 = time.perf_counter()
    due = t0
    i = 0
    while True:
        due += rng.expovariate(rate_qps)
        if due - t0 >= seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if busy >= max_connections:
            dropped += 1
            continue
        busy += 1
        task = asyncio.ensure_future(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.gather(*tasks)
    await client.close()
    return rows, dropped


def digits_inputs() -> np.ndarray:
    from infaas_real.zoo import get_zoo

    data = get_zoo("digits").eval_data()
    assert data is not None, "the digits zoo has held-out inputs"
    return np.ascontiguousarray(data[0], dtype=np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ready(url: str, model: str, x: np.ndarray, params: dict[str, Any], timeout_s: float) -> None:
    from infaas_real.replay import wait_ready
    from infaas_real.server.client import V2Client

    client = V2Client(url, 2)
    await wait_ready(client, timeout_s)
    deadline = time.monotonic() + timeout_s
    while (await client.infer(model, x[:1], params)).status != 200:  # loads the variant
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model} not served within {timeout_s} s")
        await asyncio.sleep(0.2)
    await client.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="classification-digits", help="task, model or variant to call")
    ap.add_argument("--slo-ms", type=float, default=100.0, help="latency_slo_ms of every query")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each run")
    ap.add_argument("--saturating", type=int, default=4,
                    help="connections that saturate the server (4 on the 2-core development machine)")
    ap.add_argument("--closed", default="0.25,1,12.5,50,200",
                    help="closed-loop multiples of --saturating (50: the acceptance's 50x)")
    ap.add_argument("--open", default="0.5,1,2,5", help="open-loop multiples of the measured capacity")
    ap.add_argument("--open-max-connections", type=int, default=1024)
    ap.add_argument("--serve-override", action="append", default=[], help="extra override for infaas-real serve")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    import uvloop

    x = digits_inputs()
    params = {"latency_slo_ms": args.slo_ms}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "infaas_real", "serve", "policy=infaas", *args.serve_override,
         f"server.port={port}", "server.log_level=warning"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    runs: list[RunStats] = []
    try:
        uvloop.run(_ready(url, args.model, x, params, 180.0))
        for k in (float(v) for v in args.closed.split(",") if v):
            conns = max(1, round(k * args.saturating))
            rows = uvloop.run(closed_loop(url, args.model, x, params, conns, args.seconds))
            runs.append(_summary("closed", conns, args.seconds, args.slo_ms, rows))
            _print(runs[-1])
        capacity = max(r.successes_per_s for r in runs) if runs else 1000.0
        for f in (float(v) for v in args.open.split(",") if v):
            rows, dropped = uvloop.run(open_loop(url, args.model, x, params, f * capacity, args.seconds,
                                                 args.open_max_connections))  # fmt: skip
            runs.append(_summary("open", round(f * capacity), args.seconds, args.slo_ms, rows, dropped))
            _print(runs[-1])
        gate = uvloop.run(_gate(url))
    finally:
        server.terminate()
        server.wait(timeout=15)
    _table([r for r in runs if r.mode == "closed"], gate)
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "slo_ms": args.slo_ms,
                                              "runs": [asdict(r) for r in runs]}, indent=2) + "\n")  # fmt: skip
    return 0


async def _gate(url: str) -> Any:
    from infaas_real.server.client import V2Client

    client = V2Client(url, 1)
    _, snap = await client.get_json("/v2/infaas/state")
    await client.close()
    return (snap or {}).get("front_gate")


def _table(closed: list[RunStats], gate: Any) -> None:
    if not closed:
        return
    peak = max(r.successes_per_s for r in closed) or 1.0
    print("\n| connections | successes/s | % of best | refusals/s | p99 of successes | max answer - SLO |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in closed:
        print(f"| {r.load:.0f} | {r.successes_per_s:,.0f} | {100 * r.successes_per_s / peak:.0f} % | "
              f"{r.refusals_per_s:,.0f} | {r.p99_success_ms:.0f} ms | {r.max_over_slo_ms:.0f} ms |")  # fmt: skip
    print(f"\nfront gate at the end: {gate}")


def _print(r: RunStats) -> None:
    unit = "connections" if r.mode == "closed" else "offered q/s"
    print(f"{r.mode:<6} {r.load:>7.0f} {unit:<12} successes/s {r.successes_per_s:>7.0f}  refusals/s "
          f"{r.refusals_per_s:>7.0f}  p99 ok {r.p99_success_ms:>7.1f} ms  max-SLO {r.max_over_slo_ms:>8.1f} ms  "
          f"{r.statuses} dropped-by-client {r.client_dropped}", flush=True)  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
