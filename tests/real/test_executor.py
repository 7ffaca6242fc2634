"""Executor rules: batching up to max_batch from one shared queue, bounded admission,
retry-once on a replica's death with replacement, draining unload, failed loads answered.

Runs real worker processes with the digits runtime (an ONNX fp32 MLP)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from infaas_core.control.observe import WindowCounters
from infaas_core.model import Variant, make_variant
from infaas_real.executor import (
    ExecutorSettings,
    Instance,
    Overloaded,
    RunnerSpec,
    Served,
    WorkerDied,
)

pytest.importorskip("onnxruntime")
pytest.importorskip("infaas_real.runtime", reason="the variant runtime is not in this checkout")


def _variant(model: str = "mlp_small", max_batch: int = 8) -> Variant:
    return make_variant(
        name=f"{model}-onnx-fp32-cpu1-b{max_batch}", model=model, task="classification-digits",
        framework="onnx-fp32", hardware="cpu", cores=1, max_batch=max_batch, load_latency_ms=100.0,
        memory_mb=50.0, accuracy=0.9, source="modeled:test", points={1: (0.05, 0.1)},
    )  # fmt: skip


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, Any]:
    """Test inputs and the same variant's in-process runner (also warms the artifact cache,
    so worker processes never build it concurrently)."""
    from infaas_real.runtime import load_runner
    from infaas_real.zoo import get_zoo

    x, _ = get_zoo("digits").eval_data()
    return np.ascontiguousarray(x[:64], dtype=np.float32), load_runner(_variant())


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), timeout=60))


def _instance(variant: Variant, replicas: int = 1, **settings: Any) -> Instance:
    t0 = time.perf_counter()
    return Instance(0, variant, 0, replicas, ExecutorSettings(**{"runner": RunnerSpec("infaas_real.runtime:load_runner", None, "cpu", ()), "max_queue": 64, "max_restarts": 3, "guard": None, "heartbeat": None, **settings}),
                    lambda: time.perf_counter() - t0, lambda _i: None, WindowCounters)  # fmt: skip


async def _ready(inst: Instance) -> None:
    while not inst.serving:
        await asyncio.sleep(0.02)


def test_a_freed_replica_takes_everything_waiting_up_to_max_batch(digits: tuple[np.ndarray, Any]) -> None:
    x, runner = digits

    async def body() -> None:
        inst = _instance(_variant(max_batch=8))
        await _ready(inst)
        futures = [inst.submit(x[i : i + 1], 100.0) for i in range(20)]
        served: list[Served] = list(await asyncio.gather(*futures))
        assert max(s.batch for s in served) <= 8
        assert max(s.batch for s in served) > 1  # 20 queued at once cannot go one by one
        got = np.concatenate([s.y for s in served])
        want = np.concatenate([runner.run(x[i : i + 1]) for i in range(20)])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        inst.kill()

    _run(body)


def test_a_full_queue_refuses_at_once(digits: tuple[np.ndarray, Any]) -> None:
    x, _ = digits

    async def body() -> None:
        inst = _instance(_variant(), max_queue=4)  # still loading: nothing leaves the queue
        futures = [inst.submit(x[:1], 100.0) for _ in range(4)]
        with pytest.raises(Overloaded, match="queue full"):
            inst.submit(x[:1], 100.0)
        await asyncio.gather(*futures)
        inst.kill()

    _run(body)


def test_a_killed_replica_loses_no_query_and_is_replaced(digits: tuple[np.ndarray, Any]) -> None:
    x, _ = digits

    async def body() -> None:
        inst = _instance(_variant(), max_queue=5000)
        await _ready(inst)
        (old_pid,) = inst.replica_pids
        futures = [inst.submit(x[i % 64 : i % 64 + 1], 100.0) for i in range(3000)]
        await asyncio.sleep(0.005)
        os.kill(old_pid, signal.SIGKILL)
        results = await asyncio.gather(*futures, return_exceptions=True)
        # every query ends: a result, or a clear WorkerDied (retried once already)
        assert all(isinstance(r, Served | WorkerDied) for r in results), results
        assert sum(isinstance(r, Served) for r in results) >= len(results) - 8  # at most one batch lost twice
        while old_pid in inst.replica_pids or not inst.serving:  # death seen, replacement up
            await asyncio.sleep(0.02)
        assert (await inst.submit(x[:1], 100.0)).replica_pid != old_pid
        inst.kill()

    _run(body)


def test_unload_drains_the_queue_then_goes_away(digits: tuple[np.ndarray, Any]) -> None:
    x, _ = digits

    async def body() -> None:
        inst = _instance(_variant())
        futures = [inst.submit(x[:1], 100.0) for _ in range(10)]
        inst.unload()
        assert inst.unloading
        with pytest.raises(Overloaded, match="unloading"):
            inst.submit(x[:1], 100.0)
        assert len(await asyncio.gather(*futures)) == 10
        while not inst.gone:
            await asyncio.sleep(0.02)

    _run(body)


def test_a_variant_that_cannot_load_fails_its_queries_instead_of_hanging() -> None:
    async def body() -> None:
        inst = _instance(_variant(model="no_such_model"), max_restarts=1)
        fut = inst.submit(np.zeros((1, 64), np.float32), 100.0)
        with pytest.raises(WorkerDied, match="keep dying"):
            await fut

    _run(body)
