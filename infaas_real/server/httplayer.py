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
- :class:`FrontGate` is admission before the application (docs/overload-and-supervision.md,
  *Front-end admission*): each request's head-arrival time goes into its ASGI scope
  (:data:`HEAD_ARRIVAL`, ``time.perf_counter`` seconds) so the inference's SLO is counted from
  it, and an inference request over an adaptive in-flight limit is answered 503 by the
  protocol itself — before a task, the application or its body — and counted once. The limit
  follows the time admitted requests spend in the server (head parsed to answer sent): when
  its mean over an interval is above ``server.admission.target_latency_ms`` the limit is
  scaled by target / mean (at most by ``decrease``), when it is below and the limit was
  reached it grows by ``increase`` (Little's law: in flight = throughput x time in server).
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
import time
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


HEAD_ARRIVAL = "infaas.head_s"
"""ASGI scope key: when the request's head began to be parsed (``time.perf_counter`` s)."""
INFER_REFUSED_ROUTE = "infer"


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    """``server.admission.*`` (configs/serve.yaml holds the defaults)."""

    adaptive: bool  # False: no limit below server.max_inflight_requests (the head time is still passed on)
    target_latency_ms: float  # mean time in the server (head -> answer) of admitted requests the limit aims at
    interval_s: float  # how often the limit is adjusted (and the loop's lag sampled)
    min_inflight: int  # the limit never goes below this
    max_inflight: int  # ... nor above this (server.max_inflight_requests)
    increase: float  # added to the limit after an interval under the target in which it was reached
    decrease: float  # over the target the limit is scaled by target / mean, but by no less than this at once


class FrontGate:
    """The adaptive in-flight limit of inference requests, applied by the HTTP protocol."""

    def __init__(self, settings: AdmissionSettings) -> None:
        self.settings = settings
        self.limit = float(settings.max_inflight)
        self.inflight = 0  # admitted inference requests not yet answered
        self.refused = 0
        self.worst_delay_ms = 0.0  # in the current interval: head parsed -> handler started
        self.worst_lag_ms = 0.0  # in the current interval: lateness of the gate's own timer
        self._answered = 0  # in the current interval: admitted requests answered ...
        self._in_server_ms = 0.0  # ... and their time in the server, summed
        self.last_delay_ms = 0.0  # the previous interval's figures (for /v2/infaas/state)
        self.last_lag_ms = 0.0
        self.last_latency_ms = 0.0
        self._reached = False
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def admit(self) -> bool:
        """Take a slot for one inference request (False: refuse it)."""
        if self._timer is None and self.settings.adaptive:
            self._arm(asyncio.get_running_loop())
        if self.inflight >= self.limit:
            self._reached = True
            self.refused += 1
            return False
        self.inflight += 1
        return True

    def started(self, head_s: float) -> None:
        """A request's handler started: its queueing delay since its head arrived."""
        d = (time.perf_counter() - head_s) * 1000.0
        if d > self.worst_delay_ms:
            self.worst_delay_ms = d

    def done(self, head_s: float) -> None:
        """An admitted request was answered (its head arrived at ``head_s``)."""
        self.inflight -= 1
        self._answered += 1
        self._in_server_ms += (time.perf_counter() - head_s) * 1000.0

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + self.settings.interval_s
        self._timer = loop.call_at(self._due, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        s = self.settings
        self.worst_lag_ms = max(self.worst_lag_ms, (loop.time() - self._due) * 1000.0)
        mean_ms = self._in_server_ms / self._answered if self._answered else 0.0
        if mean_ms > s.target_latency_ms:
            self.limit = max(float(s.min_inflight), self.limit * max(s.target_latency_ms / mean_ms, s.decrease))
        elif self._reached:
            self.limit = min(float(s.max_inflight), self.limit + s.increase)
        self.last_delay_ms, self.last_lag_ms, self.last_latency_ms = self.worst_delay_ms, self.worst_lag_ms, mean_ms
        self.worst_delay_ms = self.worst_lag_ms = self._in_server_ms = 0.0
        self._answered = 0
        self._reached = False
        self._arm(loop)

    def describe(self) -> dict[str, float]:
        return {"limit": self.limit, "inflight": self.inflight, "refused": self.refused,
                "latency_ms": self.last_latency_ms, "queue_delay_ms": self.last_delay_ms,
                "loop_lag_ms": self.last_lag_ms}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The ``server.*`` connection keys (configs/serve.yaml holds the defaults)."""

    max_connections: int
    max_connections_per_client: int
    header_timeout_s: float
    keep_alive_timeout_s: float


class HttpAccounting:
    """Counters of the HTTP layer; read at scrape time by :mod:`infaas_real.server.metrics`."""

    def __init__(self, gate: FrontGate | None = None) -> None:
        self.gate = gate  # None: no front-end admission (every request goes to the application)
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


_GATE_BODY = b'{"error":"server overloaded: too many inference requests in flight (server.admission); retry later"}'
_GATE_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                 b"\r\n%s" % (len(_GATE_BODY), _GATE_BODY))  # fmt: skip


def _is_infer(path: str) -> bool:
    return path.startswith("/v2/models/") and path.endswith("/infer")


def protocol_class(acc: HttpAccounting, limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the header timeout, connection caps and counting,
    the head-arrival time in each scope and the front gate's refusals."""
    gate = acc.gate
    perf = time.perf_counter

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
            self.scope[HEAD_ARRIVAL] = perf()  # type: ignore[literal-required]

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            scope = cycle.scope
            if gate is not None and _is_infer(scope["path"]) and not acc.draining:
                if not gate.admit():
                    self._refuse(cycle)
                    return
                scope["infaas.gated"] = True
            super()._start_asgi_task(cycle, app)

        def _refuse(self, cycle: Any) -> None:
            """The gate's 503, written by the protocol: no task, no application, the body (if
            any) is skipped by the parser; the connection stays open."""
            cycle.response_started = cycle.response_complete = True
            self.transport.write(_GATE_REFUSAL)
            acc.count(INFER_REFUSED_ROUTE, 503)
            cycle.message_event.set()
            if not cycle.keep_alive:
                self.transport.close()
            self.on_response_complete()

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
        gated = scope.get("infaas.gated", False)
        if gated:
            assert acc.gate is not None
            acc.gate.started(scope[HEAD_ARRIVAL])
        if acc.draining:
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(_DRAINING_BODY)).encode())]})  # fmt: skip
            await send({"type": "http.response.body", "body": _DRAINING_BODY})
            acc.count(route, 503)
            if gated:
                acc.gate.done(scope[HEAD_ARRIVAL])  # type: ignore[union-attr]
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
            if gated:
                assert acc.gate is not None
                acc.gate.done(scope[HEAD_ARRIVAL])


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
