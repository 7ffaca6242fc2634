"""A lean asyncio KServe v2 client (HTTP/1.1 keep-alive pool, binary tensors).

The load generator must never be the bottleneck, and on a small machine it shares the
cores with the server; a general HTTP client costs several times more CPU per request than
this one. It speaks exactly what :mod:`infaas_real.server.protocol` serves: one FP32 input
sent as binary tensor data, the output asked back as binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from infaas_real.server import jsonfast
from infaas_real.server.protocol import HEADER_LEN, INPUT_NAME, OUTPUT_NAME


@dataclass(frozen=True, slots=True)
class Reply:
    status: int  # HTTP status; 0 when no answer came (connection error, client timeout)
    y: np.ndarray | None
    parameters: dict[str, Any]
    model_name: str | None
    error: str | None


def encode_request(x: np.ndarray, parameters: dict[str, Any]) -> tuple[bytes, int]:
    """Body and JSON-header length of a binary-tensor infer request."""
    x32 = np.ascontiguousarray(x, dtype="<f4")
    head = jsonfast.dumps(
        {
            "inputs": [
                {
                    "name": INPUT_NAME,
                    "shape": list(x32.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x32.nbytes},
                }
            ],
            "outputs": [{"name": OUTPUT_NAME, "parameters": {"binary_data": True}}],
            "parameters": parameters,
        }
    )
    return head + x32.tobytes(), len(head)


def decode_reply(status: int, headers: dict[str, str], body: bytes) -> Reply:
    if status != 200:
        try:
            err = jsonfast.loads(body).get("error")
        except (jsonfast.DecodeError, AttributeError):
            err = body[:200].decode(errors="replace")
        return Reply(status, None, {}, None, str(err))
    hlen = int(headers.get(HEADER_LEN, len(body)))
    resp = jsonfast.loads(body[:hlen])
    out = resp["outputs"][0]
    if hlen < len(body):
        y = np.frombuffer(body, dtype="<f4", offset=hlen).reshape(out["shape"])
    else:
        y = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    return Reply(200, y, resp.get("parameters") or {}, resp.get("model_name"), None)


class V2Client:
    """``await client.infer(model, x, parameters)`` over a pool of keep-alive connections."""

    def __init__(self, url: str, max_connections: int = 256, timeout_s: float = 60.0) -> None:
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"server.url must be http://host:port, got {url!r}")
        self.host = u.hostname
        self.port = u.port or 80
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.stale_dropped = 0  # pooled connections the server had closed, dropped unused
        self.resent = 0  # requests sent again because their pooled connection closed before any answer
        self._slots = asyncio.Semaphore(max_connections)

    def _pooled(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently used idle connection the server has not closed, if any. The
        server closes a keep-alive connection idle for ``server.keep_alive_timeout_s``; its FIN
        marks the reader at EOF, and such a connection is dropped here, not written to."""
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            self.stale_dropped += 1
            writer.close()
        return None

    async def _request(self, method: str, path: str, body: bytes = b"", extra: str = "") -> tuple[int, dict[str, str], bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-length: {len(body)}\r\n"
            f"content-type: application/octet-stream\r\n{extra}\r\n"
        ).encode()
        async with self._slots:
            conn = self._pooled()
            if conn is not None:
                try:
                    return await self._exchange(conn, head, body)
                except _Stale:  # closed by the server while idle, before it read this request: send it once on a new one
                    self.resent += 1
            conn = await asyncio.open_connection(self.host, self.port)
            try:
                return await self._exchange(conn, head, body)
            except _Stale as exc:
                raise ConnectionResetError(str(exc.__cause__ or "connection closed before any answer")) from exc

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], head: bytes, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on ``conn``. A connection that fails before the first byte of an answer
        raises :class:`_Stale` (the server closed it, idle, as this request went out: the
        race every keep-alive client has); the connection goes back to the pool only when
        the server keeps it open."""
        reader, writer = conn
        keep = False
        try:
            try:
                writer.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    writer.write(body)
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise _Stale() from exc
            status, headers, data = await asyncio.wait_for(_answer(reader), self.timeout_s)
            keep = headers.get("connection", "").lower() != "close"
            return status, headers, data
        finally:
            if keep:
                self._idle.append(conn)
            else:
                writer.close()

    async def infer(self, model: str, x: np.ndarray, parameters: dict[str, Any]) -> Reply:
        body, hlen = encode_request(x, parameters)
        try:
            status, headers, data = await self._request(
                "POST", f"/v2/models/{model}/infer", body, f"{HEADER_LEN}: {hlen}\r\n"
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            return Reply(0, None, {}, None, f"{type(exc).__name__}: {exc}")
        return decode_reply(status, headers, data)

    async def get_json(self, path: str) -> tuple[int, Any]:
        status, _, data = await self._request("GET", path)
        try:
            return status, jsonfast.loads(data)
        except jsonfast.DecodeError:
            return status, None

    async def close(self) -> None:
        for _, w in self._idle:
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
        self._idle.clear()


class _Stale(Exception):
    """A connection closed before the first byte of an answer to the request sent on it."""


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """The answer on ``reader``; :class:`_Stale` if the connection ends (or is reset) before
    its first byte."""
    try:
        first = await reader.read(1)
    except ConnectionResetError as exc:
        raise _Stale() from exc
    if not first:
        raise _Stale()
    return await _read_response(reader, first)


async def _read_response(reader: asyncio.StreamReader, first: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    raw = first + await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    body = await reader.readexactly(n) if n else b""
    return status, headers, body


def call_json(url: str, method: str = "GET", body: Any = None, timeout_s: float = 60.0) -> tuple[int, Any]:
    """One blocking JSON request (the CLIs' and benchmarks' calls to the server's management
    endpoints): ``(status, decoded answer)``; an error answer that is not JSON comes back as
    ``{"error": <its first 200 characters>}``. ``body`` is encoded as JSON unless it is bytes
    already. A server that cannot be reached raises ``OSError``."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"error": raw.decode(errors="replace")[:200]}
