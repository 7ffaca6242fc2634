"""Artifacts carry a checksum (issue 13): a corrupted artifact is detected when a replica
loads it and is rebuilt, so inference succeeds again; one that cannot be served gives its
variant up and readiness says so; readiness does not flap while an extra variant loads."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from server_harness import catalog_overrides, running_server

from infaas_core.actions import LoadVariant, UnloadVariant
from infaas_core.catalog import Catalog
from infaas_core.model import ClusterSpec, InstanceType, Variant, make_variant
from infaas_core.policies.base import Policy, PolicyContext
from infaas_real.executor import ExecutorSettings, GuardSettings, RunnerSpec
from infaas_real.server.state import LiveState, StateSettings

pytest.importorskip("onnxruntime")

MODEL = "mlp_small"
VARIANT = f"{MODEL}-onnx-fp32-cpu1-b8"


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)  # zero a stretch in the middle: same size, other bytes
    path.write_bytes(bytes(data))


def _cache_copy(tmp: Path) -> Path:
    """A private artifact cache holding the digits model's artifacts (copied from the shared
    cache, which the harness has filled), so corrupting it touches nothing else."""
    from infaas_real.profiling.artifacts import default_cache_dir

    catalog_overrides()  # builds every CPU variant's artifact in the shared cache once
    src = default_cache_dir() / "artifacts" / "digits" / MODEL
    dst = tmp / "cache" / "artifacts" / "digits" / MODEL
    shutil.copytree(src, dst)
    return tmp / "cache"


def _onnx_artifact(cache: Path) -> Path:
    (d,) = [p for p in (cache / "artifacts" / "digits" / MODEL).iterdir() if p.name.startswith("onnx-fp32-")]
    return d / json.loads((d / "meta.json").read_text())["file"]


def test_a_corrupted_artifact_is_detected_and_rebuilt_on_load(tmp_path: Path) -> None:
    from infaas_real.profiling.artifacts import file_sha256
    from infaas_real.runtime import load_runner
    from infaas_real.server.config import build_catalog, compose

    cache = _cache_copy(tmp_path)
    variant = build_catalog(compose("serve", catalog_overrides()).cfg).get(VARIANT)
    x = np.random.default_rng(0).uniform(0, 16, size=(4, 64)).astype(np.float32)
    want = load_runner(variant, cache_dir=cache).run(x)  # records the checksum (copied artifacts predate it)
    path = _onnx_artifact(cache)
    recorded = json.loads((path.parent / "meta.json").read_text())["sha256"]
    assert recorded == file_sha256(path)
    _corrupt(path)
    assert file_sha256(path) != recorded
    with pytest.warns(UserWarning, match="checksum"):
        runner = load_runner(variant, cache_dir=cache)
    np.testing.assert_allclose(runner.run(x), want, rtol=1e-4, atol=1e-4)
    path = _onnx_artifact(cache)
    assert file_sha256(path) == json.loads((path.parent / "meta.json").read_text())["sha256"]


def test_server_rebuilds_a_corrupted_artifact_when_its_replica_restarts(tmp_path: Path) -> None:
    cache = _cache_copy(tmp_path)
    x = np.zeros((1, 64), dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()  # fmt: skip
    with running_server(["policy=infaas", f"executor.cache_dir={cache}"], tmp_path) as srv:
        assert srv.post(f"/v2/models/{VARIANT}/infer", body)[0] == 200
        snap = json.loads(srv.get("/v2/infaas/state")[1])
        (inst,) = [i for w in snap["workers"] for i in w["instances"] if i["variant"] == VARIANT]
        _corrupt(_onnx_artifact(cache))
        for pid in inst["pids"]:  # the replacement loads the corrupted file
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            status, out = srv.post(f"/v2/models/{VARIANT}/infer", body)
            snap = json.loads(srv.get("/v2/infaas/state")[1])
            pids = [p for w in snap["workers"] for i in w["instances"] if i["variant"] == VARIANT for p in i["ready_pids"]]
            if status == 200 and pids and not set(pids) & set(inst["pids"]):
                break
            assert time.monotonic() < deadline, (status, out, snap)
            time.sleep(0.1)
        assert srv.get("/v2/health/ready")[0] == 200
    assert "rebuilding" in srv.log.read_text()  # the worker said why it rebuilt


SLOT = InstanceType("slot", price_usd_per_hour=0.0, vcpus=2, memory_gb=1.0, startup_s=0.0)
OBSERVATION = {"observation": {"latency_decay_divisor": {"cpu": 15.0, "gpu": 1.5, "inferentia": 1.5},
                               "gpu_utilisation": "memory"}}


def _v(model: str, task: str = "classification-digits") -> Variant:
    return make_variant(
        name=f"{model}-onnx-fp32-cpu1-b8", model=model, task=task, framework="onnx-fp32", hardware="cpu", cores=1,
        max_batch=8, load_latency_ms=100.0, memory_mb=50.0, accuracy=0.9, source="modeled:test",
        points={1: (0.05, 0.1)},
    )  # fmt: skip


def _state(catalog: Catalog, cluster: ClusterSpec) -> LiveState:
    t0 = time.perf_counter()
    guard = GuardSettings(max_rows_in_flight=64, shed_by_deadline=True, service_estimate_alpha=0.2, service_estimate_answers=256,
                          batch_timeout_factor=20.0, batch_timeout_margin_ms=1000.0, start_timeout_s=60.0,
                          supervise_period_s=0.05)  # fmt: skip
    return LiveState(catalog, cluster, Policy(PolicyContext(catalog, cluster), OBSERVATION),
                     StateSettings(core_budget=2, stats_window_s=1.0, startup_scale=1.0),
                     ExecutorSettings(RunnerSpec("infaas_real.runtime:load_runner", None, "cpu", ()), 64, 1, guard, None),
                     lambda: time.perf_counter() - t0)  # fmt: skip


async def _until(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def test_readiness_stays_up_while_an_extra_variant_loads_and_drops_when_a_task_cannot_serve() -> None:
    good, extra, broken = _v("mlp_small"), _v("mlp_large"), _v("no_such_model", task="other-task")
    catalog = Catalog([good, extra, broken])
    cluster = ClusterSpec((SLOT,), initial_workers=(("slot", 1),), max_workers=(("slot", 1),))

    async def body() -> None:
        st = _state(catalog, cluster)
        await st.start()
        wid = st.workers[0].id
        assert st.ready  # nothing was asked for at start
        st.apply([LoadVariant(good.name, wid)])
        await _until(lambda: any(i.mech.serving for i in st.instances_of(good.name)))
        st.apply([LoadVariant(extra.name, wid)])
        (loading,) = st.instances_of(extra.name)
        seen: list[bool] = []
        while not loading.mech.serving:  # readiness sampled all through the extra load
            seen.append(st.ready)
            await asyncio.sleep(0.005)
        assert seen and all(seen), seen
        st.apply([UnloadVariant(loading.id)])  # frees its core for the next load
        await _until(lambda: not st.instances_of(extra.name))
        st.apply([LoadVariant(broken.name, wid)])
        await _until(lambda: broken.name in st.describe()["unservable"])
        assert not st.ready  # its task has nothing that can serve
        assert st.describe()["ready"] is False
        await st.close()

    asyncio.run(asyncio.wait_for(body(), timeout=90))
