"""Ground figures for a Ray backend (docs/ray.md): what Ray costs on this machine.

    .venv/bin/python benchmarks/bench_ray_ground.py [--calls 300] [--actor-starts 5]
        [--out ray_ground.json]

Needs the `ray` extra. Measures, on this machine only (every "node" is a raylet process here):

- ``ray.init()`` with no address (a local Ray started and stopped), with and without the
  dashboard;
- a local two-node cluster (``ray.cluster_utils.Cluster``: a head raylet and a second raylet,
  one CPU and one custom resource each): how long the head and the second node take to start;
- an actor placed on the second node by its custom resource: where it landed, and its
  start-up time (``.remote()`` to the first answer of a method);
- the round trip of an actor method carrying a [1, 3, 224, 224] uint8 image and a [32, 64]
  float32 array (answering the float array), for an actor on the driver's node and one on the
  other node, beside an empty call: p50 / p99 over ``--calls`` calls;
- faults: ``ray.kill`` of an actor with a call in flight, SIGKILL of an actor's process, and
  removing the node an actor runs on (graceful, then a hard kill of the raylet): how long until
  the caller's ``ray.get`` raises, and which exception.

Every wait is bounded (``--fault-timeout-s``). Prints one JSON document and writes it to
``--out``. Ray's temp dir is a fresh short directory under /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SHAPE = (1, 3, 224, 224)
FEATURE_SHAPE = (32, 64)
HEAD_RESOURCE = "infaas_node_head"
SECOND_RESOURCE = "infaas_node_2"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _pct(xs_s: list[float]) -> dict[str, float]:
    a = np.asarray(xs_s) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3), "n": len(xs_s)}  # fmt: skip


def _init_time(temp_dir: str, dashboard: bool) -> dict[str, float]:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=dashboard, _temp_dir=temp_dir)
    t1 = time.perf_counter()
    ray.shutdown()
    t2 = time.perf_counter()
    return {"init_s": round(t1 - t0, 3), "shutdown_s": round(t2 - t1, 3)}


def _outcome(ref: Any, t0: float, timeout_s: float) -> dict[str, Any]:
    import ray

    try:
        ray.get(ref, timeout=timeout_s)
        return {"after_s": None, "exception": "none: the call returned"}
    except Exception as exc:  # the point is which exception the caller gets
        return {"after_s": round(time.perf_counter() - t0, 3), "exception": type(exc).__name__,
                "message": str(exc).splitlines()[0][:200]}  # fmt: skip


def _fault(fn: Any, actor: Any, timeout_s: float, node_id: str | None = None) -> dict[str, Any]:
    """Run ``fn`` (the fault) with a long call on ``actor`` in flight: how long until ray.get of
    that call raises, what a new call made after it gets, and (``node_id``) how long until
    ray.nodes() reports that node dead and what a call made then gets."""
    call = actor.sleep.remote(timeout_s)
    time.sleep(0.2)  # the call is running
    t0 = time.perf_counter()
    fn()
    in_flight = _outcome(call, t0, timeout_s)
    t1 = time.perf_counter()
    out = {"in_flight": in_flight, "next_call": _outcome(actor.where.remote(), t1, timeout_s)}
    if node_id is not None:
        out["node_marked_dead_after_s"] = _wait_dead(node_id, t0, timeout_s)
        t2 = time.perf_counter()
        out["call_after_node_dead"] = _outcome(actor.where.remote(), t2, timeout_s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300, help="round trips per case")
    ap.add_argument("--actor-starts", type=int, default=5, help="actor start-ups to time")
    ap.add_argument("--fault-timeout-s", type=float, default=60.0, help="longest wait for a fault to show")
    ap.add_argument("--out", type=Path, default=Path("ray_ground.json"))
    args = ap.parse_args()

    # Ray's local-only mode (read when ray is imported): every raylet's address and every
    # port on 127.0.0.1, so no traffic goes to the machine's external interface.
    os.environ.setdefault(LOOPBACK_ENV, "0")
    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="rayb", dir="/tmp")  # Unix socket paths: keep it short
    result: dict[str, Any] = {"ray_version": ray.__version__, "cpus": os.cpu_count(),
                              "loadavg_start": os.getloadavg()}  # fmt: skip
    try:
        result["init_no_dashboard"] = _init_time(temp_dir, dashboard=False)
        result["init_with_dashboard"] = _init_time(temp_dir, dashboard=True)

        # Cluster() records its address in Ray's default temp dir whatever temp_dir says.
        Path(tempfile.gettempdir(), "ray").mkdir(exist_ok=True)
        t0 = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "resources": {HEAD_RESOURCE: 1}, "include_dashboard": False,
            "temp_dir": temp_dir})  # fmt: skip
        t1 = time.perf_counter()
        second = cluster.add_node(num_cpus=1, resources={SECOND_RESOURCE: 1})
        cluster.wait_for_nodes()
        t2 = time.perf_counter()
        ray.init(address=cluster.address)
        t3 = time.perf_counter()
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}, ray.nodes()
        result["cluster"] = {"head_start_s": round(t1 - t0, 3), "second_node_start_s": round(t2 - t1, 3),
                             "driver_connect_s": round(t3 - t2, 3), "nodes": len(ray.nodes())}  # fmt: skip

        @ray.remote(num_cpus=0)
        class Echo:
            def where(self) -> tuple[str, int]:
                return ray.get_runtime_context().get_node_id(), os.getpid()

            def empty(self) -> None:
                return None

            def infer(self, image: np.ndarray, features: np.ndarray) -> np.ndarray:
                return features  # the answer is as large as an embedding, the query as an image

            def sleep(self, s: float) -> None:
                time.sleep(s)

        def on(resource: str) -> Any:
            return Echo.options(resources={resource: 0.01})

        starts = []
        for _ in range(args.actor_starts):
            t = time.perf_counter()
            a = on(SECOND_RESOURCE).remote()
            node, _pid = ray.get(a.where.remote(), timeout=args.fault_timeout_s)
            starts.append(time.perf_counter() - t)
            assert node == second.node_id, f"actor landed on {node}, not on the second node {second.node_id}"
            ray.kill(a)
        result["actor_start"] = _pct(starts) | {"placed_on_second_node": True}

        image = np.random.default_rng(0).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
        features = np.random.default_rng(1).standard_normal(FEATURE_SHAPE).astype(np.float32)
        rtt: dict[str, Any] = {"image_bytes": image.nbytes, "features_bytes": features.nbytes}
        for where, res in (("same_node", HEAD_RESOURCE), ("other_node", SECOND_RESOURCE)):
            a = on(res).remote()
            ray.get(a.where.remote())
            for case in ("empty", "infer"):
                xs = []
                for i in range(args.calls + 10):
                    t = time.perf_counter()
                    ref = a.empty.remote() if case == "empty" else a.infer.remote(image, features)
                    out = ray.get(ref)
                    if i >= 10:  # the first calls warm the worker up
                        xs.append(time.perf_counter() - t)
                if case == "infer":
                    assert np.array_equal(out, features)
                rtt[f"{where}_{case}"] = _pct(xs)
            ray.kill(a)
        result["round_trip"] = rtt

        faults: dict[str, Any] = {}
        a = on(SECOND_RESOURCE).remote()
        ray.get(a.where.remote())
        faults["ray_kill_actor"] = _fault(lambda: ray.kill(a), a, args.fault_timeout_s)

        a = on(SECOND_RESOURCE).remote()
        _node, pid = ray.get(a.where.remote())
        faults["sigkill_actor_process"] = _fault(lambda: os.kill(pid, signal.SIGKILL), a,
                                                 args.fault_timeout_s)  # fmt: skip

        a = on(SECOND_RESOURCE).remote()
        ray.get(a.where.remote())
        faults["remove_node_graceful"] = _fault(lambda: cluster.remove_node(second, allow_graceful=True),
                                                a, args.fault_timeout_s, second.node_id)  # fmt: skip

        third = cluster.add_node(num_cpus=1, resources={SECOND_RESOURCE: 1})
        cluster.wait_for_nodes()
        a = on(SECOND_RESOURCE).remote()
        ray.get(a.where.remote(), timeout=args.fault_timeout_s)
        faults["remove_node_hard"] = _fault(lambda: cluster.remove_node(third, allow_graceful=False),
                                            a, args.fault_timeout_s, third.node_id)  # fmt: skip
        result["faults"] = faults

        ray.shutdown()
        cluster.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    args.out.write_text(text + "\n")


def _wait_dead(node_id: str, t0: float, timeout_s: float) -> float | None:
    """Seconds from ``t0`` until ray.nodes() reports the node not alive (None: not within the timeout)."""
    import ray

    while time.perf_counter() - t0 < timeout_s:
        if any(n["NodeID"] == node_id and not n["Alive"] for n in ray.nodes()):
            return round(time.perf_counter() - t0, 3)
        time.sleep(0.1)
    return None


if __name__ == "__main__":
    main()
