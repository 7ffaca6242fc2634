"""The server's OpenAPI 3 description (``openapi.yaml`` beside this module, written by hand),
served as JSON at ``GET /v2/openapi.json``."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

from infaas_real.server import jsonfast

PATH = "/v2/openapi.json"


@functools.cache
def document() -> dict[str, Any]:
    """The description as a mapping (the YAML's anchors resolved)."""
    text = resources.files("infaas_real.server").joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


@functools.cache
def document_json() -> bytes:
    return jsonfast.dumps(document())
