"""The OpenAPI description (infaas_real/server/openapi.yaml, served at GET /v2/openapi.json)
covers every route of the server, and schemathesis finds no 5xx and no answer outside the
description on a live server (digits catalog). Bounded: a few examples per operation,
derandomised under CI (the hypothesis profile of tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from server_harness import Server, catalog_overrides, running_server
from starlette.routing import Route

from infaas_real.server import openapi
from infaas_real.server.cli import build_server

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(["policy=infaas", "server.max_request_bytes=200000"], tmp_path_factory.mktemp("openapi")) as srv:
        yield srv


def test_the_description_covers_every_route() -> None:
    srv, _ = build_server(catalog_overrides())
    routes = {(r.path, m) for r in srv.routes().routes if isinstance(r, Route) for m in (r.methods or ()) if m != "HEAD"}
    described = {(p, m.upper()) for p, ops in openapi.document()["paths"].items() for m in ops}
    assert routes == described, {"not described": routes - described, "no such route": described - routes}


def test_the_description_is_served(server: Server) -> None:
    status, body = server.get(openapi.PATH)
    assert status == 200 and body == openapi.document_json()


# The shipped description (test_the_description_is_served: the same bytes as the server's);
# not schemathesis.pytest.from_fixture, whose lazy loader does not run on pytest 9.
schema = schemathesis.openapi.from_dict(
    openapi.document(), config=schemathesis.Config.from_dict({"generation": {"deterministic": bool(os.environ.get("CI"))}})
)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])  # fmt: skip
def test_schemathesis_finds_no_server_error_and_no_undescribed_answer(case: schemathesis.Case, server: Server) -> None:
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)
