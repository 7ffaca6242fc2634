"""The server's HTTP layer: connection hygiene, accounting of every request, graceful shutdown
(docs/server-hardening.md).

- :class:`HttpAccounting` counts every request the server answered, whoever answered it —
  the application, uvicorn's parser (400 for malformed HTTP), the header timeout (408), the
  shutdown drain (503) — once, by a bounded route class and the status; a client that
  disconnects before its answer is counted as 499 (nginx's "client closed request").
- :func:`protocol_class` is uvicorn's httptools protocol with a header timeout (a connection
  that has not sent a complete request head within ``server.header_timeout_s`` of connecting
  or of its previous answer is closed; 408 if it had begun one), a cap on open connections in
  all and per client address (a connection over a cap is closed at accept and counted), and
  the parser's own 400s counted. uvicorn's ``limit_concurrency`` is not used: it counts idle
  sockets, so a flood of idle connections made health, readiness and inference answer 503.
  Inference admission is the application's (``server.max_inflight_requests`` requests in
  flight), so health, readiness and metrics answer whatever the connection count.
- :class:`CountingMiddleware` wraps the ASGI application: it counts each answer, answers 503
  with ``Connection: close`` to a request that arrives while the server drains, adds
  ``Connection: close`` to every answer sent while draining, and turns an escaped exception
  into a counted 500 with a one-line body (the traceback goes to the log only).
- :class:`DrainingServer` is :class:`uvicorn.Server` with a drain phase on SIGTERM/SIGINT:
  stop accepting, answer requests on open connections with 503 + ``Connection: close`` for
  ``server.shutdown_drain_s`` (or until every connection has closed), then uvicorn's own
  shutdown (idle connections closed, in-flight requests finished within
  ``server.shutdown_timeout_s``). The gRPC server, when served, stops as the drain begins
  (new RPCs UNAVAILABLE, in-flight ones finish within ``server.shutdown_timeout_s``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("infaas_real.server")

CLIENT_CLOSED = 499
"""Status counted for a request whose client went away before it was answered."""
HTTP_LAYER = "http"
"""Route class of requests answered below the application (malformed HTTP, header timeout)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_class(path: str) -> str:
    """A bounded label for a request path (client strings never become label values)."""
    if path.startswith("/v2/models/"):
        return "infer" if path.endswith("/infer") else "model_metadata"
    if path.startswith("/v2/health/"):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path.startswith("/v2/infaas/"):
        return "infaas"
    if path in ("/v2", "/v2/openapi.json"):
        return "server_metadata"
    return "other"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The ``server.*`` connection keys (configs/serve.yaml holds the defaults)."""

    max_connections: int
    max_connections_per_client: int
    header_timeout_s: float
    keep_alive_timeout_s: float


class HttpAccounting:
    """Counters of the HTTP layer; read at scrape time by :mod:`infaas_real.server.metrics`."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}  # (route class, status) -> answers
        self.connections_refused: dict[str, int] = {}  # reason -> connections closed at accept
        self.idle_closed = 0  # connections closed by the header timeout before any request byte
        self.open_connections = 0
        self.per_client: dict[str, int] = {}  # only addresses with an open connection
        self.draining = False

    def count(self, route: str, status: int) -> None:
        key = (route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1

    def refuse(self, reason: str) -> None:
        self.connections_refused[reason] = self.connections_refused.get(reason, 0) + 1


def _plain(status: int, reason: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))  # fmt: skip


def protocol_class(acc: HttpAccounting, limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the header timeout, connection caps and counting."""

    class GuardedProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _in_head = False
        _peer: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else ""
            if acc.open_connections >= limits.max_connections:
                acc.refuse("max_connections")
                transport.close()
                return
            if acc.per_client.get(peer, 0) >= limits.max_connections_per_client:
                acc.refuse("max_connections_per_client")
                transport.close()
                return
            self._peer = peer
            acc.open_connections += 1
            acc.per_client[peer] = acc.per_client.get(peer, 0) + 1
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            peer = self._peer
            if peer is not None:
                self._peer = None
                acc.open_connections -= 1
                n = acc.per_client[peer] - 1
                if n:
                    acc.per_client[peer] = n
                else:
                    del acc.per_client[peer]
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_timeout)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self._in_head:  # a request began and its head did not complete in time
                acc.count(HTTP_LAYER, 408)
                self.transport.write(_plain(408, b"Request Timeout", b'{"error":"request head not complete '
                                            b'within server.header_timeout_s"}'))  # fmt: skip
            else:
                acc.idle_closed += 1
            self.transport.close()

        def on_message_begin(self) -> None:
            self._in_head = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._cancel_head_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                self._arm_head_timer()  # the next request's head has header_timeout_s too

        def send_400_response(self, msg: str) -> None:
            acc.count(HTTP_LAYER, 400)
            self._in_head = False
            super().send_400_response(msg)

    return GuardedProtocol


_DRAINING_BODY = b'{"error":"server shutting down: request refused, retry elsewhere"}'
_CANCELLED_BODY = b'{"error":"server shut down before the request was answered (server.shutdown_timeout_s)"}'


class CountingMiddleware:
    """Counts each answer once; refuses requests while draining; a counted 500 for a bug."""

    def __init__(self, app: ASGIApp, acc: HttpAccounting) -> None:
        self.app = app
        self.acc = acc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        acc = self.acc
        route = route_class(scope["path"])
        if acc.draining:
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(_DRAINING_BODY)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": _DRAINING_BODY})
            acc.count(route, 503)
            return
        status = 0

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if acc.draining:  # answers sent after SIGTERM end their connection
                    message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running when server.shutdown_timeout_s runs out: an
            # explicit 503 if nothing was sent yet (then the request has ended: the task, which
            # nothing awaits, finishes quietly), else the cancellation goes on
            if status != 0:
                raise
            await counted_send({"type": "http.response.start", "status": 503,
                                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                            (b"content-length", str(len(_CANCELLED_BODY)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": _CANCELLED_BODY})
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception as exc:
            log.error("request %s %s failed: %s", scope.get("method"), route, type(exc).__name__, exc_info=exc)
            if status == 0:
                body = b'{"error":"internal server error"}'
                await counted_send({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
        finally:
            acc.count(route, status or CLIENT_CLOSED)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain phase before its own graceful shutdown."""

    def __init__(self, config: uvicorn.Config, acc: HttpAccounting, drain_s: float,
                 on_shutdown: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.acc = acc
        self.drain_s = drain_s
        self.on_shutdown = on_shutdown  # called as the drain begins (the gRPC server stops beside it)

    async def shutdown(self, sockets: Any = None) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
        for server in self.servers:
            server.close()  # stop accepting; open connections stay for the drain
        self.acc.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_s
        while self.server_state.connections and loop.time() < deadline and not self.force_exit:
            await asyncio.sleep(min(0.05, self.drain_s))
        await super().shutdown(sockets)
