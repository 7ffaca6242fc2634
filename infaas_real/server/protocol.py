"""KServe v2 (Open Inference Protocol) request parsing and response encoding.

Only what this server serves: one FP32 input ``[batch, features]`` and one FP32 output
``[batch, classes]``. Both the JSON tensor form and the *binary tensor data* extension
(the ``Inference-Header-Content-Length`` header: a JSON header of that many bytes followed
by raw little-endian tensors — what ``tritonclient.http`` sends by default) are accepted,
and the response uses binary output when the request asks for it.

Every malformed request raises :class:`ProtocolError` with the HTTP status to answer
(400 bad request, 413 too large) and a message naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from infaas_real.server import jsonfast

INPUT_NAME = "input"
OUTPUT_NAME = "output"
HEADER_LEN = "inference-header-content-length"



class ProtocolError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class InferRequest:
    request_id: str | None
    x: np.ndarray  # float32 [rows, features]
    min_accuracy: float
    latency_slo_ms: float
    app: str | None
    binary_output: bool


def _bad(msg: str) -> ProtocolError:
    return ProtocolError(400, msg)


def _number(params: dict[str, Any], key: str, default: float) -> float:
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(f"parameters.{key}: must be a number, got {v!r}")
    return float(v)


def parse_infer(body: bytes, header_len: str | None, features: int) -> InferRequest:
    """Parse an infer request body; ``features`` is the input's feature count."""
    if header_len is not None:
        try:
            n = int(header_len)
        except ValueError:
            raise _bad(f"{HEADER_LEN}: not an integer: {header_len!r}") from None
        if not 0 < n <= len(body):
            raise _bad(f"{HEADER_LEN}: {n} outside the body's {len(body)} bytes")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    try:
        req = jsonfast.loads(head)
    except jsonfast.DecodeError as exc:
        raise _bad(f"malformed JSON: {exc}") from None
    if not isinstance(req, dict):
        raise _bad("the request must be a JSON object")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("parameters: must be an object")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad(f"inputs: exactly one input tensor '{INPUT_NAME}' expected")
    x = _input_tensor(inputs[0], binary, features)
    min_acc = _number(params, "min_accuracy", 0.0)
    slo = _number(params, "latency_slo_ms", math.inf)
    if not 0.0 <= min_acc <= 1.0:
        raise _bad(f"parameters.min_accuracy: must be in [0, 1], got {min_acc}")
    if not slo > 0:
        raise _bad(f"parameters.latency_slo_ms: must be > 0, got {slo}")
    app = params.get("app")
    if app is not None and not isinstance(app, str):
        raise _bad("parameters.app: must be a string")
    rid = req.get("id")
    return InferRequest(
        request_id=str(rid) if rid is not None else None,
        x=x,
        min_accuracy=min_acc,
        latency_slo_ms=slo,
        app=app,
        binary_output=_wants_binary(req, params),
    )


def _input_tensor(t: dict[str, Any], binary: memoryview, features: int) -> np.ndarray:
    name = t.get("name")
    if name != INPUT_NAME:
        raise _bad(f"inputs[0].name: expected '{INPUT_NAME}', got {name!r}")
    dtype = t.get("datatype")
    if dtype != "FP32":
        raise _bad(f"inputs[0].datatype: expected FP32, got {dtype!r}")
    shape = t.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[0] < 1
        or shape[1] != features
    ):
        raise _bad(f"inputs[0].shape: expected [batch >= 1, {features}], got {shape!r}")
    count = shape[0] * shape[1]
    tparams = t.get("parameters") or {}
    size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
    if size is not None:
        if size != count * 4 or len(binary) != size:
            raise _bad(f"inputs[0]: binary_data_size {size} does not match shape {shape} as FP32 ({count * 4} bytes, {len(binary)} sent)")
        return np.frombuffer(binary, dtype="<f4").reshape(shape)
    data = t.get("data")
    if data is None:
        raise _bad("inputs[0]: neither 'data' nor binary data given")
    try:
        x = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise _bad("inputs[0].data: not a list of numbers") from None
    if x.size != count:
        raise _bad(f"inputs[0].data: {x.size} values for shape {shape}")
    return x.reshape(shape)


def _wants_binary(req: dict[str, Any], params: dict[str, Any]) -> bool:
    outputs = req.get("outputs")
    if isinstance(outputs, list) and outputs:
        for o in outputs:
            if isinstance(o, dict) and o.get("name", OUTPUT_NAME) == OUTPUT_NAME:
                op = o.get("parameters") or {}
                return bool(isinstance(op, dict) and op.get("binary_data", False))
        raise _bad(f"outputs: unknown output; this server has '{OUTPUT_NAME}'")
    return bool(params.get("binary_data_output", False))


def encode_infer(
    model_name: str, request_id: str | None, y: np.ndarray, params: dict[str, Any], binary: bool
) -> tuple[bytes, dict[str, str]]:
    """Response body and extra headers."""
    out: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(y.shape)}
    y32 = np.ascontiguousarray(y, dtype="<f4")
    if binary:
        out["parameters"] = {"binary_data_size": y32.nbytes}
    else:
        out["data"] = y32.ravel()
    resp: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": [out], "parameters": params}
    if request_id is not None:
        resp["id"] = request_id
    head = jsonfast.dumps(resp)
    if not binary:
        return head, {"content-type": "application/json"}
    return head + y32.tobytes(), {
        "content-type": "application/octet-stream",
        HEADER_LEN: str(len(head)),
    }


def error_body(message: str, **extra: Any) -> bytes:
    return jsonfast.dumps({"error": message, **extra})


def model_metadata(name: str, features: int, classes: int, platform: str, versions: list[str]) -> bytes:
    return jsonfast.dumps(
        {
            "name": name,
            "versions": versions,
            "platform": platform,
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, features]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, classes]}],
        }
    )
