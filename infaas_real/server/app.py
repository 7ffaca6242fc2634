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

The same inference path serves KServe v2 over gRPC (:mod:`infaas_real.server.grpc_server`,
``server.grpc_port``): :meth:`InferenceServer.run_inference` resolves the name, checks the
request with :mod:`~infaas_real.server.protocol`'s rules, asks the policy, submits and waits;
it raises :class:`InferError` with the HTTP status above, which each transport answers in its
own way. gRPC maps the statuses to codes (:data:`GRPC_CODE`):

====== =====================  ==========================================================
HTTP   gRPC                   meaning
====== =====================  ==========================================================
400    INVALID_ARGUMENT       malformed request (shape, datatype, parameters, non-finite)
404    NOT_FOUND              unknown task, model, variant or version
408    DEADLINE_EXCEEDED      (HTTP only: body not complete in time)
413    RESOURCE_EXHAUSTED     request over ``max_request_bytes``
415    INVALID_ARGUMENT       (HTTP only: content type not served)
422    FAILED_PRECONDITION    no variant can satisfy the requirements (reason, suggestion)
429    RESOURCE_EXHAUSTED     the chosen instance's queue is full
499    CANCELLED              the client left first
500    INTERNAL               the runner failed
503    UNAVAILABLE            not served now (capacity, replica died, timeout, busy)
====== =====================  ==========================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
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
from infaas_core.model import ClusterSpec, Requirements, Variant
from infaas_core.policies.base import Policy
from infaas_real.executor import ExecutorSettings, InferenceFailed, Overloaded, WorkerDied
from infaas_real.registration.http import registration_routes
from infaas_real.registration.settings import RegistrationSettings
from infaas_real.registration.spec import Manifest
from infaas_real.server import jsonfast, openapi, protocol
from infaas_real.server.httplayer import (
    CLIENT_CLOSED,
    HEAD_ARRIVAL,
    AdmissionSettings,
    ASGIApp,
    CountingMiddleware,
    FrontGate,
    HttpAccounting,
)
from infaas_real.server.metrics import GrpcAccounting, ServerMetrics
from infaas_real.server.offline import OfflineJobs, OfflineSettings
from infaas_real.server.state import LiveState, Refused, StateSettings
from infaas_real.server.tasks import TaskIO, task_io

_JSON = "application/json"
MODEL_VERSION = "1"
ACCEPTED_CONTENT_TYPES = frozenset({"application/json", "application/octet-stream"})
"""An infer body must say it is JSON (or binary tensors); a browser's "simple" cross-origin
types (text/plain, forms) are refused with 415. No Content-Type at all is accepted (curl, some
v2 clients)."""
_PATH = re.compile(r"(?:/[\w.+-]+){2,}/([\w.+-]+)")
SERVER_NAME = "infaas-py"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ("binary_tensor_data", "model_less")
GRPC_CODE: dict[int, str] = {
    400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT", 422: "FAILED_PRECONDITION", 429: "RESOURCE_EXHAUSTED", CLIENT_CLOSED: "CANCELLED",
    500: "INTERNAL", 503: "UNAVAILABLE",
}
"""The gRPC status code (``grpc.StatusCode`` member name) answering each HTTP status of an
inference (the table in the module docstring; any other status is INTERNAL)."""


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
    grpc_port: int | None  # KServe v2 over gRPC on host:grpc_port beside HTTP; None = not served
    admission: AdmissionSettings  # the HTTP layer's adaptive in-flight limit (server.admission.*)
    offline: OfflineSettings  # offline jobs (POST /v2/infaas/offline, infaas_real.server.offline)
    registration: RegistrationSettings  # model registration (POST /v2/infaas/models, docs/registration.md)


@dataclass(frozen=True, slots=True)
class _Target:
    form: str  # task | model | variant
    io: TaskIO


class InferError(Exception):
    """An inference request not answered with outputs: the HTTP status (each transport maps
    it, gRPC by :data:`GRPC_CODE`), a one-line message (file paths reduced to their names),
    the policy's suggestion if any, and the variant it had been routed to ("" before)."""

    def __init__(self, status: int, message: str, suggestion: str | None = None, variant: str = "") -> None:
        line = _PATH.sub(r"\1", " ".join(message.split()))
        super().__init__(line)
        self.status = status
        self.message = line
        self.suggestion = suggestion
        self.variant = variant


@dataclass(frozen=True, slots=True)
class Served:
    """An answered inference: the parsed request, the serving variant, the outputs, and the
    answer's ``parameters`` (variant, worker, hardware, queue_ms, infer_ms, batch)."""

    request: protocol.InferRequest
    variant: str
    y: np.ndarray
    params: dict[str, Any]


ParseRequest = Callable[[TaskIO], Awaitable[protocol.InferRequest]]
"""A transport's reading of one inference request for the named target's task: raises
:class:`~infaas_real.server.protocol.ProtocolError` or :class:`InferError`."""


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
        mechanism: Any = None,  # LiveState's mechanism factory (None: this machine's slots; cluster=ray: Ray's)
    ) -> None:
        self.settings = settings
        self._mechanism = mechanism
        t0 = time.perf_counter()
        self._clock = lambda: time.perf_counter() - t0
        self._args = (catalog, cluster, policy, state_settings, executor)
        self.state: LiveState | None = None
        self.metrics: ServerMetrics | None = None
        self.targets: dict[str, _Target] = {}
        self._inflight = 0
        self.http = HttpAccounting(FrontGate(settings.admission))
        self.grpc_acc = GrpcAccounting()
        self.grpc: Any = None  # the grpc.aio server while it runs (grpc_server.GrpcFrontEnd)
        self._grpc_stop: asyncio.Task[None] | None = None
        ios = {task: task_io(task) for task in catalog.tasks}  # shapes from each task's zoo
        for v in catalog:
            io = ios[v.task]
            self.targets.setdefault(v.task, _Target("task", io))
            self.targets.setdefault(v.model, _Target("model", io))
            self.targets[v.name] = _Target("variant", io)
        self.offline = OfflineJobs(settings.offline, ios)
        from infaas_real.registration.manager import Registrar

        self.registrar = Registrar(settings.registration, self) if settings.registration.enabled else None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        catalog, cluster, policy, state_settings, executor = self._args
        self.state = LiveState(catalog, cluster, policy, state_settings, executor, self._clock, mechanism=self._mechanism)
        self.state.front_gate = self.http.gate
        self.metrics = ServerMetrics(self.state, self.http, self.grpc_acc)
        await self.state.start()
        await self.offline.start(self.state)
        self.metrics.registry.register(self.offline.collector())
        if self.settings.grpc_port is not None:
            try:
                from infaas_real.server import grpc_server  # grpcio only where gRPC is served
            except ImportError as exc:
                print(f"infaas-real serve: warning: gRPC not served: {exc} (install the real extra: "
                      "tritonclient[grpc]); HTTP serves alone", flush=True)
            else:
                self.grpc = await grpc_server.start(self, self.settings.host, self.settings.grpc_port)
        # Long-lived objects (catalog, policy, modules) leave the collector's generations so a
        # full collection never walks them on the request path.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            self.begin_grpc_shutdown()
            if self._grpc_stop is not None:
                await self._grpc_stop  # in-flight RPCs finish (server.shutdown_timeout_s at most)
            if self.settings.final_metrics_path:  # every request is answered by now
                with open(self.settings.final_metrics_path, "wb") as f:
                    f.write(self.metrics.render())
            await self.offline.close()
            if self.registrar is not None:
                self.registrar.close()
            await self.state.close()

    def begin_grpc_shutdown(self) -> None:
        """Stop the gRPC server (new RPCs UNAVAILABLE, in-flight ones get
        ``server.shutdown_timeout_s``); called at SIGTERM beside the HTTP drain, awaited at exit."""
        if self.grpc is not None and self._grpc_stop is None:
            self._grpc_stop = asyncio.ensure_future(self.grpc.stop(self.settings.shutdown_timeout_s))

    # -- registered models (infaas_real.registration, docs/registration.md) ---------------
    def name_in_use(self, name: str) -> str | None:
        """Why ``name`` cannot name a registered model (it is a task, model or variant here)."""
        t = self.targets.get(name)
        return None if t is None else f"a {t.form} of the catalog"

    def task_shape(self, task: str) -> tuple[tuple[int, ...], int] | None:
        """(input shape, classes) of ``task`` if the catalog or a zoo serves it, else None."""
        from infaas_real.registration.spec import RegistrationError
        from infaas_real.zoo import TASK_TO_ZOO

        t = self.targets.get(task)
        if t is not None and t.form != "task":
            raise RegistrationError(409, f"task name '{task}' is already a {t.form} of the catalog")
        if t is None and task not in TASK_TO_ZOO:
            return None
        io = t.io if t is not None else task_io(task)
        return io.input_shape, io.classes

    def add_registered(self, variants: list[Variant], manifest: Manifest, directory: Path) -> None:
        """Put a registered model's variants into the live catalog and the endpoints' names
        at once (raises, changing nothing, if the catalog refuses them)."""
        from infaas_real.registration.runtime import FACTORY

        assert self.state is not None
        known = self.targets.get(manifest.task)
        io = known.io if known is not None else TaskIO(manifest.task, tuple(manifest.input_shape), manifest.classes,
                                                          _as_float32)  # fmt: skip
        executor = self._args[4]
        runner = replace(executor.runner, factory=FACTORY, cache_dir=str(directory))
        self.state.extend_catalog(variants, replace(executor, runner=runner))
        for v in variants:
            self.targets.setdefault(v.task, _Target("task", io))
            self.targets.setdefault(v.model, _Target("model", io))
            self.targets[v.name] = _Target("variant", io)

    # -- transport-agnostic --------------------------------------------------------------
    def lookup(self, name: str, version: str | None) -> _Target:
        """The named target; :class:`InferError` 404 for an unknown name or version ("" or
        None: the only version)."""
        t = self.targets.get(name)
        if t is None:
            raise InferError(404, f"unknown task, model or variant '{name}'")
        if version and version != MODEL_VERSION:
            raise InferError(404, f"'{name}' has no version '{version}' (versions: {MODEL_VERSION})")
        return t

    def metadata_of(self, name: str, t: _Target) -> bytes:
        """The v2 model metadata of a target (JSON; gRPC converts it)."""
        return protocol.model_metadata(name, t.io.input_shape, t.io.classes, f"infaas-{t.form}", [MODEL_VERSION],
                                       uint8=True)

    def ready_of(self, name: str, t: _Target) -> bool:
        """A task or model is ready when it is known; a variant when an instance of it is ready."""
        assert self.state is not None
        return t.form != "variant" or any(i.state == "ready" for i in self.state.instances_of(name))

    async def run_inference(self, name: str, version: str | None, parse: ParseRequest,
                            head_s: float | None = None) -> Served:
        """One inference, whatever the transport: admission, name resolution, the request read
        by ``parse``, requirements, the policy's decision, submission and the wait. Counted
        once in ``infaas_requests`` (status, variant); raises :class:`InferError`. ``head_s``
        (``time.perf_counter``): when the request's head arrived; its SLO counts from then."""
        # Inference requests beyond the in-flight limit are refused at once (503), so the
        # health and metrics endpoints keep answering under a flood.
        assert self.metrics is not None
        try:
            if self._inflight >= self.settings.max_inflight_requests:
                raise InferError(503, f"server busy: {self._inflight} requests in flight")
            self._inflight += 1
            try:
                served = await self._infer(name, version, parse, head_s)
            finally:
                self._inflight -= 1
        except InferError as exc:
            self.metrics.requests.labels(str(exc.status), exc.variant).inc()
            raise
        self.metrics.requests.labels("200", served.variant).inc()
        return served

    async def _infer(self, name: str, version: str | None, parse: ParseRequest, head_s: float | None) -> Served:
        state, metrics = self.state, self.metrics
        assert state is not None and metrics is not None
        t0 = time.perf_counter()
        t = self.lookup(name, version)
        try:
            r = await parse(t.io)
            req = Requirements(
                **{t.form: name}, min_accuracy=r.min_accuracy, latency_slo_ms=r.latency_slo_ms
            )
        except protocol.ProtocolError as exc:
            raise InferError(exc.status, exc.message) from None
        except ConfigError as exc:
            raise InferError(400, str(exc)) from None
        try:
            decision = state.decide(req, r.app, r.x.shape[0])
        except NoFeasibleVariant as exc:
            decision = Reject(exc.reason, exc.suggestion)
        if isinstance(decision, Reject):
            # the kind, never the message, decides: infeasible 422, no capacity now 503
            status = HTTP_STATUS[decision.kind]
            if decision.kind is RejectKind.NO_CAPACITY:
                metrics.dropped.labels("policy_no_capacity").inc()
            raise InferError(status, decision.reason, suggestion=decision.suggestion)
        try:
            spent_ms = 0.0 if head_s is None else (time.perf_counter() - head_s) * 1000.0
            inst, futures = state.submit(decision, r.x, r.latency_slo_ms, spent_ms)
        except Overloaded as exc:
            raise InferError(429, str(exc)) from None
        except Refused as exc:
            metrics.dropped.labels(exc.reason).inc()
            raise InferError(503, str(exc)) from None
        except BackendError as exc:
            raise InferError(503, str(exc)) from None
        variant = inst.variant.name
        try:
            if len(futures) == 1:
                served = [await asyncio.wait_for(futures[0], self.settings.request_timeout_s)]
            else:
                served = list(
                    await asyncio.wait_for(asyncio.gather(*futures), self.settings.request_timeout_s)
                )
        except TimeoutError:
            raise InferError(503, f"{variant}: not served within {self.settings.request_timeout_s} s",
                             variant=variant) from None
        except (WorkerDied, Overloaded) as exc:
            raise InferError(503, str(exc), variant=variant) from None
        except InferenceFailed as exc:
            raise InferError(500, str(exc), variant=variant) from None
        except BackendError as exc:
            raise InferError(503, str(exc), variant=variant) from None
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
        metrics.queue.labels(variant).observe(first.queue_ms / 1000.0)
        metrics.latency.labels(variant).observe(time.perf_counter() - t0)
        return Served(r, variant, y, params)

    # -- endpoints -----------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return Response(b'{"live":true}', media_type=_JSON)

    async def ready(self, request: Request) -> Response:
        ok = self.state is not None and self.state.ready
        return Response(jsonfast.dumps({"ready": ok}), status_code=200 if ok else 503, media_type=_JSON)

    async def server_metadata(self, request: Request) -> Response:
        return Response(
            jsonfast.dumps({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}),
            media_type=_JSON,
        )

    def _target(self, request: Request) -> _Target | Response:
        """The named target, or the 404 answer (unknown name or version)."""
        try:
            return self.lookup(request.path_params["name"], request.path_params.get("version"))
        except InferError as exc:
            return _error(exc.status, exc.message)

    async def model_metadata(self, request: Request) -> Response:
        name = request.path_params["name"]
        t = self._target(request)
        if isinstance(t, Response):
            return t
        return Response(self.metadata_of(name, t), media_type=_JSON)

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        t = self._target(request)
        if isinstance(t, Response):
            return t
        ok = self.ready_of(name, t)
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
        async def parse(io: TaskIO) -> protocol.InferRequest:
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype and ctype not in ACCEPTED_CONTENT_TYPES:
                raise InferError(415, f"content-type '{ctype}' is not served; send application/json "
                                      "(or application/octet-stream with the binary extension)")
            try:
                async with asyncio.timeout(self.settings.body_timeout_s):  # a slow body holds an in-flight slot
                    body = await _read_body(request, self.settings.max_request_bytes)
            except ClientDisconnect:  # the client left mid-body: nothing to answer, but counted
                raise InferError(CLIENT_CLOSED, "client disconnected before the body was complete") from None
            except TimeoutError:
                raise InferError(408, f"request body not complete within server.body_timeout_s "
                                      f"({self.settings.body_timeout_s:g} s)") from None
            return protocol.parse_infer(body, request.headers.get(protocol.HEADER_LEN), io.input_shape,
                                        io.uint8_to_input)

        try:
            s = await self.run_inference(request.path_params["name"], request.path_params.get("version"), parse,
                                         request.scope.get(HEAD_ARRIVAL))
        except InferError as exc:
            return _error(exc.status, exc.message, suggestion=exc.suggestion)
        body_out, headers = protocol.encode_infer(s.variant, s.request.request_id, s.y, s.params,
                                                  s.request.binary_output)
        return Response(body_out, headers=headers)

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
                *self.offline.routes(),
                *registration_routes(self),
                Route(openapi.PATH, self.openapi),
                Route("/metrics", self.prometheus),
            ],
            lifespan=self.lifespan,
            exception_handlers={HTTPException: _http_exception},
        )


def _as_float32(x: np.ndarray) -> np.ndarray:
    """A registered task's raw UINT8 input: the values as they are (as the digits zoo)."""
    return x.astype(np.float32)


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
