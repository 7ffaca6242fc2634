"""The wire format between the server process and its worker processes.

One ``multiprocessing`` pipe per replica carries length-delimited messages
(``Connection.send_bytes``): a fixed ``struct`` header followed by raw little-endian
float32 rows. Nothing is pickled on the hot path, so a batch costs one copy each way.

Parent -> worker: ``BATCH`` (batch id, rows, values per row, data; a row of an image task is
its ``3 x 224 x 224`` values, which the worker shapes back into its runner's item shape) and
``STOP`` and ``PING`` (the supervisor's heartbeat to an idle replica).
Worker -> parent: ``READY`` (JSON facts about the loaded runner), ``RESULT`` (batch id,
rows, cols, inference time and rows of the run it was part of, data), ``FAILED`` (batch id,
the runner's error text) and ``PONG`` (the answer to a ``PING``, sent as soon as it is read).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

BATCH, STOP, READY, RESULT, FAILED, PING, PONG = 1, 2, 3, 4, 5, 6, 7

_BATCH = struct.Struct("<BIII")  # kind, batch id, rows, cols
_RESULT = struct.Struct("<BIIIdI")  # kind, batch id, rows, cols, infer_ms, rows of the run it was part of
_FAILED = struct.Struct("<BI")  # kind, batch id
_KIND = struct.Struct("<B")

F32 = np.dtype("<f4")


def encode_batch(batch_id: int, x: np.ndarray) -> bytes:
    rows = x.shape[0]
    cols = x.size // rows if rows else 0
    return _BATCH.pack(BATCH, batch_id, rows, cols) + np.ascontiguousarray(x, dtype=F32).tobytes()


def encode_stop() -> bytes:
    return _KIND.pack(STOP)


def encode_ping() -> bytes:
    return _KIND.pack(PING)


def encode_pong() -> bytes:
    return _KIND.pack(PONG)


def encode_ready(info: dict[str, Any]) -> bytes:
    return _KIND.pack(READY) + json.dumps(info).encode()


def encode_result(batch_id: int, y: np.ndarray, infer_ms: float, run_rows: int) -> bytes:
    y2 = np.ascontiguousarray(y, dtype=F32).reshape(y.shape[0], -1)
    rows, cols = y2.shape
    return _RESULT.pack(RESULT, batch_id, rows, cols, infer_ms, run_rows) + y2.tobytes()


def encode_failed(batch_id: int, reason: str) -> bytes:
    return _FAILED.pack(FAILED, batch_id) + reason.encode(errors="replace")


def kind_of(msg: bytes) -> int:
    return msg[0]


def decode_batch(msg: bytes) -> tuple[int, np.ndarray]:
    _, batch_id, rows, cols = _BATCH.unpack_from(msg)
    x = np.frombuffer(msg, dtype=F32, offset=_BATCH.size, count=rows * cols).reshape(rows, cols)
    return batch_id, x


@dataclass(frozen=True, slots=True)
class Result:
    batch_id: int
    y: np.ndarray
    infer_ms: float  # of the worker's run this batch was part of
    run_rows: int  # rows of that run (this batch's and those joined with it)


def decode_result(msg: bytes) -> Result:
    _, batch_id, rows, cols, infer_ms, run_rows = _RESULT.unpack_from(msg)
    y = np.frombuffer(msg, dtype=F32, offset=_RESULT.size, count=rows * cols).reshape(rows, cols)
    return Result(batch_id, y, infer_ms, run_rows)


def decode_failed(msg: bytes) -> tuple[int, str]:
    _, batch_id = _FAILED.unpack_from(msg)
    return batch_id, msg[_FAILED.size :].decode(errors="replace")


def decode_ready(msg: bytes) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(msg[_KIND.size :].decode())
    return info
