"""The KServe v2 server end to end (a real ``infaas-real serve`` process, policy ``infaas``,
digits catalog): model-less answers meet the requested accuracy on real labels, every bad
request gets its status code, a flood is answered promptly, metrics are exposed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from server_harness import Server, running_server

from infaas_core.catalog import Catalog
from infaas_real.server.client import V2Client

TASK = "classification-digits"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        ["policy=infaas", "server.max_queue_per_instance=8", "server.max_request_bytes=200000",
         "server.max_inflight_requests=256"],
        tmp_path_factory.mktemp("server"),
    ) as srv:
        yield srv


def _infer_body(x: np.ndarray, **params: object) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
         "parameters": params}
    )  # fmt: skip


def test_tritonclient_gets_a_variant_meeting_min_accuracy_and_right_labels(
    server: Server, catalog: Catalog, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Acceptance: min_accuracy 0.95 on the task -> served by a variant profiled >= 0.95, and
    its predicted labels on the held-out digits are right at least that often."""
    import tritonclient.http as th

    x, y = digits
    client = th.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_model_metadata(TASK)
    assert meta["inputs"][0]["shape"] == [-1, 64] and meta["outputs"][0]["shape"] == [-1, 10]
    batch = min(v.max_batch for v in catalog.by_task(TASK) if v.accuracy >= 0.95)
    predicted, served_by = [], set()
    for lo in range(0, len(x), batch):
        xb = x[lo : lo + batch]
        inp = th.InferInput("input", list(xb.shape), "FP32")
        inp.set_data_from_numpy(xb)  # binary tensor extension (tritonclient's default)
        r = client.infer(TASK, inputs=[inp], parameters={"min_accuracy": 0.95, "latency_slo_ms": 100})
        resp = r.get_response()
        served_by.add(resp["model_name"])
        assert resp["parameters"]["variant"] == resp["model_name"]
        assert resp["parameters"]["queue_ms"] >= 0 and resp["parameters"]["infer_ms"] > 0
        predicted.append(r.as_numpy("output").argmax(axis=1))
    assert all(catalog.get(v).accuracy >= 0.95 for v in served_by), served_by
    assert float(np.mean(np.concatenate(predicted) == y)) >= 0.95
    # JSON outputs too
    inp = th.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(x[:1], binary_data=False)
    out = th.InferRequestedOutput("output", binary_data=False)
    r = client.infer(TASK, inputs=[inp], outputs=[out], parameters={"min_accuracy": 0.95, "latency_slo_ms": 100})
    assert r.as_numpy("output").shape == (1, 10)
    client.close()


def test_a_variant_and_a_model_can_be_named_exactly(server: Server, catalog: Catalog, digits: tuple[np.ndarray, np.ndarray]) -> None:
    v = max((v for v in catalog.by_task(TASK) if v.max_batch >= 2 and v.cores == 1), key=lambda v: v.accuracy)
    status, body = server.post(f"/v2/models/{v.name}/infer", _infer_body(digits[0][:2]))
    assert status == 200, body
    assert orjson.loads(body)["model_name"] == v.name
    status, body = server.post(f"/v2/models/{v.model}/infer", _infer_body(digits[0][:1], latency_slo_ms=1000))
    assert status == 200 and catalog.get(orjson.loads(body)["model_name"]).model == v.model


def test_an_impossible_requirement_is_422_with_the_reason(server: Server, digits: tuple[np.ndarray, np.ndarray]) -> None:
    status, body = server.post(f"/v2/models/{TASK}/infer", _infer_body(digits[0][:1], min_accuracy=0.9999))
    assert status == 422
    assert "0.9999" in orjson.loads(body)["error"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (f"/v2/models/{TASK}/infer", b'{"inputs": [', 400),
        (f"/v2/models/{TASK}/infer", _infer_body(np.zeros((1, 63), np.float32)), 400),
        (f"/v2/models/{TASK}/infer", _infer_body(np.zeros((1, 64), np.float32)).replace(b"FP32", b"INT8"), 400),
        (f"/v2/models/{TASK}/infer", _infer_body(np.zeros((1, 64), np.float32), latency_slo_ms=-5), 400),
        ("/v2/models/no-such-task/infer", _infer_body(np.zeros((1, 64), np.float32)), 404),
        (f"/v2/models/{TASK}/infer", b" " * 300_000, 413),
        (f"/v2/models/{TASK}/versions/7/infer", _infer_body(np.zeros((1, 64), np.float32)), 404),
        (f"/v2/models/{TASK}/infer", _infer_body(np.array([[1e39] + [0.0] * 63], np.float64)), 400),
    ],
)
def test_bad_requests_get_their_status(server: Server, path: str, body: bytes, status: int) -> None:
    got, resp = server.post(path, body)
    assert got == status, resp
    err = orjson.loads(resp)["error"]
    assert err and "\n" not in err and "/work/" not in err and "/tmp/" not in err


def test_a_cross_origin_simple_post_is_refused_with_415(server: Server) -> None:
    body = _infer_body(np.zeros((1, 64), np.float32))
    got, resp = server.post(f"/v2/models/{TASK}/infer", body, {"Content-Type": "text/plain"})
    assert got == 415 and b"content-type" in resp
    assert server.post(f"/v2/models/{TASK}/versions/1/infer", body, {"Content-Type": "application/json"})[0] == 200


def test_a_flood_far_beyond_capacity_is_answered_promptly_and_the_server_stays_up(
    server: Server, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """1500 concurrent requests of 8 rows against queues of 8 and a 256-request in-flight
    limit: every request is answered (200, or 429/503 at once), none hangs, and
    /v2/health/live answers during the flood."""
    x = digits[0][:8]

    async def flood() -> tuple[Counter[int], float, float, Counter[tuple[int, str]]]:
        client = V2Client(server.url, max_connections=1500, timeout_s=60)
        params = {"min_accuracy": 0.95, "latency_slo_ms": 100}
        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(client.infer(TASK, x, params)) for _ in range(1500)]
        await asyncio.sleep(0.05)
        probe = V2Client(server.url, 1)
        t1 = time.perf_counter()
        status, _ = await probe.get_json("/v2/health/live")
        live_s = time.perf_counter() - t1
        assert status == 200
        replies = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        elapsed = time.perf_counter() - t0
        await client.close()
        await probe.close()
        errors = Counter((r.status, (r.error or "")[:100]) for r in replies if r.status != 200)
        return Counter(r.status for r in replies), elapsed, live_s, errors

    statuses, elapsed, live_s, errors = asyncio.run(flood())
    assert set(statuses) <= {200, 429, 503}, errors
    assert statuses[429] + statuses[503] > 0, statuses  # admission control refused part of it
    assert elapsed < 60 and live_s < 10
    assert server.get("/v2/health/live")[0] == 200
    assert server.proc.poll() is None


def test_metrics_and_state_describe_the_live_server(server: Server) -> None:
    status, body = server.get("/metrics")
    text = body.decode()
    assert status == 200
    assert 'infaas_requests_total{status="200"' in text
    assert "infaas_instance_replicas{" in text and "infaas_request_latency_seconds_bucket" in text
    status, body = server.get("/v2/infaas/state")
    snap = orjson.loads(body)
    assert status == 200 and snap["policy"] == "infaas" and snap["workers"]
    assert server.get("/v2")[0] == 200
    assert server.get(f"/v2/models/{TASK}/ready")[0] == 200
