"""KServe v2 over gRPC beside HTTP (issue 15): a real ``infaas-real serve`` process (digits
catalog, policy ``infaas``) on a free HTTP port and a free gRPC port; ``tritonclient.grpc``
infers model-less with requirements and gets what HTTP answers for the same input, errors map
to the codes of the table in :mod:`infaas_real.server.app`, every RPC is counted once, and a
SIGINT stops both servers (answers finish, later RPCs UNAVAILABLE)."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from server_harness import Server, running_server

from infaas_core.catalog import Catalog

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (the real extra) is not installed")
import grpc  # noqa: E402  (grpcio comes with tritonclient[grpc])
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

TASK = "classification-digits"
REQ = {"min_accuracy": 0.95, "latency_slo_ms": 1000}


@pytest.fixture(scope="module")
def final_metrics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grpc-final") / "final.prom"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, final_metrics: Path) -> Iterator[Server]:
    # grpc_port=0: any free port, read back from the server's line (a port picked here could
    # be the one the harness picks for HTTP)
    with running_server(["policy=infaas", "server.grpc_port=0", "server.max_request_bytes=200000",
                         f"server.final_metrics_path={final_metrics}"], tmp_path_factory.mktemp("grpc")) as srv:
        yield srv


@pytest.fixture(scope="module")
def grpc_port(server: Server) -> int:
    m = re.search(r"gRPC on 127\.0\.0\.1:(\d+)", server.log.read_text())
    assert m, server.log.read_text()[-2000:]
    return int(m.group(1))


@pytest.fixture(scope="module")
def client(server: Server, grpc_port: int) -> Iterator[object]:
    c = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    yield c
    c.close()


def _input(x: np.ndarray, datatype: str = "FP32") -> object:
    inp = grpcclient.InferInput("input", list(x.shape), datatype)
    inp.set_data_from_numpy(x)  # raw_input_contents, tritonclient's default
    return inp


def _code(exc: InferenceServerException) -> str:
    return str(exc.status())  # "StatusCode.NOT_FOUND"


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_health_and_metadata_rpcs(client: object, server: Server) -> None:
    assert client.is_server_live() and client.is_server_ready()  # type: ignore[attr-defined]
    assert client.is_model_ready(TASK)  # type: ignore[attr-defined]
    meta = client.get_server_metadata()  # type: ignore[attr-defined]
    http_meta = orjson.loads(server.get("/v2")[1])
    assert meta.name == http_meta["name"] and list(meta.extensions) == http_meta["extensions"]
    m = client.get_model_metadata(TASK, as_json=True)  # type: ignore[attr-defined]
    assert m["inputs"][0]["shape"] == ["-1", "64"] and m["outputs"][0]["shape"] == ["-1", "10"]
    with pytest.raises(InferenceServerException) as e:
        client.is_model_ready("no-such-task")  # type: ignore[attr-defined]
    assert _code(e.value) == "StatusCode.NOT_FOUND"


# Runs before the exact-variant queries below: the infaas policy's identity cache is keyed by
# id(requirements), so a later request whose Requirements reuses a freed one's address can get
# that request's decision (seen: min_accuracy 0.9999 on the task served by the variant named
# just before); reported, the fix belongs to infaas_core/policies/infaas_selection.py.
@pytest.mark.parametrize(
    ("model", "x", "params", "code", "detail"),
    [
        ("no-such-task", np.zeros((1, 64), np.float32), REQ, "NOT_FOUND", "no-such-task"),
        (TASK, np.zeros((1, 64), np.float32), {"min_accuracy": 0.9999}, "FAILED_PRECONDITION", "0.9999"),
        (TASK, np.zeros((1, 63), np.float32), REQ, "INVALID_ARGUMENT", "[batch >= 1, 64]"),
        (TASK, np.array([[np.nan] + [0.0] * 63], np.float32), REQ, "INVALID_ARGUMENT", "finite"),
        (TASK, np.zeros((1, 64), np.float32), {"latency_slo_ms": -5}, "INVALID_ARGUMENT", "latency_slo_ms"),
        (TASK, np.zeros((1, 64), np.float32), {"min_accuracy": "high"}, "INVALID_ARGUMENT", "min_accuracy"),
        (TASK, np.zeros((1, 64), np.int32), REQ, "INVALID_ARGUMENT", "datatype"),
    ],
)
def test_errors_map_to_grpc_codes(client: object, model: str, x: np.ndarray, params: dict[str, object],
                                  code: str, detail: str) -> None:
    dtype = {np.dtype("float32"): "FP32", np.dtype("int32"): "INT32"}[x.dtype]
    with pytest.raises(InferenceServerException) as e:
        client.infer(model, [_input(x, dtype)], parameters=params)  # type: ignore[attr-defined]
    assert _code(e.value) == f"StatusCode.{code}", e.value
    msg = e.value.message()
    assert detail in msg and "\n" not in msg, msg
    if code == "FAILED_PRECONDITION":
        assert "suggestion" in msg or "accuracy" in msg, msg  # the policy's reason travels


def test_tritonclient_grpc_infers_with_requirements_as_http_answers(
    client: object, server: Server, grpc_port: int, catalog: Catalog, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Acceptance (issue 15): model-less with requirements over gRPC -> a variant meeting the
    floor, right labels at least that often, and the scores HTTP gives that variant."""
    x, y = digits
    batch = min(v.max_batch for v in catalog.by_task(TASK) if v.accuracy >= 0.95)
    predicted, served_by = [], set()
    for lo in range(0, len(x), batch):
        r = client.infer(TASK, [_input(x[lo: lo + batch])], parameters=REQ)  # type: ignore[attr-defined]
        resp = r.get_response()
        served_by.add(resp.model_name)
        assert resp.parameters["variant"].string_param == resp.model_name
        assert resp.parameters["infer_ms"].double_param > 0
        predicted.append(r.as_numpy("output").argmax(axis=1))
    assert all(catalog.get(v).accuracy >= 0.95 for v in served_by), served_by
    assert float(np.mean(np.concatenate(predicted) == y)) >= 0.95
    variant = sorted(served_by)[0]
    xb = x[:batch]  # within every serving variant's max_batch
    g = client.infer(variant, [_input(xb)], parameters=REQ).as_numpy("output")  # type: ignore[attr-defined]
    body = orjson.dumps({"inputs": [{"name": "input", "shape": list(xb.shape), "datatype": "FP32",
                                     "data": xb.ravel().tolist()}], "parameters": REQ})
    status, out = server.post(f"/v2/models/{variant}/infer", body)
    assert status == 200, out
    h = np.asarray(orjson.loads(out)["outputs"][0]["data"], dtype=np.float32).reshape(g.shape)
    np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-6)
    # UINT8 values, raw and as typed contents (uint_contents), give the FP32 answer
    u8 = np.clip(np.rint(xb), 0, 255).astype(np.uint8)
    ref = client.infer(variant, [_input(u8.astype(np.float32))], parameters=REQ).as_numpy("output")  # type: ignore[attr-defined]
    raw = client.infer(variant, [_input(u8, "UINT8")], parameters=REQ).as_numpy("output")  # type: ignore[attr-defined]
    np.testing.assert_allclose(raw, ref, rtol=1e-5, atol=1e-6)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = service_pb2.ModelInferRequest(model_name=variant, inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="UINT8", shape=list(u8.shape))])
        req.inputs[0].contents.uint_contents.extend(u8.ravel().tolist())
        req.parameters["latency_slo_ms"].double_param = 1000
        typed = stub.ModelInfer(req, timeout=30)
    got = np.frombuffer(typed.raw_output_contents[0], dtype="<f4").reshape(ref.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_a_message_over_max_request_bytes_is_resource_exhausted(client: object) -> None:
    x = np.zeros((1000, 64), np.float32)  # 256000 bytes > server.max_request_bytes=200000
    with pytest.raises(InferenceServerException) as e:
        client.infer(TASK, [_input(x)], parameters=REQ)  # type: ignore[attr-defined]
    assert _code(e.value) == "StatusCode.RESOURCE_EXHAUSTED", e.value


def test_unimplemented_rpcs_answer_one_line(client: object) -> None:
    with pytest.raises(InferenceServerException) as e:
        client.get_model_repository_index()  # type: ignore[attr-defined]
    assert _code(e.value) == "StatusCode.UNIMPLEMENTED"
    assert "RepositoryIndex" in e.value.message() and "\n" not in e.value.message()


def test_every_grpc_request_is_counted_once(client: object, server: Server, digits: tuple[np.ndarray, np.ndarray]) -> None:
    before = server.get("/metrics")[1].decode()
    ok, n_live = 5, 3
    for _ in range(ok):
        client.infer(TASK, [_input(digits[0][:2])], parameters=REQ)  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException):
        client.infer("no-such-task", [_input(digits[0][:1])], parameters=REQ)  # type: ignore[attr-defined]
    for _ in range(n_live):
        client.is_server_live()  # type: ignore[attr-defined]
    after = server.get("/metrics")[1].decode()

    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert delta("infaas_grpc_requests_total", method="ModelInfer", code="OK") == ok
    assert delta("infaas_grpc_requests_total", method="ModelInfer", code="NOT_FOUND") == 1
    assert delta("infaas_grpc_requests_total", method="ServerLive", code="OK") == n_live
    # the inference metrics are shared: gRPC answers count there by the status they map from
    assert delta("infaas_requests_total", status="200") == ok
    assert delta("infaas_requests_total", status="404") == 1
    assert delta("infaas_request_latency_seconds_count") == ok
    assert delta("infaas_http_requests_total", route="infer") == 0  # not counted as HTTP


def test_sigint_stops_grpc_too(client: object, server: Server, grpc_port: int, final_metrics: Path,
                               digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Runs last: RPCs sent before SIGINT are answered or refused (UNAVAILABLE, or CANCELLED
    when the transport closed before dispatch; CI saw one), none is lost
    (every OK the server counted reached the client), the process exits cleanly after the
    gRPC stop (the final metrics are written), and an RPC after it is UNAVAILABLE."""
    before = _metric(server.get("/metrics")[1].decode(), "infaas_grpc_requests_total", method="ModelInfer", code="OK")
    sent = 8
    results: list[tuple[object, InferenceServerException | None]] = []
    for _ in range(sent):
        client.async_infer(TASK, [_input(digits[0][:4])], lambda result, error: results.append((result, error)),  # type: ignore[attr-defined]
                           parameters=REQ)
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=30) in (0, -signal.SIGINT)  # uvicorn re-raises the signal it caught
    deadline = time.monotonic() + 10
    while len(results) < sent and time.monotonic() < deadline:
        time.sleep(0.01)  # the callbacks run on the client's threads
    assert len(results) == sent
    for r, err in results:  # answered, or (sent once the stop began) refused as UNAVAILABLE, or
        if err is not None:  # CANCELLED when the stop closed the transport before it was dispatched
            assert _code(err) in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"), err
        else:
            assert r.as_numpy("output").shape == (4, 10)  # type: ignore[attr-defined]
    answered = sum(err is None for _, err in results)
    final = _metric(final_metrics.read_text(), "infaas_grpc_requests_total", method="ModelInfer", code="OK")
    assert final - before == answered
    late = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    with pytest.raises(InferenceServerException) as e:
        late.is_server_live(client_timeout=5)
    assert _code(e.value) in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"), e.value
    late.close()


def test_a_grpc_port_in_use_leaves_http_serving_with_a_warning(tmp_path: Path) -> None:
    """Another process holds the gRPC port: one warning line, HTTP serves, the holder's port
    is not shared (no SO_REUSEPORT)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with running_server(["policy=infaas", f"server.grpc_port={port}"], tmp_path) as srv:
            assert srv.get("/v2/health/live")[0] == 200
            log = srv.log.read_text()
            assert f"gRPC not served: cannot bind 127.0.0.1:{port}" in log, log[-2000:]
            assert "gRPC on" not in log
