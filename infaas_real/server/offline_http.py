"""The offline jobs' HTTP endpoints and metrics (:mod:`infaas_real.server.offline`; the
endpoints are described in openapi.yaml and docs/offline.md "Real server")."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infaas_real.server import jsonfast, protocol
from infaas_real.server.offline import STATES, Job, OfflineJobs, Refusal


class OfflineEndpoints:
    """``/v2/infaas/offline`` (POST submit, GET list) and ``/v2/infaas/offline/{id}`` (GET, DELETE)."""

    def __init__(self, jobs: OfflineJobs) -> None:
        self.jobs = jobs

    def routes(self) -> list[Route]:
        return [
            Route("/v2/infaas/offline", self.http_submit, methods=["POST"]),
            Route("/v2/infaas/offline", self.http_list, methods=["GET"]),
            Route("/v2/infaas/offline/{id}", self.http_status, methods=["GET"]),
            Route("/v2/infaas/offline/{id}", self.http_cancel, methods=["DELETE"]),
        ]

    async def http_submit(self, request: Request) -> Response:
        try:
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                raise Refusal(415, "send the job as application/json")
            declared = request.headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.jobs.settings.max_request_bytes):
                raise Refusal(413, f"a job request is at most {self.jobs.settings.max_request_bytes} bytes")
            raw = await request.body()
            if len(raw) > self.jobs.settings.max_request_bytes:
                raise Refusal(413, f"a job request is at most {self.jobs.settings.max_request_bytes} bytes")
            try:
                body = jsonfast.loads(raw)
            except (jsonfast.DecodeError, UnicodeDecodeError):
                raise Refusal(400, "the body is not valid JSON") from None
            job = await self.jobs.submit(body)
        except Refusal as exc:
            return error(exc.status, str(exc))
        doc = job.describe(self.jobs.now_s)
        return Response(jsonfast.dumps(doc), status_code=202, media_type="application/json",
                        headers={"Location": f"/v2/infaas/offline/{job.id}"})

    async def http_list(self, request: Request) -> Response:
        now = self.jobs.now_s
        return Response(jsonfast.dumps({"jobs": [j.describe(now) for j in self.jobs.jobs.values()]}),
                        media_type="application/json")

    def _job(self, request: Request) -> Job:
        job = self.jobs.jobs.get(request.path_params["id"])
        if job is None:
            raise Refusal(404, f"no offline job '{request.path_params['id']}'")
        return job

    async def http_status(self, request: Request) -> Response:
        try:
            job = self._job(request)
        except Refusal as exc:
            return error(exc.status, str(exc))
        return Response(jsonfast.dumps(job.describe(self.jobs.now_s)), media_type="application/json")

    async def http_cancel(self, request: Request) -> Response:
        try:
            job = self._job(request)
            self.jobs.cancel(job)
        except Refusal as exc:
            return error(exc.status, str(exc))
        return Response(jsonfast.dumps(job.describe(self.jobs.now_s)), media_type="application/json")


def error(status: int, message: str) -> Response:
    """A one-line JSON error with absolute paths reduced to their last part."""
    from infaas_real.server.app import _PATH  # the server's one path-reducing rule

    line = _PATH.sub(r"\1", " ".join(message.split()))
    return Response(protocol.error_body(line), status_code=status, media_type="application/json")


class OfflineCollector(Collector):
    """``infaas_offline_*`` in /metrics, read from the jobs at scrape time."""

    def __init__(self, jobs: OfflineJobs) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        inputs = CounterMetricFamily("infaas_offline_inputs", "Inputs of offline jobs answered (not online queries)")
        inputs.add_metric([], self.jobs.inputs_done)
        batches = CounterMetricFamily("infaas_offline_batches", "Offline batches answered (low-priority path)")
        batches.add_metric([], self.jobs.batches_done)
        states = GaugeMetricFamily("infaas_offline_jobs", "Offline jobs kept, by state", labels=["state"])
        counts = dict.fromkeys(STATES, 0)
        for j in self.jobs.jobs.values():
            counts[j.state] += 1
        for st, c in counts.items():
            states.add_metric([st], c)
        yield from (inputs, batches, states)
