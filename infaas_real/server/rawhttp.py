"""A minimal HTTP/1.1 keep-alive client on raw asyncio streams, for the hardening tests and
benchmarks (tests/real/test_server_hardening.py, benchmarks/bench_server_hardening.py): it
sends exactly the bytes it is given (malformed requests included) and costs a few
microseconds per request, so one process can drive the server with many connections.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson

JSON = b"application/json"


def request_bytes(method: str, path: str, body: bytes = b"", content_type: bytes | None = JSON,
                  extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """One request with a ``content-length`` header (and ``content-type`` unless None)."""
    lines = [b"%s %s HTTP/1.1" % (method.encode(), path.encode()), b"host: 127.0.0.1"]
    if content_type is not None:
        lines.append(b"content-type: " + content_type)
    if method == "POST" or body:
        lines.append(b"content-length: %d" % len(body))
    lines.extend(k + b": " + v for k, v in extra)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """``(status, lower-cased headers, body)`` of one response with a content-length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers, body


def infer_body(min_accuracy: float, latency_slo_ms: float, item: int) -> bytes:
    """A one-row FP32 inference request of ``item`` zeros with these requirements."""
    return orjson.dumps({
        "inputs": [{"name": "input", "shape": [1, item], "datatype": "FP32", "data": [0.0] * item}],
        "parameters": {"min_accuracy": min_accuracy, "latency_slo_ms": latency_slo_ms},
    })  # fmt: skip


def unique_pair(i: int, feasible_every: int, infeasible_slo_ms: float, feasible_slo_ms: float) -> tuple[float, float]:
    """The ``i``-th distinct (min_accuracy, latency_slo_ms) pair: every ``feasible_every``-th one
    asks for a low accuracy at a loose SLO (served), the others an SLO at or below
    ``infeasible_slo_ms`` that nothing meets (answered 422 by the policy, after selection)."""
    if i % feasible_every == 0:
        return (i % 1_000_003) * 1e-8, feasible_slo_ms + i * 1e-6
    return (i % 999_983) * 1e-8, infeasible_slo_ms * (1.0 - (i + 1) * 1e-9)


async def unique_pairs_load(port: int, path: str, n: int, connections: int, item: int, feasible_every: int,
                            infeasible_slo_ms: float, feasible_slo_ms: float, start: int = 0) -> Counter[int]:
    """Send requests ``start .. start+n-1`` with distinct requirement pairs over ``connections``
    keep-alive connections; the count of each status answered."""
    statuses: Counter[int] = Counter()

    async def one(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(start + k, start + n, connections):
                acc, slo = unique_pair(i, feasible_every, infeasible_slo_ms, feasible_slo_ms)
                writer.write(request_bytes("POST", path, infer_body(acc, slo, item)))
                status, _, _ = await read_response(reader)
                statuses[status] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one(k) for k in range(connections)))
    return statuses


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` of /proc/<pid>/status)."""
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
