"""The ASGI application: KServe v2 endpoints over the live state (DESIGN.md "Real server protocol").

``{name}`` in ``/v2/models/{name}/...`` may be a task (model-less: the policy selects), a
model architecture (the policy picks its variant) or an exact variant. Requirements travel
in the request's ``parameters`` (``min_accuracy``, ``latency_slo_ms``, optionally ``app``).

Status codes: 200 answered; 400 malformed request (JSON, shape, datatype, parameters);
404 unknown name; 413 body over ``max_request_bytes``; 422 no variant can satisfy the
requirements (with the policy's reason and suggestion; a rejection of kind "no capacity"
is 503, by :data:`infaas_core.control.outcomes.HTTP_STATUS`); 429 the chosen instance's queue is
full; 500 the runner failed; 503 the query could not be served (replica died twice, load
refused, server-side timeout, or more than ``max_inflight_requests`` in flight — health and
metrics endpoints are not counted, so they answer during a flood).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from infaas_core.actions import Reject, RejectKind
from infaas_core.catalog import Catalog
from infaas_core.control.outcomes import HTTP_STATUS
from infaas_core.errors import BackendError, ConfigError, NoFeasibleVariant
from infaas_core.model import ClusterSpec, Requirements
from infaas_core.policies.base import Policy
from infaas_real.executor import ExecutorSettings, InferenceFailed, Overloaded, WorkerDied
from infaas_real.server import jsonfast, openapi, protocol
from infaas_real.server.httplayer import CLIENT_CLOSED, ASGIApp, CountingMiddleware, HttpAccounting
from infaas_real.server.metrics import ServerMetrics
from infaas_real.server.state import LiveState, Refused, StateSettings
from infaas_real.server.tasks import TaskIO, task_io

_JSON = "application/json"
MODEL_VERSION = "1"
ACCEPTED_CONTENT_TYPES = frozenset({"application/json", "application/octet-stream"})
"""An infer body must say it is JSON (or binary tensors); a browser's "simple" cross-origin
types (text/plain, forms) are refused with 415. No Content-Type at all is accepted (curl, some
v2 clients)."""
_PATH = re.compile(r"(?:/[\w.+-]+){2,}/([\w.+-]+)")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """``server.*`` of configs/serve.yaml (the YAML holds every default)."""

    host: str
    port: int
    max_request_bytes: int
    request_timeout_s: float
    max_inflight_requests: int
    max_connections: int
    max_connections_per_client: int
    header_timeout_s: float
    keep_alive_timeout_s: float
    body_timeout_s: float
    shutdown_drain_s: float
    shutdown_timeout_s: float
    final_metrics_path: str | None  # the final /metrics text is written here on exit


@dataclass(frozen=True, slots=True)
class _Target:
    form: str  # task | model | variant
    io: TaskIO


class InferenceServer:
    """Holds the live state and answers the endpoints."""

    def __init__(
        self,
        catalog: Catalog,
        cluster: ClusterSpec,
        policy: Policy,
        settings: ServerSettings,
        state_settings: StateSettings,
        executor: ExecutorSettings,
    ) -> None:
        self.settings = settings
        t0 = time.perf_counter()
        self._clock = lambda: time.perf_counter() - t0
        self._args = (catalog, cluster, policy, state_settings, executor)
        self.state: LiveState | None = None
        self.metrics: ServerMetrics | None = None
        self.targets: dict[str, _Target] = {}
        self._inflight = 0
        self.http = HttpAccounting()
        ios = {task: task_io(task) for task in catalog.tasks}  # shapes from each task's zoo
        for v in catalog:
            io = ios[v.task]
            self.targets.setdefault(v.task, _Target("task", io))
            self.targets.setdefault(v.model, _Target("model", io))
            self.targets[v.name] = _Target("variant", io)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        catalog, cluster, policy, state_settings, executor = self._args
        self.state = LiveState(catalog, cluster, policy, state_settings, executor, self._clock)
        self.metrics = ServerMetrics(self.state, self.http)
        await self.state.start()
        # Long-lived objects (catalog, policy, modules) leave the collector's generations so a
        # full collection never walks them on the request path.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if self.settings.final_metrics_path:  # every request is answered by now
                with open(self.settings.final_metrics_path, "wb") as f:
                    f.write(self.metrics.render())
            await self.state.close()

    # -- endpoints -----------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return Response(b'{"live":true}', media_type=_JSON)

    async def ready(self, request: Request) -> Response:
        ok = self.state is not None and self.state.ready
        return Response(jsonfast.dumps({"ready": ok}), status_code=200 if ok else 503, media_type=_JSON)

    async def server_metadata(self, request: Request) -> Response:
        return Response(
            jsonfast.dumps({"name": "infaas-py", "version": "0.1.0", "extensions": ["binary_tensor_data", "model_less"]}),
            media_type=_JSON,
        )

    def _target(self, request: Request) -> _Target | Response:
        """The named target, or the 404 answer (unknown name or version)."""
        name = request.path_params["name"]
        t = self.targets.get(name)
        if t is None:
            return _error(404, f"unknown task, model or variant '{name}'")
        version = request.path_params.get("version")
        if version is not None and version != MODEL_VERSION:
            return _error(404, f"'{name}' has no version '{version}' (versions: {MODEL_VERSION})")
        return t

    async def model_metadata(self, request: Request) -> Response:
        name = request.path_params["name"]
        t = self._target(request)
        if isinstance(t, Response):
            return t
        return Response(
            protocol.model_metadata(name, t.io.input_shape, t.io.classes, f"infaas-{t.form}", [MODEL_VERSION], uint8=True),
            media_type=_JSON,
        )

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        t = self._target(request)
        if isinstance(t, Response):
            return t
        assert self.state is not None
        ok = t.form != "variant" or any(i.state == "ready" for i in self.state.instances_of(name))
        return Response(jsonfast.dumps({"name": name, "ready": ok}), status_code=200 if ok else 400, media_type=_JSON)

    async def state_snapshot(self, request: Request) -> Response:
        assert self.state is not None
        return Response(jsonfast.dumps(self.state.describe()), media_type=_JSON)

    async def actions(self, request: Request) -> Response:
        """The control layer's decision trace: every action applied so far, refused ones too
        (``Cluster.decision_trace``; server clock seconds), for ``infaas-real validate``."""
        assert self.state is not None
        cols = ["time_s", "kind", "variant", "worker", "replicas", "refused"]
        return Response(jsonfast.dumps({"now_s": self.state.now_s, "columns": cols,
                                        "actions": [list(a) for a in self.state.decision_trace]}), media_type=_JSON)

    async def openapi(self, request: Request) -> Response:
        return Response(openapi.document_json(), media_type=_JSON)

    async def prometheus(self, request: Request) -> Response:
        assert self.metrics is not None
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def infer(self, request: Request) -> Response:
        # Inference requests beyond the in-flight limit are refused at once (503), so the
        # health and metrics endpoints keep answering under a flood.
        if self._inflight >= self.settings.max_inflight_requests:
            return self._count(_error(503, f"server busy: {self._inflight} requests in flight"), "")
        self._inflight += 1
        try:
            return await self._infer(request)
        finally:
            self._inflight -= 1

    async def _infer(self, request: Request) -> Response:
        state, metrics = self.state, self.metrics
        assert state is not None and metrics is not None
        t0 = time.perf_counter()
        name = request.path_params["name"]
        t = self._target(request)
        if isinstance(t, Response):
            return self._count(t, "")
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype and ctype not in ACCEPTED_CONTENT_TYPES:
            return self._count(_error(415, f"content-type '{ctype}' is not served; send application/json "
                                           "(or application/octet-stream with the binary extension)"), "")
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):  # a slow body holds an in-flight slot
                body = await _read_body(request, self.settings.max_request_bytes)
            r = protocol.parse_infer(body, request.headers.get(protocol.HEADER_LEN), t.io.input_shape,
                                     t.io.uint8_to_input)
            req = Requirements(
                **{t.form: name}, min_accuracy=r.min_accuracy, latency_slo_ms=r.latency_slo_ms
            )
        except protocol.ProtocolError as exc:
            return self._count(_error(exc.status, exc.message), "")
        except ClientDisconnect:  # the client left mid-body: nothing to answer, but counted
            return self._count(_error(CLIENT_CLOSED, "client disconnected before the body was complete"), "")
        except TimeoutError:
            return self._count(_error(408, f"request body not complete within server.body_timeout_s "
                                           f"({self.settings.body_timeout_s:g} s)"), "")
        except ConfigError as exc:
            return self._count(_error(400, str(exc)), "")
        try:
            decision = state.decide(req, r.app, r.x.shape[0])
        except NoFeasibleVariant as exc:
            decision = Reject(exc.reason, exc.suggestion)
        if isinstance(decision, Reject):
            # the kind, never the message, decides: infeasible 422, no capacity now 503
            status = HTTP_STATUS[decision.kind]
            if decision.kind is RejectKind.NO_CAPACITY:
                metrics.dropped.labels("policy_no_capacity").inc()
            return self._count(_error(status, decision.reason, suggestion=decision.suggestion), "")
        try:
            inst, futures = state.submit(decision, r.x, r.latency_slo_ms)
        except Overloaded as exc:
            return self._count(_error(429, str(exc)), "")
        except Refused as exc:
            metrics.dropped.labels(exc.reason).inc()
            return self._count(_error(503, str(exc)), "")
        except BackendError as exc:
            return self._count(_error(503, str(exc)), "")
        variant = inst.variant.name
        try:
            if len(futures) == 1:
                served = [await asyncio.wait_for(futures[0], self.settings.request_timeout_s)]
            else:
                served = list(
                    await asyncio.wait_for(asyncio.gather(*futures), self.settings.request_timeout_s)
                )
        except TimeoutError:
            return self._count(_error(503, f"{variant}: not served within {self.settings.request_timeout_s} s"), variant)
        except (WorkerDied, Overloaded) as exc:
            return self._count(_error(503, str(exc)), variant)
        except InferenceFailed as exc:
            return self._count(_error(500, str(exc)), variant)
        except BackendError as exc:
            return self._count(_error(503, str(exc)), variant)
        y = served[0].y if len(served) == 1 else np.concatenate([s.y for s in served])
        first = served[0]
        params: dict[str, Any] = {
            "variant": variant,
            "worker": inst.worker_id,
            "hardware": inst.variant.hardware,
            "queue_ms": max(s.queue_ms for s in served),
            "infer_ms": sum(s.infer_ms for s in served),
            "batch": first.batch,
        }
        body_out, headers = protocol.encode_infer(variant, r.request_id, y, params, r.binary_output)
        metrics.queue.labels(variant).observe(first.queue_ms / 1000.0)
        metrics.latency.labels(variant).observe(time.perf_counter() - t0)
        return self._count(Response(body_out, headers=headers), variant)

    def _count(self, resp: Response, variant: str) -> Response:
        assert self.metrics is not None
        self.metrics.requests.labels(str(resp.status_code), variant).inc()
        return resp

    def build(self) -> ASGIApp:
        """The ASGI application: the routes inside the HTTP layer's accounting."""
        return CountingMiddleware(self.routes(), self.http)  # type: ignore[arg-type]

    def routes(self) -> Starlette:
        infer_routes = [
            Route("/v2/models/{name}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/infer", self.infer, methods=["POST"]),
        ]
        return Starlette(
            routes=[
                *infer_routes,
                Route("/v2/health/live", self.live),
                Route("/v2/health/ready", self.ready),
                Route("/v2", self.server_metadata),
                Route("/v2/models/{name}", self.model_metadata),
                Route("/v2/models/{name}/versions/{version}", self.model_metadata),
                Route("/v2/models/{name}/ready", self.model_ready),
                Route("/v2/models/{name}/versions/{version}/ready", self.model_ready),
                Route("/v2/infaas/state", self.state_snapshot),
                Route("/v2/infaas/actions", self.actions),
                Route(openapi.PATH, self.openapi),
                Route("/metrics", self.prometheus),
            ],
            lifespan=self.lifespan,
            exception_handlers={HTTPException: _http_exception},
        )


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such route 404, wrong method 405) as one-line JSON errors."""
    assert isinstance(exc, HTTPException)
    what = {404: f"no such endpoint (the endpoints: GET {openapi.PATH})",
            405: f"method {request.method} not allowed here (the endpoints: GET {openapi.PATH})"}
    resp = _error(exc.status_code, what.get(exc.status_code, str(exc.detail)))
    resp.headers.update(exc.headers or {})  # 405 carries Allow
    return resp


def _error(status: int, message: str, **extra: Any) -> Response:
    """An error answer: one line, with any absolute file path reduced to its file name."""
    extra = {k: v for k, v in extra.items() if v is not None}
    line = _PATH.sub(r"\1", " ".join(message.split()))
    return Response(protocol.error_body(line, **extra), status_code=status, media_type=_JSON)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise protocol.ProtocolError(400, "content-length: not a number")
        if int(declared) > limit:
            raise protocol.ProtocolError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise protocol.ProtocolError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
