"""The live state applies the policy's worker actions as the simulator does: a slot starts
after its type's start-up delay, max_workers and the core budget bound AddWorker, a removed
slot stops costing, a load that does not fit is refused (never half-applied)."""

from __future__ import annotations

import asyncio
import time

import pytest

from infaas_core.actions import AddWorker, LoadVariant, RemoveWorker, SetScaleDown
from infaas_core.catalog import Catalog
from infaas_core.model import ClusterSpec, InstanceType, make_variant
from infaas_core.policies.base import Policy, PolicyContext
from infaas_core.view import WorkerState
from infaas_real.executor import ExecutorSettings, RunnerSpec
from infaas_real.server.state import LiveState, StateSettings

OBSERVATION = {"observation": {"latency_decay_divisor": {"cpu": 15.0, "gpu": 1.5, "inferentia": 1.5},
                               "gpu_utilisation": "memory"}}
SLOT = InstanceType("slot", price_usd_per_hour=3600.0, vcpus=1, memory_gb=1.0, startup_s=0.2)
WIDE = make_variant(
    name="wide-cpu2", model="wide", task="t", framework="onnx-fp32", hardware="cpu", cores=2, max_batch=1,
    load_latency_ms=1.0, memory_mb=10.0, accuracy=0.9, source="modeled:test", points={1: (1.0, 2.0)},
)  # fmt: skip


def _state(budget: int = 2) -> LiveState:
    cluster = ClusterSpec((SLOT,), initial_workers=(("slot", 1),), max_workers=(("slot", 3),))
    catalog = Catalog([WIDE])
    t0 = time.perf_counter()
    return LiveState(catalog, cluster, Policy(PolicyContext(catalog, cluster), OBSERVATION), StateSettings(core_budget=budget, stats_window_s=1.0, startup_scale=1.0),
                     ExecutorSettings(RunnerSpec("infaas_real.runtime:load_runner", None, "cpu", ()), max_queue=64, max_restarts=3, guard=None, heartbeat=None), lambda: time.perf_counter() - t0)  # fmt: skip


def test_worker_actions_follow_startup_delay_limits_and_cost() -> None:
    async def body() -> None:
        st = _state(budget=2)
        await st.start()
        assert [w.state for w in st.workers] == [WorkerState.RUNNING]
        v0 = st.version
        st.apply([AddWorker("slot"), AddWorker("slot")])  # the second exceeds the 2-core budget
        assert len(st.workers) == 2 and st.workers[1].state is WorkerState.STARTING
        assert st.version > v0
        await asyncio.sleep(0.3)
        assert st.workers[1].state is WorkerState.RUNNING
        st.apply([RemoveWorker(st.workers[1].id)])
        assert len(st.workers) == 1
        assert st.cost_usd(st.now_s) == pytest.approx(st.now_s + 0.3, abs=0.1)  # $1 per slot-second
        st.apply([LoadVariant("wide-cpu2", st.workers[0].id)])  # 2 cores on a 1-vCPU slot: refused
        assert list(st.instances_of("wide-cpu2")) == []
        v1 = st.version
        st.apply([SetScaleDown(st.workers[0].id, frozenset({"wide"}))])
        assert st.version == v1 + 1 and st.workers[0].scale_down_to_cpu == {"wide"}
        await st.close()

    asyncio.run(body())


def test_initial_workers_beyond_the_core_budget_are_an_error() -> None:
    from infaas_core.errors import BackendError

    async def body() -> None:
        with pytest.raises(BackendError, match="core_budget"):
            await _state(budget=0).start()

    asyncio.run(body())


def test_load_variant_adds_replicas_to_an_existing_instance_until_cores_run_out() -> None:
    pytest.importorskip("infaas_real.runtime", reason="the variant runtime is not in this checkout")
    small = make_variant(
        name="mlp_small-onnx-fp32-cpu1-b8", model="mlp_small", task="classification-digits",
        framework="onnx-fp32", hardware="cpu", cores=1, max_batch=8, load_latency_ms=100.0,
        memory_mb=50.0, accuracy=0.9, source="modeled:test", points={1: (0.05, 0.1)},
    )  # fmt: skip
    two = InstanceType("two", price_usd_per_hour=0.0, vcpus=2, memory_gb=1.0, startup_s=0.0)
    cluster = ClusterSpec((two,), initial_workers=(("two", 1),), max_workers=(("two", 1),))
    catalog = Catalog([small])
    t0 = time.perf_counter()

    async def body() -> None:
        st = LiveState(catalog, cluster, Policy(PolicyContext(catalog, cluster), OBSERVATION), StateSettings(core_budget=2, stats_window_s=1.0, startup_scale=1.0),
                       ExecutorSettings(RunnerSpec("infaas_real.runtime:load_runner", None, "cpu", ()), max_queue=64, max_restarts=3, guard=None, heartbeat=None), lambda: time.perf_counter() - t0)  # fmt: skip
        await st.start()
        wid = st.workers[0].id
        st.apply([LoadVariant(small.name, wid), LoadVariant(small.name, wid), LoadVariant(small.name, wid)])
        (inst,) = st.instances_of(small.name)
        assert inst.replicas == 2 and st.workers[0].free_cores == 0  # the third did not fit
        await st.close()

    asyncio.run(body())
