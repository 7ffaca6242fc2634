"""The registration endpoints and the catalog listing (described in openapi.yaml):

- ``GET /v2/models``: every variant of the live catalog (name, model, task, framework,
  hardware, cores, max batch, accuracy, batch-1 latency, source) and the tasks — a
  registered model's variants appear here once its job is done;
- ``POST /v2/infaas/models``: register a model (the JSON body of
  :mod:`~infaas_real.registration.spec`); 202 with the job, or 400 / 409 / 413 / 422 / 503
  with a one-line ``error``; 404 when ``registration.enabled`` is false;
- ``GET /v2/infaas/jobs/{id}``: the job (state, progress, errors, variants, last log lines);
- ``GET /v2/infaas/jobs``: every job kept.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from infaas_real.registration.spec import RegistrationError
from infaas_real.server import jsonfast, protocol

if TYPE_CHECKING:
    from infaas_real.server.app import InferenceServer

_JSON = "application/json"
JOBS_PATH = "/v2/infaas/jobs"


def _answer(status: int, body: Any) -> Response:
    return Response(jsonfast.dumps(body), status_code=status, media_type=_JSON)


def _error(status: int, message: str) -> Response:
    return Response(protocol.error_body(" ".join(message.split())), status_code=status, media_type=_JSON)


async def _body(request: Request, limit: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RegistrationError(413, f"registration body of {declared} bytes exceeds registration.max_upload_bytes ({limit})")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RegistrationError(413, f"registration body exceeds registration.max_upload_bytes ({limit})")
                chunks.append(chunk)
    except TimeoutError:
        raise RegistrationError(408, f"registration body not complete within {timeout_s:g} s") from None
    return b"".join(chunks)


def registration_routes(server: InferenceServer) -> list[Route]:
    """The routes above for ``server``."""

    async def models(request: Request) -> Response:
        assert server.state is not None
        cat = server.state.catalog
        rows = [{"name": v.name, "model": v.model, "task": v.task, "framework": v.framework, "hardware": v.hardware,
                 "cores": v.cores, "max_batch": v.max_batch, "accuracy": v.accuracy,
                 "batch1_latency_ms": v.batch1_latency_ms, "source": v.source} for v in cat]  # fmt: skip
        return _answer(200, {"tasks": list(cat.tasks), "models": rows})

    async def register(request: Request) -> Response:
        reg = server.registrar
        if reg is None:
            return _error(404, "model registration is off on this server (registration.enabled: false)")
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype and ctype != _JSON:
            return _error(415, f"content-type '{ctype}' is not served; send application/json")
        try:
            body = await _body(request, reg.settings.max_upload_bytes, server.settings.body_timeout_s)
            job = await reg.submit(body)
        except RegistrationError as exc:
            return _error(exc.status, exc.message)
        except ClientDisconnect:
            return _error(400, "client disconnected before the body was complete")
        out = job.to_json(reg.clock())
        out["status_url"] = f"{JOBS_PATH}/{job.id}"
        return _answer(202, out)

    async def job(request: Request) -> Response:
        reg = server.registrar
        jid = request.path_params["id"]
        got = None if reg is None else reg.job(jid)
        if got is None or reg is None:
            return _error(404, f"no registration job '{jid}'")
        return _answer(200, got.to_json(reg.clock()))

    async def jobs(request: Request) -> Response:
        reg = server.registrar
        if reg is None:
            return _answer(200, {"jobs": []})
        now = reg.clock()
        return _answer(200, {"jobs": [j.to_json(now) for j in reg.jobs.values()]})

    return [
        Route("/v2/models", models),
        Route("/v2/infaas/models", register, methods=["POST"]),
        Route(JOBS_PATH, jobs),
        Route(JOBS_PATH + "/{id}", job),
    ]
