"""An open-loop load generator for any task the server serves (ImageNet images included), with
the server-side times of every answer — what ``infaas-real calibrate-frontend`` and
``infaas-real validate`` drive the server with.

``infaas-real replay`` sends the digits zoo's labelled evaluation split; a task without one
(the imagenet zoo has random weights and no labels) is driven here with seeded synthetic
inputs of the task's shape (FP32, binary tensor extension). Each query is sent at its
scheduled time whatever happened to earlier ones (open loop) and records: client latency,
the replica's queue wait and the batch's inference time as the server reports them, the
variant and worker that served it, and how late the generator sent it.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.errors import ConfigError
from infaas_core.metrics import COMPLETED, DROPPED, LATE, REJECTED, QueryTable, summarize
from infaas_core.model import App
from infaas_real.replay import send_on_schedule
from infaas_real.server import jsonfast
from infaas_real.server.client import Reply, V2Client, decode_reply
from infaas_real.server.protocol import HEADER_LEN, INPUT_NAME, OUTPUT_NAME


@dataclass
class Answers:
    """Per query of one open-loop run (arrival order)."""

    arrival_s: np.ndarray  # scheduled send time, seconds after the run's start
    app: np.ndarray  # int32 index into the apps
    latency_ms: np.ndarray  # NaN when not answered 200
    status: np.ndarray  # int8 COMPLETED / LATE / REJECTED / DROPPED
    variant: list[str]  # "" when not served
    worker: np.ndarray
    batch: np.ndarray
    queue_ms: np.ndarray
    infer_ms: np.ndarray
    lateness_ms: np.ndarray  # send time - scheduled time
    http: dict[int, int]
    errors: dict[str, int]
    start_perf_s: float  # time.perf_counter() of the run's time 0 (CLOCK_MONOTONIC: the same in every process)
    wall_s: float

    @property
    def served(self) -> np.ndarray:
        return (self.status == COMPLETED) | (self.status == LATE)

    @property
    def overhead_ms(self) -> np.ndarray:
        """Per served query: latency - replica queue wait - inference (HTTP, parsing, policy,
        IPC, response and the client: the front end's part)."""
        ok = self.served
        return (self.latency_ms - self.queue_ms - self.infer_ms)[ok]


def synthetic_inputs(shape: Sequence[int], n: int, seed: int, datatype: str = "UINT8") -> np.ndarray:
    """``n`` seeded inputs of ``shape``: UINT8 raw pixels (the server normalises them, the
    zoo's ``uint8_to_input``) or FP32 standard normal (what a normalised image looks like)."""
    rng = np.random.default_rng(seed)
    if datatype == "UINT8":
        return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    if datatype == "FP32":
        return rng.standard_normal((n, *shape)).astype(np.float32)
    raise ConfigError("input datatype", f"UINT8 or FP32, got {datatype!r}")


def encode(x: np.ndarray, parameters: dict[str, Any]) -> tuple[bytes, int]:
    """Body and JSON-header length of a binary-tensor infer request of ``x`` as it is (UINT8 or FP32)."""
    dtype = "UINT8" if x.dtype == np.uint8 else "FP32"
    raw = np.ascontiguousarray(x, dtype=np.uint8 if dtype == "UINT8" else "<f4").tobytes()
    head = jsonfast.dumps({"inputs": [{"name": INPUT_NAME, "shape": list(x.shape), "datatype": dtype,
                                       "parameters": {"binary_data_size": len(raw)}}],
                           "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
                           "parameters": parameters})  # fmt: skip
    return head + raw, len(head)


async def infer(client: V2Client, model: str, x: np.ndarray, parameters: dict[str, Any]) -> Reply:
    """:meth:`V2Client.infer` for either datatype (that one sends FP32)."""
    if x.dtype != np.uint8:
        return await client.infer(model, x, parameters)
    body, hlen = encode(x, parameters)
    try:
        status, headers, data = await client._request("POST", f"/v2/models/{model}/infer", body,
                                                       f"{HEADER_LEN}: {hlen}\r\n")  # fmt: skip
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        return Reply(0, None, {}, None, f"{type(exc).__name__}: {exc}")
    return decode_reply(status, headers, data)


async def open_loop(url: str, arrivals_s: np.ndarray, apps: Sequence[App], seed: int, *, input_shape: Sequence[int],
                    items: int = 1, targets: Sequence[str] | None = None, lead_s: float = 0.3,
                    timeout_s: float = 60.0, max_connections: int = 256, pool: int = 8,
                    datatype: str = "UINT8") -> Answers:
    """Send one request of ``items`` inputs per arrival to its application's target (task,
    model or variant; ``targets`` overrides it per application), apps drawn by share (seeded);
    inputs as ``datatype`` (UINT8 raw pixels: a quarter of FP32's bytes for an image)."""
    rng = np.random.default_rng(seed)
    n = int(arrivals_s.size)
    shares = np.array([a.share for a in apps], dtype=np.float64)
    app_of = rng.choice(len(apps), size=n, p=shares / shares.sum()).astype(np.int32)
    xs = synthetic_inputs(input_shape, pool * items, seed, datatype)
    slo_ms = np.array([a.requirements.latency_slo_ms for a in apps])
    target = list(targets) if targets is not None else [a.requirements.target for a in apps]
    params: list[dict[str, Any]] = []
    for a in apps:
        p: dict[str, Any] = {"app": a.name}
        if a.requirements.min_accuracy > 0:
            p["min_accuracy"] = a.requirements.min_accuracy
        if math.isfinite(a.requirements.latency_slo_ms):
            p["latency_slo_ms"] = a.requirements.latency_slo_ms
        params.append(p)
    out = Answers(np.asarray(arrivals_s, dtype=np.float64), app_of, np.full(n, np.nan),
                  np.full(n, DROPPED, dtype=np.int8), [""] * n, np.full(n, -1, dtype=np.int32),
                  np.zeros(n, dtype=np.int32), np.full(n, np.nan), np.full(n, np.nan), np.zeros(n), {}, {},
                  0.0, 0.0)  # fmt: skip
    client = V2Client(url, max_connections, timeout_s)
    perf = time.perf_counter

    async def one(i: int, t_sched: float) -> None:
        a = int(app_of[i])
        t_send = perf()
        out.lateness_ms[i] = (t_send - t_sched) * 1000.0
        k = (i % pool) * items
        r = await infer(client, target[a], xs[k : k + items], params[a])
        lat = (perf() - t_send) * 1000.0
        out.http[r.status] = out.http.get(r.status, 0) + 1
        if r.status == 200 and r.y is not None:
            out.latency_ms[i] = lat
            out.status[i] = LATE if lat > slo_ms[a] else COMPLETED
            out.variant[i] = r.model_name or ""
            out.worker[i] = int(r.parameters.get("worker", -1))
            out.batch[i] = int(r.parameters.get("batch", 0))
            out.queue_ms[i] = float(r.parameters.get("queue_ms", math.nan))
            out.infer_ms[i] = float(r.parameters.get("infer_ms", math.nan))
        elif r.status == 422:
            out.status[i] = REJECTED
        else:
            key = (r.error or f"HTTP {r.status}")[:120]
            out.errors[key] = out.errors.get(key, 0) + 1

    gc.collect()
    gc.disable()  # a collector pause in the generator would show up as latency
    try:
        start = perf() + lead_s
        out.start_perf_s = start
        await send_on_schedule(out.arrival_s.tolist(), start, one)
        out.wall_s = perf() - start
    finally:
        gc.enable()
        await client.close()
    return out


def to_results(ans: Answers, apps: Sequence[App], catalog: Catalog, *, policy: str, trace: str, seed: int,
               duration_s: float) -> tuple[QueryTable, dict[str, Any]]:
    """The results schema of a run (``backend: real``), with per-application variant shares."""
    names = sorted({v for v in ans.variant if v})
    vnames = (*[v.name for v in catalog], *[v for v in names if v not in catalog])
    vindex = {v: i for i, v in enumerate(vnames)}
    variant = np.array([vindex[v] if v else -1 for v in ans.variant], dtype=np.int32)
    finish = ans.arrival_s + ans.latency_ms / 1000.0
    table = QueryTable(
        query_id=np.arange(ans.arrival_s.size, dtype=np.int64), app=ans.app, arrival_s=ans.arrival_s,
        start_s=np.where(np.isnan(ans.infer_ms), np.nan, finish - ans.infer_ms / 1000.0), finish_s=finish,
        status=ans.status, variant=variant, worker=ans.worker, batch_size=ans.batch,
        app_names=tuple(a.name for a in apps), variant_names=vnames,
        variant_hardware=tuple(catalog.get(v).hardware if v in catalog else "" for v in vnames),
        variant_accuracy=np.array([catalog.get(v).accuracy if v in catalog else np.nan for v in vnames]),
    )  # fmt: skip
    done = ans.served
    lateness = ans.lateness_ms
    extra = {
        "per_app": per_app_stats(table, apps),
        "variant_share": shares(table, done),
        "generator_lateness_ms": {"p50": float(np.median(lateness)) if lateness.size else 0.0,
                                  "p99": float(np.quantile(lateness, 0.99)) if lateness.size else 0.0,
                                  "max": float(lateness.max()) if lateness.size else 0.0},
        "http_status": {str(k): v for k, v in sorted(ans.http.items())},
        "errors": dict(sorted(ans.errors.items(), key=lambda kv: -kv[1])[:5]),
    }  # fmt: skip
    summary = summarize(table.accumulate(), policy=policy, trace=trace, seed=seed, backend="real",
                        duration_s=duration_s, cost_usd=0.0, wall_s=ans.wall_s,
                        exact_latency_ms=ans.latency_ms[done], extra=extra)  # fmt: skip
    return table, summary


def shares(table: QueryTable, mask: np.ndarray) -> dict[str, float]:
    """Each variant's share of the queries in ``mask``."""
    v = table.variant[mask & (table.variant >= 0)]
    if not v.size:
        return {}
    counts = np.bincount(v, minlength=len(table.variant_names))
    return {table.variant_names[i]: float(c / v.size) for i, c in enumerate(counts) if c}


def per_app_stats(table: QueryTable, apps: Sequence[App]) -> dict[str, Any]:
    """p50 / p99 / violation rate and variant shares per application (both backends' tables)."""
    out: dict[str, Any] = {}
    lat = table.latency_ms
    done = (table.status == COMPLETED) | (table.status == LATE)
    for i, a in enumerate(apps):
        m = table.app == i
        admitted = int((m & (table.status != REJECTED)).sum())
        viol = int((m & ((table.status == LATE) | (table.status == DROPPED))).sum())
        d = lat[m & done]
        out[a.name] = {
            "queries": int(m.sum()),
            "violation_rate": viol / admitted if admitted else 0.0,
            "latency_ms": {"p50": float(np.median(d)) if d.size else math.nan,
                           "p99": float(np.quantile(d, 0.99)) if d.size else math.nan},
            "variant_share": shares(table, m & done),
        }  # fmt: skip
    return out
