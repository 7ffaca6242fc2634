"""Overload admission (issue 13): in closed loop at 50x the connections that saturate, the
successful answers per second stay at >= 70% of the peak and every answer, success or
refusal, arrives within its SLO + 100 ms.

Two levels:

- the executor alone, with a worker-bound variant (a runner that spends a fixed time per run,
  as a heavier model would, so the worker rather than the front end is the bottleneck):
  shedding by deadline is what keeps the answers in time — an overload with it off (and a
  deep queue) misses, which shows the test can fail;
- the whole server on loopback (the digits task, model-less, as in the issue) at a 100 ms
  SLO, where the front end shares the 2 cores with the client and the worker: the HTTP
  layer's gate (an adaptive in-flight limit, refusals written by the protocol before the
  body is read) and the SLO counted from each request's head keep every answer in time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from server_harness import REPO, running_server

from infaas_core.control.observe import WindowCounters
from infaas_core.model import Variant, make_variant
from infaas_real.executor import (
    DeadlineRefused,
    ExecutorSettings,
    GuardSettings,
    Instance,
    Overloaded,
    RunnerSpec,
)

pytest.importorskip("onnxruntime")

RUN_MS = 2.0  # the slow runner's time per run (one query: max_batch 1)
MAX_BATCH = 1
EXEC_SLO_MS = 200.0
OVER_SLO_MS = 100.0  # the bound: every answer within SLO + this
GOODPUT_FLOOR = 0.7
OVERLOAD_FACTOR = 50
CONTROL_FACTOR = 4
REFUSED_RESEND_S = 0.005  # a refused client resends after this (the round trip an HTTP refusal costs
# it; resending at once would make 800 in-process clients spin on a CPU they share with the executor)
STALL_TICK_S = 0.005
SATURATED = 0.9  # the saturating count: the fewest connections reaching this share of the peak


class SlowRunner:
    """The digits runner plus a fixed ``RUN_MS`` per run (a heavier model's cost, waited out
    so the worker does not take CPU from the event loop on this 2-core machine)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.input_shape = inner.input_shape
        self.max_batch = inner.max_batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(RUN_MS / 1000.0)
        return np.asarray(self._inner.run(batch))

    def close(self) -> None:
        self._inner.close()


def load_slow_runner(variant: Variant, *, cache_dir: Path | None = None, device: str = "cpu") -> SlowRunner:
    from infaas_real.runtime import load_runner

    real = make_variant(
        name=variant.name, model=variant.model, task=variant.task, framework=variant.framework,
        hardware=variant.hardware, cores=variant.cores, max_batch=variant.max_batch, load_latency_ms=1.0,
        memory_mb=1.0, accuracy=0.9, source="modeled:test", points={1: (0.05, 0.1)},
    )  # fmt: skip
    return SlowRunner(load_runner(real, cache_dir=cache_dir, device=device))


def _variant() -> Variant:
    return make_variant(
        name=f"mlp_small-onnx-fp32-cpu1-b{MAX_BATCH}", model="mlp_small", task="classification-digits",
        framework="onnx-fp32", hardware="cpu", cores=1, max_batch=MAX_BATCH, load_latency_ms=100.0,
        memory_mb=50.0, accuracy=0.9, source="modeled:test",
        points={1: (RUN_MS, RUN_MS * 1.5)},
    )  # fmt: skip


def _guard(shed: bool) -> GuardSettings:
    return GuardSettings(max_rows_in_flight=32 * MAX_BATCH, shed_by_deadline=shed, service_estimate_alpha=0.2, service_estimate_answers=256,
                         batch_timeout_factor=20.0, batch_timeout_margin_ms=1000.0, start_timeout_s=60.0,
                         supervise_period_s=0.02)  # fmt: skip


def _instance(shed: bool, max_queue: int) -> Instance:
    t0 = time.perf_counter()
    spec = RunnerSpec(f"{__name__}:load_slow_runner", None, "cpu", ())
    return Instance(0, _variant(), 0, 1, ExecutorSettings(spec, max_queue, 3, _guard(shed), None),
                    lambda: time.perf_counter() - t0, lambda _i: None, WindowCounters)  # fmt: skip


class StallMeter:
    """The longest time this process went unscheduled during a run: a thread asks to sleep
    ``STALL_TICK_S`` and records by how much it overslept. On a quiet machine that is a few ms;
    on one shared with other jobs the process can be descheduled for a few hundred, which no
    admission rule can foresee, so the answer-time bound allows for what was measured."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            time.sleep(STALL_TICK_S)
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - t - STALL_TICK_S) * 1000.0)

    def __enter__(self) -> StallMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _closed(inst: Instance, x: np.ndarray, clients: int, seconds: float) -> tuple[float, float, int]:
    """``clients`` loops each submitting its next query when the last is answered (a refusal
    included); returns (successes/s, slowest answer ms, refusals)."""
    stop = time.perf_counter() + seconds
    ok = refused = 0
    slowest = 0.0

    async def loop(k: int) -> None:
        nonlocal ok, refused, slowest
        while (t := time.perf_counter()) < stop:
            try:
                await inst.submit(x[k % len(x) : k % len(x) + 1], EXEC_SLO_MS)
                ok += 1
                slowest = max(slowest, (time.perf_counter() - t) * 1000.0)
            except Overloaded:
                refused += 1
                slowest = max(slowest, (time.perf_counter() - t) * 1000.0)
                await asyncio.sleep(REFUSED_RESEND_S)

    await asyncio.gather(*(loop(k) for k in range(clients)))
    return ok / seconds, slowest, refused


async def _peak(measure: Callable[[int], Awaitable[float]], counts: tuple[int, ...]) -> tuple[float, int]:
    got = {c: await measure(c) for c in counts}
    peak = max(got.values())
    return peak, min(c for c, g in got.items() if g >= SATURATED * peak)


def _bench() -> Any:
    """benchmarks/bench_overload.py (its load generators and summary)."""
    if "bench_overload" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_overload", REPO / "benchmarks" / "bench_overload.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_overload"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_overload"]


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    inputs: np.ndarray = _bench().digits_inputs()
    return inputs[:64]


def test_executor_sheds_by_deadline_and_keeps_goodput_at_50x_saturation(x: np.ndarray) -> None:
    async def body() -> dict[str, Any]:
        inst = _instance(shed=True, max_queue=100_000)
        while not inst.serving:
            await asyncio.sleep(0.02)
        await _closed(inst, x, 8, 0.3)  # warm the estimates

        async def goodput(c: int) -> float:
            return (await _closed(inst, x, c, 0.5))[0]

        peak, sat = await _peak(goodput, (1, 2, 4, 8, 16, 32))
        with StallMeter() as stall:
            good, slowest, refused = await _closed(inst, x, OVERLOAD_FACTOR * sat, 2.0)
        shed = dict(inst.shed, row_ms=inst.service_ms_per_row, lag_ms=inst.loop_lag_ms, overhead_ms=inst.overhead_ms)
        inst.kill()
        # the control: no shedding, a deep queue; an overload (4x the clients above, so that
        # it overloads even when one client saturates) waits far past the SLO
        off = _instance(shed=False, max_queue=100_000)
        while not off.serving:
            await asyncio.sleep(0.02)
        _, slowest_off, _ = await _closed(off, x, CONTROL_FACTOR * OVERLOAD_FACTOR * sat, 1.0)
        off.kill()
        return {"peak": peak, "sat": sat, "good": good, "slowest": slowest, "refused": refused, "shed": shed,
                "slowest_off": slowest_off, "stall_ms": stall.worst_ms}  # fmt: skip

    r = asyncio.run(asyncio.wait_for(body(), timeout=120))
    print(r)
    assert r["refused"] > 0 and r["shed"].get("deadline_admission", 0) > 0
    assert r["good"] >= GOODPUT_FLOOR * r["peak"], r
    assert r["slowest"] <= EXEC_SLO_MS + OVER_SLO_MS + r["stall_ms"], r
    assert r["slowest_off"] > EXEC_SLO_MS + OVER_SLO_MS, r  # without the rule the bound is missed


def test_a_refusal_by_deadline_is_an_overloaded_with_a_one_line_reason(x: np.ndarray) -> None:
    async def body() -> None:
        inst = _instance(shed=True, max_queue=100_000)
        while not inst.serving:
            await asyncio.sleep(0.02)
        await inst.submit(x[:1], EXEC_SLO_MS)
        futures = []
        with pytest.raises(DeadlineRefused) as info:  # far more than one SLO's worth of rows
            for i in range(10_000):
                futures.append(inst.submit(x[i % 64 : i % 64 + 1], EXEC_SLO_MS))
        assert isinstance(info.value, Overloaded) and "\n" not in str(info.value)
        assert "SLO" in str(info.value)
        admitted = len(futures)
        assert 0 < admitted <= 2 * EXEC_SLO_MS / RUN_MS * MAX_BATCH  # about one SLO's worth
        await asyncio.gather(*futures, return_exceptions=True)
        inst.kill()

    asyncio.run(asyncio.wait_for(body(), timeout=60))


def test_the_slo_counts_the_time_spent_before_the_submit(x: np.ndarray) -> None:
    """The HTTP layer passes the time since a request's head arrived: a query that spent its
    SLO in the front end is refused at once, even with nothing ahead of it; one that has rows
    ahead and little budget left is refused where the same query with its whole budget is not."""

    async def body() -> None:
        inst = _instance(shed=True, max_queue=100_000)
        while not inst.serving:
            await asyncio.sleep(0.02)
        await inst.submit(x[:1], EXEC_SLO_MS)  # nothing ahead, nothing spent: served
        with pytest.raises(DeadlineRefused, match="spent before"):
            inst.submit(x[:1], EXEC_SLO_MS, spent_ms=EXEC_SLO_MS + 1.0)
        assert inst.shed["deadline_admission"] == 1
        await inst.submit(x[:1], EXEC_SLO_MS, spent_ms=EXEC_SLO_MS / 2)  # half spent, nothing ahead: served
        futures = [inst.submit(x[i % 64 : i % 64 + 1], EXEC_SLO_MS) for i in range(10)]  # rows ahead ...
        with pytest.raises(DeadlineRefused):  # ... and little budget left: refused (or expired while queued)
            await inst.submit(x[:1], EXEC_SLO_MS, spent_ms=EXEC_SLO_MS - RUN_MS)
        futures.append(inst.submit(x[:1], EXEC_SLO_MS))  # the same query with its whole budget is admitted
        await asyncio.gather(*futures, return_exceptions=True)
        inst.kill()

    asyncio.run(asyncio.wait_for(body(), timeout=60))


def test_server_closed_loop_at_50x_saturation_keeps_goodput_and_answers_in_time(tmp_path: Path, x: np.ndarray) -> None:
    bench = _bench()
    model = "classification-digits"
    slo_ms = SERVER_SLO_MS
    params = {"latency_slo_ms": slo_ms}

    async def body(url: str) -> dict[str, Any]:
        await bench._ready(url, model, x, params, 120.0)
        await bench.closed_loop(url, model, x, params, 4, 0.5)  # warm

        async def goodput(c: int) -> float:
            rows = await bench.closed_loop(url, model, x, params, c, PEAK_S)
            return sum(st == 200 for st, _ in rows) / PEAK_S

        peak, sat = await _peak(goodput, (1, 2, 4))
        with StallMeter() as stall:
            rows = await bench.closed_loop(url, model, x, params, OVERLOAD_FACTOR * sat, OVERLOAD_S)
        s = bench._summary("closed", OVERLOAD_FACTOR * sat, OVERLOAD_S, slo_ms, rows)
        return {"peak": peak, "sat": sat, "stats": s, "stall_ms": stall.worst_ms}

    with running_server(["policy=infaas"], tmp_path) as srv:
        import uvloop

        r = uvloop.run(body(srv.url))
        gate = orjson.loads(srv.get("/v2/infaas/state")[1])["front_gate"]
    s = r["stats"]
    print({"peak": r["peak"], "sat": r["sat"], "stall_ms": r["stall_ms"], "gate": gate,
           **{k: getattr(s, k) for k in s.__slots__}})  # fmt: skip
    assert s.successes_per_s >= GOODPUT_FLOOR * r["peak"], r
    assert s.max_over_slo_ms <= OVER_SLO_MS + r["stall_ms"], r
    assert set(s.statuses) <= {"200", "429", "503"}, s.statuses


SERVER_SLO_MS = 100.0
"""The server test's SLO, the issue's. In closed loop the queries wait mostly in front of the
executor — in sockets and the HTTP layer, N / throughput by Little's law — so the HTTP
layer's gate bounds the requests in flight and each query's SLO counts from its head's
arrival (docs/overload-and-supervision.md). As in the executor test, the bound allows for the
descheduling measured in this process during the run (a few ms on a quiet machine; other
jobs on a shared one can stop every process for hundreds, which no admission rule foresees)."""
PEAK_S = 1.0
OVERLOAD_S = 3.0
