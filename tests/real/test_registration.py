"""Model registration end to end (issue 15): a tiny torch model exported to ONNX is registered
with a running server, its variants are profiled in the background and appear in
``GET /v2/models``, and model-less queries by task and accuracy land on them; bad models
(an input shape that disagrees with the task or the graph, unsafe weights, an operator
onnxruntime cannot run, an accuracy outside [0, 1], a taken name) are refused with their
status and leave the catalog exactly as it was. Profiling is kept tiny by overrides."""

from __future__ import annotations

import base64
import io
import os
import pickle
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from server_harness import REPO, Server, running_server

TASK = "classification-tiny"
FEATURES = 16
CLASSES = 4
VALIDATION_ROWS = 200
NOISE = 0.3
MIN_ACCURACY = 0.9
JOB_TIMEOUT_S = 60.0
POLL_S = 0.2
TINY_PROFILE = ["registration.threads=[1]", "registration.batches=[1,4]", "registration.max_batches=[1,4]",
                "registration.reps=5", "registration.min_reps=3", "registration.rounds=1", "registration.warmup=1",
                "registration.time_budget_s_per_point=0.02", "registration.noise_retries=0",
                "registration.agreement_samples=32"]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("registration")
    with running_server(["policy=infaas", f"registration.dir={tmp / 'registry'}", *TINY_PROFILE], tmp) as srv:
        yield srv


def _centroids() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((CLASSES, FEATURES)).astype(np.float32) * 2.0


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, rows)
    x = _centroids()[y] + NOISE * rng.standard_normal((rows, FEATURES)).astype(np.float32)
    return x.astype(np.float32), y.astype(np.int64)


def _tiny_onnx(features: int = FEATURES) -> bytes:
    """A nearest-centroid classifier as a torch module (linear scores), exported to ONNX."""
    import tempfile

    import torch

    c = torch.from_numpy(_centroids()[:, :features])
    linear = torch.nn.Linear(features, CLASSES).eval()
    with torch.no_grad():
        linear.weight.copy_(c)
        linear.bias.copy_(-0.5 * (c * c).sum(1))
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        path = Path(d) / "tiny.onnx"
        torch.onnx.export(linear, (torch.zeros(2, features),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})  # fmt: skip
        return path.read_bytes()


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _register(server: Server, **body: Any) -> tuple[int, dict[str, Any]]:
    status, raw = server.post("/v2/infaas/models", orjson.dumps(body), timeout_s=JOB_TIMEOUT_S)
    return status, orjson.loads(raw)


def _models(server: Server) -> dict[str, Any]:
    status, raw = server.get("/v2/models")
    assert status == 200
    out: dict[str, Any] = orjson.loads(raw)
    return out


def _wait(server: Server, jid: str) -> tuple[dict[str, Any], list[int]]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    seen: list[int] = []
    while True:
        status, raw = server.get(f"/v2/infaas/jobs/{jid}")
        assert status == 200, raw
        job: dict[str, Any] = orjson.loads(raw)
        seen.append(job["progress"]["done"])
        if job["state"] in ("done", "failed"):
            return job, seen
        assert time.monotonic() < deadline, f"job not done in {JOB_TIMEOUT_S} s: {job}"
        time.sleep(POLL_S)


def _infer(server: Server, x: np.ndarray, **params: Any) -> tuple[int, dict[str, Any]]:
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            "parameters": params}  # fmt: skip
    status, raw = server.post(f"/v2/models/{TASK}/infer", orjson.dumps(body))
    return status, orjson.loads(raw)


@pytest.fixture(scope="module")
def registered(server: Server) -> dict[str, Any]:
    """The tiny model registered with labelled validation data; the finished job."""
    x, y = _data(VALIDATION_ROWS, seed=1)
    before = _models(server)
    status, answer = _register(server, name="tiny", task=TASK, input_shape=[FEATURES], format="onnx",
                               model=_b64(_tiny_onnx()), validation=_b64(_npz(x=x, y=y)))  # fmt: skip
    assert status == 202, answer
    assert answer["state"] in ("queued", "profiling") and answer["progress"]["total"] >= 2
    job, seen = _wait(server, answer["id"])
    assert job["state"] == "done", job
    assert seen == sorted(seen) and seen[-1] == job["progress"]["total"]
    return {"job": job, "before": before}


def test_registered_variants_appear_profiled_and_serve_by_task_and_accuracy(
    server: Server, registered: dict[str, Any]
) -> None:
    job, before = registered["job"], registered["before"]
    after = _models(server)
    assert TASK not in before["tasks"] and TASK in after["tasks"]
    mine = {m["name"]: m for m in after["models"] if m["model"] == "tiny"}
    assert set(mine) == set(job["variants"])
    assert {m["framework"] for m in mine.values()} == {"onnx-fp32", "onnx-int8"}
    assert {m["max_batch"] for m in mine.values()} == {1, 4}
    for m in mine.values():
        assert m["task"] == TASK and m["source"].startswith("measured:") and m["batch1_latency_ms"] > 0
        assert m["accuracy"] >= MIN_ACCURACY  # measured on the validation data, not stated
    # the catalog kept everything it had
    assert [m for m in after["models"] if m["model"] != "tiny"] == before["models"]
    # model-less queries by task and accuracy land on the registered variants, with right labels
    x, y = _data(64, seed=2)
    right = 0
    for lo in range(0, len(x), 4):
        status, answer = _infer(server, x[lo : lo + 4], min_accuracy=MIN_ACCURACY, latency_slo_ms=1000)
        assert status == 200, answer
        assert answer["parameters"]["variant"] in mine
        scores = np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(-1, CLASSES)
        right += int((scores.argmax(1) == y[lo : lo + 4]).sum())
    assert right / len(x) >= MIN_ACCURACY


def test_a_model_whose_shape_disagrees_with_its_task_is_refused_and_the_catalog_unchanged(
    server: Server, registered: dict[str, Any]
) -> None:
    before = _models(server)
    onnx8 = _b64(_tiny_onnx(features=8))
    # the task now serves 16 features per item: a model declaring 8 is refused before any check
    status, answer = _register(server, name="tiny8", task=TASK, input_shape=[8], format="onnx", model=onnx8,
                               accuracy=0.9)  # fmt: skip
    assert status == 422 and "disagrees with task" in answer["error"], answer
    # the digits task takes 64 features: refused too
    status, answer = _register(server, name="tiny8", task="classification-digits", input_shape=[8], format="onnx",
                               model=onnx8, accuracy=0.9)  # fmt: skip
    assert status == 422 and "disagrees with task" in answer["error"], answer
    # the declared shape is the task's, but the graph takes 8: refused by the file check
    status, answer = _register(server, name="tiny8", task=TASK, input_shape=[FEATURES], format="onnx", model=onnx8,
                               accuracy=0.9)  # fmt: skip
    assert status == 422 and "graph's input" in answer["error"], answer
    assert _models(server) == before
    assert server.get("/v2/models/tiny8")[0] == 404


def test_unsafe_weights_are_refused_without_running_them(server: Server, tmp_path: Path) -> None:
    before = _models(server)
    marker = tmp_path / "the-pickle-ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.mkdir, (str(marker),))

    weights = pickle.dumps({"fc.weight": Payload()})
    status, answer = _register(server, name="evil", task="classification-imagenet-224", input_shape=[3, 224, 224],
                               format="torchvision", architecture="resnet18", model=_b64(weights),
                               accuracy=0.5)  # fmt: skip
    assert status == 422 and "weights_only" in answer["error"], answer
    assert not marker.exists()
    assert _models(server) == before


def test_bad_requests_get_their_status_and_change_nothing(server: Server, registered: dict[str, Any]) -> None:
    before = _models(server)
    onnx = _b64(_tiny_onnx())
    cases: list[tuple[int, str, dict[str, Any]]] = [
        (422, "outside [0, 1]", {"name": "tiny2", "accuracy": 1.5}),
        (409, "already", {"name": "tiny", "accuracy": 0.9}),  # the registered model
        (409, "already", {"name": "logreg", "accuracy": 0.9}),  # a digits model of the catalog
        (400, "name", {"name": "tiny-2", "accuracy": 0.9}),  # '-' would break variant names
        (400, "accuracy", {"name": "tiny2"}),  # neither stated nor measured
        (400, "base64", {"name": "tiny2", "accuracy": 0.9, "model": "not base64!"}),
        (422, "not an ONNX model", {"name": "tiny2", "accuracy": 0.9, "model": _b64(b"\x00garbage")}),
    ]
    for want, words, override in cases:
        body = {"task": TASK, "input_shape": [FEATURES], "format": "onnx", "model": onnx, **override}
        status, answer = _register(server, **body)
        assert status == want and words in answer["error"], (override, status, answer)
        assert "\n" not in answer["error"]
    assert server.post("/v2/infaas/models", b"{not json")[0] == 400
    assert _models(server) == before


def test_an_operator_onnxruntime_cannot_run_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from infaas_real.registration.model import inspect_onnx
    from infaas_real.registration.spec import RegistrationError

    node = helper.make_node("Mystery", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", FEATURES])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", CLASSES])])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    src = tmp_path / "mystery.onnx"
    onnx.save_model(model, str(src))
    with pytest.raises(RegistrationError, match="unsupported operator") as got:
        inspect_onnx(src, tmp_path / "model.onnx", (FEATURES,), CLASSES)
    assert got.value.status == 422


def test_the_cli_registers_with_a_progress_bar_and_refuses_with_exit_2(
    server: Server, registered: dict[str, Any], tmp_path: Path
) -> None:
    model = tmp_path / "tiny.onnx"
    model.write_bytes(_tiny_onnx())
    url = f"server.url={server.url}"
    cmd = [sys.executable, "-m", "infaas_real", "register", "name=tinycli", f"task={TASK}", f"input_shape=[{FEATURES}]",
           f"onnx={model}", "accuracy=0.95", "frameworks=[onnx-fp32]", "registration.cli_poll_s=0.2", url]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert "registered tinycli: 2 variants" in done.stdout
    assert "profiling tinycli" in done.stderr  # the progress bar
    got = {m["name"]: m for m in _models(server)["models"] if m["model"] == "tinycli"}
    assert {m["framework"] for m in got.values()} == {"onnx-fp32"} and all(m["accuracy"] == 0.95 for m in got.values())
    bad = [*cmd[:4], "name=tinycli2", "task=classification-digits", *cmd[6:]]
    done = subprocess.run(bad, cwd=REPO, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert done.returncode == 2 and "disagrees with task" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _variant(name: str, model: str, accuracy: float) -> Any:
    from infaas_core.model import make_variant

    return make_variant(name=name, model=model, task=TASK, framework="onnx-fp32", hardware="cpu", cores=1,
                        max_batch=4, load_latency_ms=1.0, memory_mb=1.0, accuracy=accuracy,
                        source="measured:test", points={1: (0.1, 0.2), 4: (0.2, 0.3)})  # fmt: skip


def test_the_live_catalog_is_extended_in_one_swap_or_not_at_all() -> None:
    """LiveState.extend_catalog: the policy sees the added variants at once (its caches are
    rebuilt); a duplicate name raises and leaves catalog, policy and control loop as they were."""
    import asyncio

    from infaas_core.actions import LoadAndRoute, Reject
    from infaas_core.errors import ConfigError
    from infaas_core.model import Requirements
    from infaas_real.server import config
    from infaas_real.server.state import LiveState

    cfg = config.compose("serve", ["policy=infaas"]).cfg
    catalog, cluster = config.build_catalog(cfg), config.build_cluster(cfg)
    policy = config.build_policy(cfg, catalog, cluster, config.build_apps(cfg))
    _, state_settings, executor = config.build_server_settings(cfg)
    req = Requirements(task=TASK, min_accuracy=MIN_ACCURACY, latency_slo_ms=1000)

    async def body() -> None:
        st = LiveState(catalog, cluster, policy, state_settings, executor, time.perf_counter)
        await st.start()
        try:
            assert isinstance(st.decide(req, None, 1), Reject)  # no such task yet (and the reject is cached)
            due = {p.name: p.next_s for p in st.loop.parts}
            st.extend_catalog([_variant("a-onnx-fp32-cpu1-b4", "a", 0.95)])
            assert st.catalog.by_task(TASK)[0].name == "a-onnx-fp32-cpu1-b4" and len(st.catalog) == len(catalog) + 1
            assert st.policy is not policy and st.loop.policy is st.policy
            assert {p.name: p.next_s for p in st.loop.parts} == due  # the periodic parts keep their times
            decision = st.decide(req, None, 1)
            assert isinstance(decision, LoadAndRoute) and decision.variant == "a-onnx-fp32-cpu1-b4"
            before = (st.catalog, st.policy, list(st.loop.parts), st.version)
            with pytest.raises(ConfigError, match="duplicate"):
                st.extend_catalog([_variant("b-onnx-fp32-cpu1-b4", "b", 0.97), _variant("a-onnx-fp32-cpu1-b4", "a", 0.9)])
            assert (st.catalog, st.policy, list(st.loop.parts), st.version) == before
            assert "b-onnx-fp32-cpu1-b4" not in st.catalog
        finally:
            await st.close()

    asyncio.run(body())


PARTWAY_TIMEOUT_S = 1.5
"""The slow server's job timeout: each runner's two batch sizes take 2 x 0.5 s to measure
(registration.time_budget_s_per_point=0.5), so the second of the two runners cannot be done
by then even on an idle machine, and the job is stopped partway."""


def test_a_job_stopped_partway_adds_nothing_and_leaves_no_files(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    slow = [*TINY_PROFILE, "registration.reps=100000", "registration.min_reps=1",
            "registration.time_budget_s_per_point=0.5", f"registration.job_timeout_s={PARTWAY_TIMEOUT_S}"]  # fmt: skip
    with running_server(["policy=infaas", f"registration.dir={registry}", *slow], tmp_path) as srv:
        before = _models(srv)
        x, y = _data(VALIDATION_ROWS, seed=1)
        status, answer = _register(srv, name="tiny", task=TASK, input_shape=[FEATURES], format="onnx",
                                   model=_b64(_tiny_onnx()), validation=_b64(_npz(x=x, y=y)))  # fmt: skip
        assert status == 202, answer
        job, seen = _wait(srv, answer["id"])
        assert job["state"] == "failed" and "job_timeout_s" in job["errors"][0], job
        assert job["variants"] == [] and seen[-1] < job["progress"]["total"]
        assert _models(srv) == before
        assert srv.get("/v2/models/tiny")[0] == 404
        assert list(registry.iterdir()) == []  # the model's directory is gone
        # the name is free again (a bad accuracy is what is refused now, not the name)
        status, answer = _register(srv, name="tiny", task=TASK, input_shape=[FEATURES], format="onnx",
                                   model=_b64(_tiny_onnx()), accuracy=2.0)  # fmt: skip
        assert status == 422 and "outside [0, 1]" in answer["error"], answer
