"""KServe v2 parsing and encoding rules (no server needed)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from infaas_real.server.client import decode_reply, encode_request
from infaas_real.server.protocol import HEADER_LEN, ProtocolError, encode_infer, parse_infer


def _json_body(**over: object) -> bytes:
    req: dict[str, object] = {
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))}],
        "parameters": {"min_accuracy": 0.9, "latency_slo_ms": 50, "app": "a"},
    }
    req.update(over)
    return orjson.dumps(req)


def test_json_tensor_and_requirements_are_read() -> None:
    r = parse_infer(_json_body(), None, input_shape=(4,))
    assert r.x.shape == (2, 4) and r.x.dtype == np.float32
    assert r.x[1, 3] == 7.0
    assert (r.min_accuracy, r.latency_slo_ms, r.app) == (0.9, 50.0, "a")
    assert r.binary_output is False


def test_binary_tensor_extension_round_trips_through_the_client_encoding() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    body, hlen = encode_request(x, {"latency_slo_ms": 10})
    r = parse_infer(body, str(hlen), input_shape=(4,))
    np.testing.assert_array_equal(r.x, x)
    assert r.binary_output is True
    y = np.ones((3, 10), dtype=np.float32)
    out, headers = encode_infer("v1", None, y, {"variant": "v1"}, binary=True)
    reply = decode_reply(200, {k.lower(): v for k, v in headers.items()}, out)
    assert reply.model_name == "v1" and reply.parameters["variant"] == "v1"
    assert reply.y is not None
    np.testing.assert_array_equal(reply.y, y)


def test_json_response_has_the_v2_fields() -> None:
    out, headers = encode_infer("v1", "id-7", np.zeros((1, 3), np.float32), {"queue_ms": 0.1}, binary=False)
    resp = orjson.loads(out)
    assert resp["model_name"] == "v1" and resp["id"] == "id-7"
    assert resp["outputs"][0] == {"name": "output", "datatype": "FP32", "shape": [1, 3], "data": [0.0, 0.0, 0.0]}
    assert HEADER_LEN not in headers


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (_json_body(inputs=[]), "exactly one input"),
        (_json_body(inputs=[{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]), "name"),
        (_json_body(inputs=[{"name": "input", "shape": [1, 4], "datatype": "INT64", "data": [0] * 4}]), "datatype"),
        (_json_body(inputs=[{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [0] * 5}]), "shape"),
        (_json_body(inputs=[{"name": "input", "shape": [4], "datatype": "FP32", "data": [0] * 4}]), "shape"),
        (_json_body(inputs=[{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [0] * 7}]), "7 values"),
        (_json_body(inputs=[{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["a"] * 4}]), "number"),
        (_json_body(inputs=[{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["1", "2", "3", "4"]}]), "strings"),
        (_json_body(inputs=[{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, None, 3, 4]}]), "null"),
        (_json_body(inputs=[{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [True] * 4}]), "true/false"),
        (_json_body(inputs=[{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["1e999"] * 4}]), "strings"),
        (_json_body(inputs=[{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1e39, 0, 0, 0]}]), "finite"),
        (_json_body(parameters={"min_accuracy": 1.5}), "min_accuracy"),
        (_json_body(parameters={"latency_slo_ms": -1}), "latency_slo_ms"),
        (_json_body(parameters={"latency_slo_ms": "fast"}), "latency_slo_ms"),
        (_json_body(outputs=[{"name": "logits"}]), "unknown output"),
    ],
)
def test_malformed_requests_are_400_naming_the_field(body: bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_infer(body, None, input_shape=(4,))
    assert err.value.status == 400
    assert fragment in err.value.message


def test_binary_size_must_match_the_shape() -> None:
    x = np.zeros((2, 4), np.float32)
    body, hlen = encode_request(x, {})
    with pytest.raises(ProtocolError, match="binary_data_size"):
        parse_infer(body[:-4], str(hlen), input_shape=(4,))
    with pytest.raises(ProtocolError, match=HEADER_LEN):
        parse_infer(body, str(len(body) + 1), input_shape=(4,))
