"""KServe v2 over gRPC beside HTTP (``server.grpc_port``; docs/real-backend-grpc.md).

A ``grpc.aio`` server in the HTTP server's process and asyncio loop, bound to
``server.host:server.grpc_port``, implementing Triton's ``GRPCInferenceService`` with the
protocol classes ``tritonclient.grpc`` ships (``service_pb2``, ``service_pb2_grpc``):
ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer. Every other
method of the service answers UNIMPLEMENTED with one line.

ModelInfer goes through the same path as HTTP (:meth:`InferenceServer.run_inference`): the
request is turned into the v2 JSON head plus its raw tensor bytes — what an HTTP request with
the binary extension carries — and read by :func:`infaas_real.server.protocol.parse_infer`, so
both transports check shapes, datatypes (FP32, UINT8), finite values and the requirements in
``parameters`` (``min_accuracy``, ``latency_slo_ms``, ``app``) by the same rules.
``raw_input_contents`` is the fast path (tritonclient's default); typed ``contents``
(``fp32_contents``, ``uint_contents``) travel as JSON numbers. An error's HTTP status becomes
a gRPC code by :data:`infaas_real.server.app.GRPC_CODE`; the details are its one-line message
(with the policy's suggestion, when there is one, after "; suggestion: ").

Every RPC the servicer answers is counted once in ``infaas_grpc_requests{method,code}``;
inferences are also counted in the shared inference metrics. A message over
``server.max_request_bytes`` is refused by gRPC itself (RESOURCE_EXHAUSTED) before the servicer
sees it, and RPCs arriving once the server is stopping are refused by gRPC (UNAVAILABLE):
neither is in the counter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from infaas_real.server import jsonfast, protocol
from infaas_real.server.app import (
    EXTENSIONS,
    GRPC_CODE,
    MODEL_VERSION,
    SERVER_NAME,
    SERVER_VERSION,
    InferError,
)
from infaas_real.server.metrics import GrpcAccounting
from infaas_real.server.tasks import TaskIO

if TYPE_CHECKING:
    from infaas_real.server.app import InferenceServer

log = logging.getLogger("infaas_real.server")

SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
IMPLEMENTED = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
_TYPED = {"FP32": "fp32_contents", "UINT8": "uint_contents"}
"""Where each served datatype's values are in ``InferTensorContents``."""


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _abort_of(exc: InferError) -> _Abort:
    code = getattr(grpc.StatusCode, GRPC_CODE.get(exc.status, "INTERNAL"))
    details = exc.message if not exc.suggestion else f"{exc.message}; suggestion: {exc.suggestion}"
    return _Abort(code, details)


def _param_value(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def _head_and_binary(request: Any) -> tuple[bytes, str | None]:
    """The v2 request as an HTTP body (JSON head + raw tensors) and its header length, for
    :func:`protocol.parse_infer`: one reading of requests for both transports."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise protocol.ProtocolError(400, f"raw_input_contents: {len(raw)} tensors for {len(request.inputs)} inputs")
    inputs: list[dict[str, Any]] = []
    for i, t in enumerate(request.inputs):
        d: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        tp = {k: _param_value(v) for k, v in t.parameters.items()}
        if raw:
            if t.HasField("contents"):
                raise protocol.ProtocolError(400, f"inputs[{i}]: both contents and raw_input_contents given")
            tp["binary_data_size"] = len(raw[i])
        elif t.HasField("contents") and t.datatype in _TYPED:
            d["data"] = np.asarray(getattr(t.contents, _TYPED[t.datatype]))  # JSON numbers, as HTTP's data
        if tp:
            d["parameters"] = tp
        inputs.append(d)
    head: dict[str, Any] = {"inputs": inputs, "parameters": {k: _param_value(v) for k, v in request.parameters.items()}}
    if request.id:
        head["id"] = request.id
    if request.outputs:
        head["outputs"] = [{"name": o.name} for o in request.outputs]
    body = jsonfast.dumps(head)
    if not raw:
        return body, None
    return body + b"".join(raw), str(len(body))


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The v2 gRPC service over one :class:`InferenceServer`."""

    def __init__(self, server: InferenceServer, acc: GrpcAccounting) -> None:
        self.server = server
        self.acc = acc
        for name in [m.name for m in SERVICE.methods]:
            handler = getattr(self, f"_{name}", None) or self._unimplemented(name)
            setattr(self, name, self._counted(name, handler))

    def _counted(self, method: str, handler: Handler) -> Handler:
        async def rpc(request: Any, context: grpc.aio.ServicerContext) -> Any:
            code = grpc.StatusCode.OK
            try:
                return await handler(request, context)
            except _Abort as exc:
                code = exc.code
                await context.abort(exc.code, exc.details)
            except asyncio.CancelledError:  # the client cancelled or the deadline passed
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code = grpc.StatusCode.INTERNAL
                log.error("gRPC %s failed: %s", method, type(exc).__name__, exc_info=exc)
                await context.abort(code, "internal server error")
            finally:
                self.acc.count(method, code.name)

        return rpc

    def _unimplemented(self, method: str) -> Handler:
        async def rpc(request: Any, context: grpc.aio.ServicerContext) -> Any:
            raise _Abort(grpc.StatusCode.UNIMPLEMENTED,
                         f"{method} is not served by {SERVER_NAME} (served: {', '.join(IMPLEMENTED)})")

        return rpc

    def _lookup(self, name: str, version: str) -> Any:
        try:
            return self.server.lookup(name, version)
        except InferError as exc:
            raise _abort_of(exc) from None

    async def _ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def _ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        state = self.server.state
        return service_pb2.ServerReadyResponse(ready=state is not None and state.ready)

    async def _ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    async def _ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        t = self._lookup(request.name, request.version)
        return service_pb2.ModelReadyResponse(ready=self.server.ready_of(request.name, t))

    async def _ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        t = self._lookup(request.name, request.version)
        meta = jsonfast.loads(self.server.metadata_of(request.name, t))

        def tensors(ts: list[dict[str, Any]]) -> list[Any]:
            return [service_pb2.ModelMetadataResponse.TensorMetadata(name=x["name"], datatype=x["datatype"],
                                                                     shape=x["shape"]) for x in ts]

        return service_pb2.ModelMetadataResponse(name=meta["name"], versions=meta["versions"],
                                                 platform=meta["platform"], inputs=tensors(meta["inputs"]),
                                                 outputs=tensors(meta["outputs"]))

    async def _ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async def parse(io: TaskIO) -> protocol.InferRequest:
            body, header_len = _head_and_binary(request)
            return protocol.parse_infer(body, header_len, io.input_shape, io.uint8_to_input)

        try:
            s = await self.server.run_inference(request.model_name, request.model_version, parse)
        except InferError as exc:
            raise _abort_of(exc) from None
        y32 = np.ascontiguousarray(s.y, dtype="<f4")
        out = service_pb2.ModelInferResponse(
            model_name=s.variant, model_version=MODEL_VERSION, id=s.request.request_id or "",
            outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name=protocol.OUTPUT_NAME, datatype="FP32",
                                                                      shape=list(y32.shape))],
            raw_output_contents=[y32.tobytes()],
        )
        for k, v in s.params.items():
            p = out.parameters[k]
            if isinstance(v, str):
                p.string_param = v
            elif isinstance(v, int | np.integer):
                p.int64_param = int(v)
            else:
                p.double_param = float(v)
        return out


class GrpcFrontEnd:
    """The running gRPC server; :meth:`stop` refuses new RPCs and lets in-flight ones finish."""

    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self.aio = server
        self.port = port

    async def stop(self, grace_s: float) -> None:
        await self.aio.stop(grace_s)


async def start(server: InferenceServer, host: str, port: int) -> GrpcFrontEnd | None:
    """Serve ``server`` over gRPC on ``host:port`` (0: any free port); the bound address is
    printed. A port that cannot be bound is one printed warning line and HTTP serves alone
    (None): another server on the machine must not stop this one."""
    limit = server.settings.max_request_bytes
    aio = grpc.aio.server(options=[
        ("grpc.so_reuseport", 0),  # never share the port with another process's server
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
    ])  # fmt: skip
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(server, server.grpc_acc), aio)
    try:
        bound = aio.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        print(f"infaas-real serve: warning: gRPC not served: cannot bind {host}:{port} (in use?); "
              "HTTP serves alone (set server.grpc_port)", flush=True)
        return None
    await aio.start()
    print(f"infaas-real serve: gRPC on {host}:{bound}", flush=True)
    return GrpcFrontEnd(aio, bound)
