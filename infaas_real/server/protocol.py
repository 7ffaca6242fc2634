"""KServe v2 (Open Inference Protocol) request parsing and response encoding.

Only what this server serves: one input ``[batch, *input_shape]`` — FP32 as the task's
models take it, or UINT8 raw values that the task's zoo turns into that (ImageNet pixels are
normalised as torchvision expects) — and one FP32 output ``[batch, classes]``; the shapes come
from the task's zoo (:mod:`infaas_real.server.tasks`). Both the JSON tensor form and the *binary tensor data* extension
(the ``Inference-Header-Content-Length`` header: a JSON header of that many bytes followed
by raw little-endian tensors — what ``tritonclient.http`` sends by default) are accepted,
and the response uses binary output when the request asks for it.

Every malformed request raises :class:`ProtocolError` with the HTTP status to answer
(400 bad request, 413 too large) and a message naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    x: np.ndarray  # float32 [rows, *input_shape]
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


Uint8ToInput = Callable[[np.ndarray], np.ndarray]
_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}


def parse_infer(body: bytes, header_len: str | None, input_shape: tuple[int, ...],
                uint8_to_input: Uint8ToInput | None = None) -> InferRequest:
    """Parse an infer request body; ``input_shape`` is one item's input shape. UINT8 input
    is accepted when ``uint8_to_input`` is given (it makes the float32 input of the models)."""
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
    x = _input_tensor(inputs[0], binary, input_shape, uint8_to_input)
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
    if rid is not None and not isinstance(rid, str):
        raise _bad("id: must be a string")
    return InferRequest(
        request_id=rid,
        x=x,
        min_accuracy=min_acc,
        latency_slo_ms=slo,
        app=app,
        binary_output=_wants_binary(req, params),
    )


def _input_tensor(t: dict[str, Any], binary: memoryview, item: tuple[int, ...],
                  uint8_to_input: Uint8ToInput | None) -> np.ndarray:
    name = t.get("name")
    if name != INPUT_NAME:
        raise _bad(f"inputs[0].name: expected '{INPUT_NAME}', got {name!r}")
    dtype = t.get("datatype")
    allowed = ("FP32", "UINT8") if uint8_to_input is not None else ("FP32",)
    if dtype not in allowed:
        raise _bad(f"inputs[0].datatype: expected {' or '.join(allowed)}, got {dtype!r}")
    np_dtype = _DTYPES[str(dtype)]
    shape = t.get("shape")
    want = f"[batch >= 1, {', '.join(map(str, item))}]"
    if (
        not isinstance(shape, list)
        or len(shape) != 1 + len(item)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[0] < 1
        or tuple(shape[1:]) != item
    ):
        raise _bad(f"inputs[0].shape: expected {want}, got {shape!r}")
    count = int(np.prod(shape))
    tparams = t.get("parameters") or {}
    size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
    if size is not None:
        nbytes = count * np_dtype.itemsize
        if size != nbytes or len(binary) != size:
            raise _bad(f"inputs[0]: binary_data_size {size} does not match shape {shape} as {dtype} "
                       f"({nbytes} bytes, {len(binary)} sent)")
        x = np.frombuffer(binary, dtype=np_dtype).reshape(shape)
    else:
        data = t.get("data")
        if data is None:
            raise _bad("inputs[0]: neither 'data' nor binary data given")
        try:
            raw: np.ndarray = np.asarray(data)  # no dtype: strings, null and booleans stay visible
        except (ValueError, TypeError):
            raise _bad("inputs[0].data: not a list of numbers") from None
        if raw.dtype.kind not in "iuf":
            raise _bad(f"inputs[0].data: every value must be a JSON number (found {_kind_name(raw)})")
        if raw.size != count:
            raise _bad(f"inputs[0].data: {raw.size} values for shape {shape}")
        if dtype == "UINT8":
            if not ((raw >= 0) & (raw <= 255) & (raw == np.floor(raw))).all():
                raise _bad("inputs[0].data: UINT8 values must be integers in 0..255")
            raw = raw.astype(np.uint8)
        x = raw.reshape(shape)
    if dtype == "UINT8":
        assert uint8_to_input is not None
        return np.ascontiguousarray(uint8_to_input(x), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32, copy=False)
    if not np.isfinite(x32).all():
        raise _bad("inputs[0]: FP32 values must be finite and within float32 range")
    return x32


def _kind_name(a: np.ndarray) -> str:
    return {"b": "true/false", "U": "strings", "S": "strings", "O": "null or mixed values"}.get(a.dtype.kind, a.dtype.name)


def _wants_binary(req: dict[str, Any], params: dict[str, Any]) -> bool:
    outputs = req.get("outputs")
    if isinstance(outputs, list) and outputs:
        for o in outputs:
            if isinstance(o, dict) and o.get("name", OUTPUT_NAME) == OUTPUT_NAME:
                op = o.get("parameters") or {}
                if not isinstance(op, dict):
                    raise _bad("outputs[].parameters: must be an object")
                return _flag(op, "binary_data", "outputs[].parameters")
        raise _bad(f"outputs: unknown output; this server has '{OUTPUT_NAME}'")
    if outputs is not None and not isinstance(outputs, list):
        raise _bad("outputs: must be a list")
    return _flag(params, "binary_data_output", "parameters")


def _flag(d: dict[str, Any], key: str, where: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise _bad(f"{where}.{key}: must be true or false, got {v!r}")
    return v


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


def model_metadata(name: str, input_shape: tuple[int, ...], classes: int, platform: str, versions: list[str],
                   uint8: bool = False) -> bytes:
    inputs: list[dict[str, Any]] = [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *input_shape]}]
    if uint8:  # the same input may come as raw UINT8 values (normalised by the server)
        inputs[0]["parameters"] = {"datatypes": ["FP32", "UINT8"]}
    return jsonfast.dumps(
        {
            "name": name,
            "versions": versions,
            "platform": platform,
            "inputs": inputs,
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, classes]}],
        }
    )
