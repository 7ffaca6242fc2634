"""The three implementations of the control contract, driven the same way.

Each harness wraps the control layer's :class:`~infaas_core.control.cluster.Cluster` over one
backend's own mechanism — the snapshot view (nothing happens until ``settle``), the
simulator's :class:`~infaas_sim.cluster.SimMechanism` in SimPy time, and the server's
:class:`~infaas_real.server.state.LocalMechanism` with real worker processes on the wall
clock, and the same server over the Ray mechanism (:mod:`infaas_real.raycluster`, worker actors
on a local Ray cluster) — and offers the same four verbs: ``apply`` actions, ``route`` a decision,
``settle`` (let every start-up, load and drain finish), ``close_window`` (the backend's own
path for ending an observation window). A future backend counts as one when a harness for it
passes ``test_contract.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from infaas_core.actions import Action, LoadAndRoute, Route
from infaas_core.catalog import Catalog
from infaas_core.control.cluster import Cluster, Instance
from infaas_core.control.observe import ObservationConfig
from infaas_core.model import ClusterSpec, InstanceType, make_variant
from infaas_core.view import InstanceState, WorkerState

# What the contract tests run on: one small CPU variant the real server can serve (the
# digits zoo's MLP), on 2-vCPU workers that take a moment to start.
VARIANT = make_variant(
    name="mlp_small-onnx-fp32-cpu1-b8", model="mlp_small", task="classification-digits",
    framework="onnx-fp32", hardware="cpu", cores=1, max_batch=8, load_latency_ms=100.0,
    memory_mb=50.0, accuracy=0.9, source="modeled:test", points={1: (0.05, 0.1)},
)  # fmt: skip
TWO = InstanceType("two", price_usd_per_hour=36.0, vcpus=2, memory_gb=1.0, startup_s=0.3)
SPEC = ClusterSpec((TWO,), initial_workers=(("two", 1),), max_workers=(("two", 2),))
OBSERVATION = ObservationConfig({"cpu": 15.0, "gpu": 1.5, "inferentia": 1.5}, "memory")
"""INFaaS's divisors (configs/policy/observation/infaas.yaml); any values would do, as long
as every backend is given the same."""


class Harness:
    name = "base"
    cluster: Cluster

    def apply(self, actions: Sequence[Action]) -> list[str | None]:
        return self.cluster.apply(actions)

    def route(self, d: Route | LoadAndRoute) -> tuple[Instance | None, str | None]:
        return self.cluster.route(d)

    def settle(self) -> None:
        raise NotImplementedError

    def close_window(self, window_s: float) -> None:
        self.cluster.close_window(window_s)

    def close(self) -> None:
        pass

    def observable(self) -> dict[str, Any]:
        return self.cluster.observable()


class SnapshotHarness(Harness):
    name = "snapshot"

    def __init__(self) -> None:
        from infaas_core.view_snapshot import SnapshotView

        self.view = SnapshotView(Catalog([VARIANT]), SPEC, OBSERVATION)
        self.cluster = self.view
        self.view.add_initial_workers()

    def settle(self) -> None:
        self.view.settle()


class SimHarness(Harness):
    name = "sim"

    def __init__(self) -> None:
        import simpy

        from infaas_sim.cluster import SimMechanism
        from infaas_sim.latency import latency_model

        self.env = simpy.Environment()
        self.clock = [0.0]
        self.mech = SimMechanism(Catalog([VARIANT]), latency_model("deterministic"), self._schedule, self.clock,
                                 sharing=True, recheck_s=0.01)
        self.cluster = Cluster(Catalog([VARIANT]), SPEC, OBSERVATION, lambda: self.clock[0], self.mech)
        self.mech.cluster = self.cluster
        self.mech.on_collect = self._collect
        self.cluster.add_initial_workers()

    def _schedule(self, at_s: float, fn: Callable[[], None]) -> None:
        ev = self.env.timeout(max(at_s - self.env.now, 0.0))
        ev.callbacks.append(lambda _ev: fn())

    def _collect(self, t0_s: float, now_s: float) -> None:
        import numpy as np

        # the engine's path: each queue counts its window into its instance's counters
        for inst in self.cluster.instances.values():
            inst.mech.close_window(t0_s, now_s, np.zeros(1), inst.counters)

    def settle(self) -> None:
        self.env.run(until=self.env.now + 60.0)
        self.clock[0] = self.env.now


class ServerHarness(Harness):
    name = "server"

    def __init__(self) -> None:
        from infaas_core.policies.base import Policy, PolicyContext
        from infaas_real.executor import ExecutorSettings, RunnerSpec
        from infaas_real.server.state import LiveState, StateSettings

        catalog = Catalog([VARIANT])
        t0 = time.perf_counter()
        params = {"observation": {"latency_decay_divisor": dict(OBSERVATION.latency_decay_divisor),
                                  "gpu_utilisation": OBSERVATION.gpu_utilisation}}
        self.loop = asyncio.new_event_loop()

        async def build() -> LiveState:
            st = LiveState(catalog, SPEC, Policy(PolicyContext(catalog, SPEC), params),
                           StateSettings(core_budget=4, stats_window_s=3600.0, startup_scale=1.0),
                           ExecutorSettings(RunnerSpec("infaas_real.runtime:load_runner", None, "cpu", ()), max_queue=64, max_restarts=3, guard=None, heartbeat=None), lambda: time.perf_counter() - t0,
                           mechanism=self._mechanism())  # fmt: skip
            await st.start()
            return st

        self.state = self.loop.run_until_complete(build())
        self.cluster = self.state

    def _mechanism(self) -> Any:
        return None  # LiveState's own: this machine's slots

    def _in_loop(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return fn()

        return self.loop.run_until_complete(call())

    def apply(self, actions: Sequence[Action]) -> list[str | None]:
        out: list[str | None] = self._in_loop(lambda: self.cluster.apply(actions))
        return out

    def route(self, d: Route | LoadAndRoute) -> tuple[Instance | None, str | None]:
        out: tuple[Instance | None, str | None] = self._in_loop(lambda: self.cluster.route(d))
        return out

    def settle(self, timeout_s: float = 60.0) -> None:
        async def wait() -> None:
            end = time.monotonic() + timeout_s
            while time.monotonic() < end:
                c = self.cluster
                busy = any(w.state is WorkerState.STARTING for w in c.workers) or any(
                    i.state is not InstanceState.READY for i in c.instances.values()
                )
                if not busy:
                    return
                await asyncio.sleep(0.05)
            raise TimeoutError("the server did not settle")

        self.loop.run_until_complete(wait())

    def close_window(self, window_s: float) -> None:
        self._in_loop(lambda: self.cluster.close_window(window_s))

    def close(self) -> None:
        self.loop.run_until_complete(self.state.close())
        self.loop.close()


class RayHarness(ServerHarness):
    """The server's :class:`LiveState` over the Ray mechanism (:mod:`infaas_real.raycluster`):
    each worker a Ray actor on a local Ray cluster (one per test module, :func:`ray_cluster`),
    its replicas the executor's processes inside the actor."""

    name = "ray"

    def __init__(self) -> None:
        from infaas_real.raycluster import LocalRay, RaySettings, mechanism_factory

        ray_cluster()
        # stats_timeout_s / stop_timeout_s: generous for a loaded 2-core machine
        self._factory = mechanism_factory(RaySettings(address=None, local_only=True, local=LocalRay(None, None, 80, "/tmp/iray"),
                                                      accelerator_resources={}, type_resources={}, max_concurrency=256,
                                                      calls_in_flight=2, max_queries_per_call=64,
                                                      stats_timeout_s=10.0, stop_timeout_s=10.0, connect_timeout_s=10.0))  # fmt: skip
        super().__init__()

    def _mechanism(self) -> Any:
        return self._factory


_RAY: list[Any] = []


def ray_cluster() -> Any:
    """The local Ray cluster the Ray harness runs on (started on first use: 5-10 s): one
    head raylet with room for the contract's two 2-vCPU workers."""
    if not _RAY:
        from infaas_real.raycluster.local import LocalRayCluster

        _RAY.append(LocalRayCluster(num_cpus=4, memory_gb=4.0, object_store_mb=80))
    return _RAY[0]


def shutdown_ray() -> None:
    """Stop the Ray cluster if one was started (a module fixture's finalizer calls it)."""
    while _RAY:
        _RAY.pop().shutdown()


def _ray_available() -> str | None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # not imported here: local-only mode is set before it is
        return "ray is not installed (the ray extra: pip install -e '.[ray]')"
    return None


HARNESSES: dict[str, Callable[[], Harness]] = {
    "snapshot": SnapshotHarness,
    "sim": SimHarness,
    "server": ServerHarness,
    "ray": RayHarness,
}
