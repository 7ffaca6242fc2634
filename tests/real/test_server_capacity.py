"""A query refused for lack of capacity is a 503 (never 422) and is counted in /metrics as a
dropped query: the kind of the rejection decides, by the control layer's one table
(``infaas_core.control.outcomes``), not its message."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from server_harness import Server, running_server

FULL = "cnn_large-onnx-fp32-cpu2-b8"  # loaded by the first query: the one 2-vCPU slot is full
ELSEWHERE = "mlp_small-onnx-fp32-cpu1-b8"  # then no room is left for this one


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        ["policy=infaas", "policy.selection.when_no_room=reject", "server.core_budget=2"],
        tmp_path_factory.mktemp("capacity"),
    ) as srv:
        yield srv


def _body() -> bytes:
    x = np.zeros((1, 64), dtype=np.float32)
    return orjson.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}],
                         "parameters": {"latency_slo_ms": 1000}})


def test_no_capacity_is_503_and_counted_as_dropped(server: Server) -> None:
    assert server.post(f"/v2/models/{FULL}/infer", _body())[0] == 200  # loads FULL, then serves
    status, body = server.post(f"/v2/models/{ELSEWHERE}/infer", _body())
    assert status == 503, body
    text = server.get("/metrics")[1].decode()
    dropped = [ln for ln in text.splitlines() if ln.startswith("infaas_dropped_queries_total{")]
    assert dropped and float(dropped[0].rsplit(" ", 1)[1]) >= 1.0, text
    assert 'infaas_requests_total{status="503"' in text
