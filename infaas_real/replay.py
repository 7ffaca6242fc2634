"""``infaas-real replay``: replay a trace open-loop against a KServe v2 server.

Each arrival of the trace is sent at its timestamp whatever happened to earlier ones
(open loop), by one asyncio task per query over a keep-alive connection pool, so a slow
answer never delays the next arrival. Each arrival gets an application from the mix by its
share (seeded) and one image of the zoo's held-out split as input, so every answer's label
can be checked (``accuracy_measured``).

Latency is measured from the moment the request is sent to the moment the answer is read;
how late the generator sent it against the trace's timestamp is measured separately and
reported (``generator_lateness_ms``) — if it grows, the generator, not the server, limits.
Outcome per query (results schema, ``backend="real"``): HTTP 200 -> completed (late if over
the application's SLO); 422 -> rejected; anything else (429/503/500, connection error,
client timeout) -> dropped, with the status counts in ``http_status``.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.configs import REPO_ROOT
from infaas_core.control.startup import check_run
from infaas_core.errors import ConfigError
from infaas_core.metrics import (
    COMPLETED,
    DROPPED,
    LATE,
    REJECTED,
    QueryTable,
    summarize,
    write_results,
)
from infaas_core.model import App
from infaas_core.workload import Trace, trace_from_config
from infaas_real.server.client import V2Client
from infaas_real.server.config import build_apps, build_catalog, compose, default_run_dir, section


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    url: str
    max_connections: int = 512
    timeout_s: float = 60.0
    ready_timeout_s: float = 120.0
    lead_s: float = 0.5
    dataset: str = "digits"
    write_queries: bool = True


@dataclass
class ReplayResult:
    table: QueryTable
    summary: dict[str, Any]
    overhead_ms: np.ndarray  # per answered query: latency - replica wait - inference (HTTP, parsing, IPC, client)
    infer_ms: np.ndarray  # per answered query: the worker's inference time of its batch
    batch: np.ndarray  # per answered query: the size of that batch


async def wait_ready(client: V2Client, timeout_s: float) -> dict[str, Any]:
    """Poll ``/v2/health/ready`` until 200; returns the server's state snapshot."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, _ = await client.get_json("/v2/health/ready")
            if status == 200:
                _, snap = await client.get_json("/v2/infaas/state")
                return dict(snap or {})
            last = f"HTTP {status}"
        except OSError as exc:
            last = str(exc)
        await asyncio.sleep(0.1)
    raise ConfigError("server.url", f"{client.host}:{client.port} not ready within {timeout_s} s ({last})")


def _eval_split(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from infaas_real.zoo import get_zoo

    data = get_zoo(dataset).eval_data()
    if data is None:
        raise ConfigError("replay.dataset", f"zoo '{dataset}' has no labelled evaluation split")
    x, y = data
    return np.ascontiguousarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)



async def send_on_schedule(arrivals_s: Sequence[float], start_perf_s: float,
                           one: Callable[[int, float], Coroutine[Any, Any, None]]) -> None:
    """Open loop: start ``one(i, t_sched)`` at ``t_sched = start_perf_s + arrivals_s[i]``
    (``time.perf_counter`` time), never waiting for earlier answers; return once all ended."""
    loop = asyncio.get_running_loop()
    perf = time.perf_counter
    pending: set[asyncio.Task[None]] = set()
    for i, t in enumerate(arrivals_s):
        t_sched = start_perf_s + t
        delay = t_sched - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(i, t_sched))
        pending.add(task)
        task.add_done_callback(pending.discard)
    while pending:
        await asyncio.gather(*list(pending))

async def replay(
    trace: Trace, apps: Sequence[App], catalog: Catalog, seed: int, settings: ReplaySettings
) -> ReplayResult:
    """Replay ``trace`` against ``settings.url``; the per-query table and the summary."""
    if not apps:
        raise ConfigError("apps", "the application mix is empty")
    rng = np.random.default_rng(seed)
    n = len(trace)
    shares = np.array([a.share for a in apps], dtype=np.float64)
    app_of = rng.choice(len(apps), size=n, p=shares / shares.sum()).astype(np.int32)
    xs, labels = _eval_split(settings.dataset)
    sample = rng.integers(0, len(xs), size=n)
    slo_ms = np.array([a.requirements.latency_slo_ms for a in apps])
    targets = [a.requirements.target for a in apps]
    params = []
    for a in apps:
        p: dict[str, Any] = {"app": a.name}
        if a.requirements.min_accuracy > 0:
            p["min_accuracy"] = a.requirements.min_accuracy
        if math.isfinite(a.requirements.latency_slo_ms):
            p["latency_slo_ms"] = a.requirements.latency_slo_ms
        params.append(p)

    vnames = [v.name for v in catalog]
    vindex = {name: i for i, name in enumerate(vnames)}
    extra_names: list[str] = []
    latency_ms = np.full(n, np.nan)
    infer_ms = np.full(n, np.nan)
    queue_ms = np.full(n, np.nan)
    lateness_ms = np.zeros(n)
    status = np.full(n, DROPPED, dtype=np.int8)
    variant = np.full(n, -1, dtype=np.int32)
    worker = np.full(n, -1, dtype=np.int32)
    batch = np.zeros(n, dtype=np.int32)
    correct = np.zeros(n, dtype=bool)
    http = Counter[int]()
    errors = Counter[str]()

    client = V2Client(settings.url, settings.max_connections, settings.timeout_s)
    snap0 = await wait_ready(client, settings.ready_timeout_s)
    perf = time.perf_counter

    async def one(i: int, t_sched: float) -> None:
        a = app_of[i]
        t_send = perf()
        lateness_ms[i] = (t_send - t_sched) * 1000.0
        k = sample[i]
        r = await client.infer(targets[a], xs[k : k + 1], params[a])
        lat = (perf() - t_send) * 1000.0
        http[r.status] += 1
        if r.status == 200 and r.y is not None:
            latency_ms[i] = lat
            status[i] = LATE if lat > slo_ms[a] else COMPLETED
            name = r.model_name or ""
            if name not in vindex:
                vindex[name] = len(vnames) + len(extra_names)
                extra_names.append(name)
            variant[i] = vindex[name]
            worker[i] = int(r.parameters.get("worker", -1))
            batch[i] = int(r.parameters.get("batch", 0))
            infer_ms[i] = float(r.parameters.get("infer_ms", math.nan))
            queue_ms[i] = float(r.parameters.get("queue_ms", math.nan))
            correct[i] = int(np.argmax(r.y[0])) == labels[k]
        elif r.status == 422:
            status[i] = REJECTED
        else:
            errors[(r.error or "")[:120]] += 1

    arrivals = trace.arrivals_s
    # A collector pause in the generator would show up as latency; the replay allocates little
    # that needs cycle collection, so the collector is off for the timed section.
    gc.collect()
    gc.disable()
    try:
        wall0 = perf()
        await send_on_schedule(arrivals.tolist(), perf() + settings.lead_s, one)
        wall_s = perf() - wall0
    finally:
        gc.enable()
    _, snap1 = await client.get_json("/v2/infaas/state")
    await client.close()

    finish = np.where(np.isnan(latency_ms), np.nan, arrivals + latency_ms / 1000.0)
    start_s = np.where(np.isnan(infer_ms), np.nan, finish - infer_ms / 1000.0)
    all_names = (*vnames, *extra_names)
    acc_by_v = np.array([catalog.get(v).accuracy if v in catalog else np.nan for v in all_names])
    table = QueryTable(
        query_id=np.arange(n, dtype=np.int64),
        app=app_of,
        arrival_s=np.asarray(arrivals, dtype=np.float64),
        start_s=start_s,
        finish_s=finish,
        status=status,
        variant=variant,
        worker=worker,
        batch_size=batch,
        app_names=tuple(a.name for a in apps),
        variant_names=all_names,
        variant_hardware=tuple(catalog.get(v).hardware if v in catalog else "" for v in all_names),
        variant_accuracy=acc_by_v,
    )
    table.check_exactly_once()
    done = (status == COMPLETED) | (status == LATE)
    served = np.bincount(variant[done], minlength=len(all_names)) if done.any() else np.zeros(len(all_names))
    extra = {
        "server_url": settings.url,
        "accuracy_measured": float(correct[done].mean()) if done.any() else math.nan,
        "generator_lateness_ms": {
            "p50": float(np.median(lateness_ms)) if n else 0.0,
            "p99": float(np.quantile(lateness_ms, 0.99)) if n else 0.0,
            "max": float(lateness_ms.max()) if n else 0.0,
        },
        "http_status": {str(k): v for k, v in sorted(http.items())},
        "errors": dict(errors.most_common(5)),
        # the keep-alive pool (server.keep_alive_timeout_s closes idle connections): closed ones
        # dropped unused, and requests sent again after a close raced them (before any answer)
        "client_connections": {"stale_dropped": client.stale_dropped, "resent": client.resent},
        "variant_share": {all_names[i]: float(c / done.sum()) for i, c in enumerate(served) if c},
        "infer_ms_mean": float(np.nanmean(infer_ms)) if done.any() else math.nan,
        # what the control layer refused during the replay, by reason (the simulator's key)
        "refused_actions": _refused_during(snap0, snap1),
    }
    cost0 = float(snap0.get("cost_usd", 0.0))
    cost1 = float((snap1 or {}).get("cost_usd", cost0))
    summary = summarize(
        table.accumulate(),
        policy=str((snap1 or snap0).get("policy", "unknown")),
        trace=trace.name,
        seed=seed,
        backend="real",
        duration_s=trace.duration_s,
        cost_usd=cost1 - cost0,
        wall_s=wall_s,
        exact_latency_ms=latency_ms[done],
        extra=extra,
    )
    overhead = (latency_ms - queue_ms - infer_ms)[done]
    ok = np.isfinite(overhead)
    return ReplayResult(table, summary, overhead[ok], infer_ms[done][ok], batch[done][ok])


def settings_from(cfg: dict[str, Any]) -> ReplaySettings:
    s = section(cfg, "server")
    r = section(cfg, "replay")
    url = s.get("url")
    if not isinstance(url, str):
        raise ConfigError("server.url", "missing")
    return ReplaySettings(
        url=url,
        max_connections=int(r.get("max_connections", 512)),
        timeout_s=float(r.get("timeout_s", 60.0)),
        ready_timeout_s=float(r.get("ready_timeout_s", 120.0)),
        lead_s=float(r.get("lead_s", 0.5)),
        dataset=str(r.get("dataset", "digits")),
        write_queries=bool(r.get("write_queries", True)),
    )


def run_replay(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Replay the composed config's trace; write the results schema into ``run_dir``."""
    seed = int(cfg.get("seed", 0))
    trace = trace_from_config(section(cfg, "trace"), seed, REPO_ROOT)
    settings = settings_from(cfg)
    apps, catalog = build_apps(cfg), build_catalog(cfg)
    check_run(catalog, None, apps)  # names only: the server owns the cluster
    result = _run(replay(trace, apps, catalog, seed, settings))
    write_results(run_dir, result.summary, result.table if settings.write_queries else None)
    return result.summary


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main(overrides: Sequence[str]) -> int:
    composed = compose("replay", overrides)
    run_dir = composed.run_dir or default_run_dir("replay")
    s = run_replay(composed.cfg, run_dir)
    lat = s["latency_ms"]
    print(
        f"replay: {s['queries']} queries, {s['completed']} completed ({s['late']} late), {s['rejected']} rejected, "
        f"{s['dropped']} dropped; p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms; "
        f"accuracy measured {s['accuracy_measured']:.3f}; results in {run_dir}"
    )
    return 0


def _refused_during(before: dict[str, Any], after: dict[str, Any] | None) -> dict[str, int]:
    """Refusals counted between two ``/v2/infaas/state`` snapshots, by reason."""
    old = before.get("refused_actions", {})
    new = (after or {}).get("refused_actions", old)
    return {k: int(n) - int(old.get(k, 0)) for k, n in sorted(new.items()) if int(n) > int(old.get(k, 0))}
