"""Start ``infaas-real serve`` in a subprocess on a free loopback port for the real-backend
tests, and stop it afterwards. The tests use the committed digits catalog
(``configs/catalog/digits.yaml``); ``INFAAS_REAL_TEST_OVERRIDES`` (space-separated Hydra
overrides) may point them at another catalog."""

from __future__ import annotations

import functools
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from infaas_real.validate import stop_server

REPO = Path(__file__).resolve().parents[2]


def catalog_overrides() -> list[str]:
    pytest.importorskip("infaas_real.runtime", reason="the variant runtime is not in this checkout")
    env = os.environ.get("INFAAS_REAL_TEST_OVERRIDES")
    over = shlex.split(env) if env else []
    if not env and not (REPO / "configs" / "catalog" / "digits.yaml").is_file():
        pytest.skip("the digits catalog (configs/catalog/digits.yaml) is not in this checkout")
    _prebuild(tuple(over))
    return over


@functools.cache
def _prebuild(over: tuple[str, ...]) -> None:
    """Build every CPU variant's artifact once, before any server starts: a worker process
    must not train a model on the request path (fresh checkouts have an empty cache)."""
    from infaas_real.runtime import load_runner
    from infaas_real.server.config import build_catalog, compose

    for v in build_catalog(compose("serve", list(over)).cfg).cpu_variants():
        load_runner(v).close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None,
             timeout_s: float = 30.0) -> tuple[int, bytes]:
        # urllib would say application/x-www-form-urlencoded, which the server refuses (415)
        req = urllib.request.Request(self.url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


@contextmanager
def running_server(overrides: list[str], tmp: Path, ready_timeout_s: float = 180.0) -> Iterator[Server]:
    port = free_port()
    log = tmp / f"server-{port}.log"
    # gRPC off unless a test asks for it: parallel servers would all try its default port (8001)
    grpc = [] if any(o.startswith("server.grpc_port=") for o in overrides) else ["server.grpc_port=null"]
    cmd = [sys.executable, "-m", "infaas_real", "serve", *catalog_overrides(), *overrides, *grpc,
           f"server.port={port}", "server.log_level=warning", "server.request_timeout_s=120"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}", port, proc, log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                if srv.get("/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready in {ready_timeout_s} s: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield srv
    finally:
        stop_server(proc)
