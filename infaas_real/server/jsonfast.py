"""JSON for the request path: ``orjson`` when installed (several times faster, and it
serialises numpy arrays directly), else the standard library with the same interface."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        out: bytes = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        return out

    loads = orjson.loads
    DecodeError: type[ValueError] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - exercised only without orjson

    def _default(o: Any) -> Any:
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, default=_default, separators=(",", ":")).encode()

    def loads(data: bytes | bytearray | memoryview | str) -> Any:  # type: ignore[misc]
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)

    DecodeError = json.JSONDecodeError

__all__ = ["DecodeError", "dumps", "loads"]
