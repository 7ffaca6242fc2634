"""The server's HTTP layer under abuse (issue 13; docs/server-hardening.md), on the digits
catalog: memory bounded under client-chosen requirement pairs, health and inference during a
flood of idle connections, header / keep-alive timeouts, per-client connection cap, strict
input on a live server, every request counted once in /metrics (HTTP-layer answers and those
during shutdown included), and the SIGTERM drain.

The 100,000-request memory figure is measured by benchmarks/bench_server_hardening.py; here
a scaled count runs against a smaller selection cache (the same code path reaches its
steady state sooner), with the acceptance's bound per request on the steady-state part.
"""

from __future__ import annotations

import asyncio
import resource
import select
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from server_harness import Server, catalog_overrides, running_server

from infaas_real.server.config import build_catalog, compose
from infaas_real.server.httplayer import AdmissionSettings, FrontGate
from infaas_real.server.rawhttp import (
    infer_body,
    read_response,
    request_bytes,
    rss_bytes,
    unique_pairs_load,
)

TASK = "classification-digits"
INFER = f"/v2/models/{TASK}/infer"
ITEM = 64


def _infeasible_slo_ms() -> float:
    """An SLO below every variant of the task (half the fastest batch-1 latency of the
    catalog the test servers load): answered 422 by the policy, after selection."""
    cat = build_catalog(compose("serve", catalog_overrides()).cfg)
    return min(v.batch1_latency_ms for v in cat.by_task(TASK)) / 2.0


INFEASIBLE_SLO_MS = _infeasible_slo_ms()
LOOSE_SLO_MS = 1000.0
HEADER_TIMEOUT_S = 4.0
KEEP_ALIVE_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 2.0
CACHE_SIZE = 512  # policy.selection.requirements_cache_size for the test (the YAML default is 4096)
MAX_BODY = 100_000
IDLE_CONNECTIONS = 5000
ACCEPTANCE_MB_PER_100K = 50.0


def _raise_fd_limit(need: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the hard open-file limit {hard} is below the {need} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        ["policy=infaas", f"policy.selection.requirements_cache_size={CACHE_SIZE}",
         f"server.header_timeout_s={HEADER_TIMEOUT_S}", f"server.keep_alive_timeout_s={KEEP_ALIVE_TIMEOUT_S}",
         f"server.body_timeout_s={BODY_TIMEOUT_S}",
         f"server.max_request_bytes={MAX_BODY}"],
        tmp_path_factory.mktemp("hardening"),
    ) as srv:
        yield srv


def _http_counts(text: str) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for ln in text.splitlines():
        if ln.startswith("infaas_http_requests_total{"):
            labels, value = ln.rsplit(" ", 1)
            kv = dict(p.split("=", 1) for p in labels[labels.index("{") + 1 : -1].split(","))
            out[(kv["route"].strip('"'), kv["status"].strip('"'))] = int(float(value))
    return out


def _gauge(text: str, name: str) -> float:
    return next(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name + " "))


def _exchange(sock: socket.socket, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send ``raw`` and read one response (blocking, on this keep-alive socket)."""
    sock.sendall(raw)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before an answer to {raw[:60]!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    n = int(headers.get(b"content-length", b"0"))
    while len(body) < n:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-answer"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _eof_within(sock: socket.socket, timeout_s: float) -> bool:
    """True when the peer closes ``sock`` within ``timeout_s`` (answers before it are read)."""
    return sock in _closed([sock], timeout_s)


def _closed(socks: list[socket.socket], timeout_s: float) -> set[socket.socket]:
    """Those of ``socks`` whose peer closes them within ``timeout_s`` (poll: no fd limit)."""
    by_fd = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed: set[socket.socket] = set()
    deadline = time.monotonic() + timeout_s
    while by_fd and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000.0):
            s = by_fd[fd]
            try:
                eof = s.recv(65536) == b""
            except ConnectionResetError:
                eof = True
            if eof:
                closed.add(s)
                poller.unregister(fd)
                del by_fd[fd]
    return closed


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


# -- 4. strict input on the live server ---------------------------------------------------
def _tensor(**over: object) -> dict[str, object]:
    t: dict[str, object] = {"name": "input", "shape": [1, ITEM], "datatype": "FP32", "data": [0.0] * ITEM}
    t.update(over)
    return t


def _req(tensor: dict[str, object] | None = None, **over: object) -> bytes:
    body: dict[str, object] = {"inputs": [tensor or _tensor()], "parameters": {"latency_slo_ms": LOOSE_SLO_MS}}
    body.update(over)
    return orjson.dumps(body)


_BIN_HEAD = orjson.dumps({"inputs": [_tensor(data=None, parameters={"binary_data_size": ITEM * 4})]})
MALFORMED: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("string numbers", INFER, _req(_tensor(data=["1"] * ITEM)), {}),
    ("null", INFER, _req(_tensor(data=[None] * ITEM)), {}),
    ("true", INFER, _req(_tensor(data=[True] * ITEM)), {}),
    ("string 1e999", INFER, _req(_tensor(data=["1e999"] * ITEM)), {}),
    ("1e39 overflows FP32", INFER, _req(_tensor(data=[1e39] * ITEM)), {}),
    ("ragged data", INFER, _req(_tensor(data=[[0.0], [0.0, 1.0]])), {}),
    ("object data", INFER, _req(_tensor(data={"a": 1})), {}),
    ("too few values", INFER, _req(_tensor(data=[0.0] * (ITEM - 1))), {}),
    ("unknown version", f"/v2/models/{TASK}/versions/7/infer", _req(), {}),
    ("unknown model", "/v2/models/no-such-model/infer", _req(), {}),
    ("text/plain", INFER, _req(), {"Content-Type": "text/plain"}),
    ("form", INFER, _req(), {"Content-Type": "application/x-www-form-urlencoded"}),
    ("wrong item shape", INFER, _req(_tensor(shape=[1, ITEM + 1])), {}),
    ("rank 1 shape", INFER, _req(_tensor(shape=[ITEM])), {}),
    ("negative shape", INFER, _req(_tensor(shape=[-1, ITEM])), {}),
    ("zero batch", INFER, _req(_tensor(shape=[0, ITEM], data=[])), {}),
    ("huge shape", INFER, _req(_tensor(shape=[10**12, ITEM])), {}),
    ("shape beyond 64 bits", INFER, _req().replace(b'"shape":[1,', b'"shape":[100000000000000000000,'), {}),
    ("shape product beyond 64 bits", INFER, _req(_tensor(shape=[2**40, 2**40])), {}),
    ("float shape", INFER, _req(_tensor(shape=[1.0, ITEM])), {}),
    ("string shape", INFER, _req(_tensor(shape="1,64")), {}),
    ("INT64 datatype", INFER, _req(_tensor(datatype="INT64")), {}),
    ("unknown datatype", INFER, _req(_tensor(datatype="FP99")), {}),
    ("UINT8 out of range", INFER, _req(_tensor(datatype="UINT8", data=[300] * ITEM)), {}),
    ("UINT8 fractions", INFER, _req(_tensor(datatype="UINT8", data=[0.5] * ITEM)), {}),
    ("wrong input name", INFER, _req(_tensor(name="x")), {}),
    ("duplicate inputs", INFER, orjson.dumps({"inputs": [_tensor(), _tensor()]}), {}),
    ("no inputs", INFER, orjson.dumps({"inputs": []}), {}),
    ("inputs not a list", INFER, orjson.dumps({"inputs": _tensor()}), {}),
    ("top-level list", INFER, b"[1, 2]", {}),
    ("top-level string", INFER, b'"x"', {}),
    ("top-level number", INFER, b"1", {}),
    ("top-level null", INFER, b"null", {}),
    ("empty body", INFER, b"", {}),
    ("malformed JSON", INFER, b"{not json", {}),
    ("number 1e999", INFER, _req().replace(b'"data":[0.0,', b'"data":[1e999,'), {}),
    ("NaN literal", INFER, _req().replace(b'"data":[0.0,', b'"data":[NaN,'), {}),
    ("id not a string", INFER, _req(id={"a": 1}), {}),
    ("binary_data_output not a boolean", INFER, _req(parameters={"binary_data_output": "yes"}), {}),
    ("outputs not a list", INFER, _req(outputs={"name": "output"}), {}),
    ("binary_data not a boolean", INFER, _req(outputs=[{"name": "output", "parameters": {"binary_data": 1}}]), {}),
    ("bad UTF-8", INFER, b'{"inputs": "\xff"}', {}),
    ("parameters not an object", INFER, _req(parameters=[1]), {}),
    ("min_accuracy as string", INFER, _req(parameters={"min_accuracy": "0.9"}), {}),
    ("min_accuracy above 1", INFER, _req(parameters={"min_accuracy": 1.5}), {}),
    ("latency_slo_ms null", INFER, _req(parameters={"latency_slo_ms": None}), {}),
    ("latency_slo_ms negative", INFER, _req(parameters={"latency_slo_ms": -1}), {}),
    ("latency_slo_ms true", INFER, _req(parameters={"latency_slo_ms": True}), {}),
    ("app not a string", INFER, _req(parameters={"app": 3}), {}),
    ("unknown output", INFER, _req(outputs=[{"name": "logits"}]), {}),
    ("binary size mismatch", INFER, _BIN_HEAD + b"\0" * (ITEM * 4 - 1),
     {"Inference-Header-Content-Length": str(len(_BIN_HEAD))}),
    ("binary header length beyond body", INFER, _BIN_HEAD, {"Inference-Header-Content-Length": "999999"}),
    ("binary header length not a number", INFER, _BIN_HEAD, {"Inference-Header-Content-Length": "abc"}),
    ("binary header length negative", INFER, _BIN_HEAD, {"Inference-Header-Content-Length": "-5"}),
    ("body over the limit", INFER, _req(_tensor(data=[0.0] * ITEM), pad="x" * MAX_BODY), {}),
]


@pytest.mark.parametrize(("case", "path", "body", "headers"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_input_is_refused_with_one_line_and_no_path(
    server: Server, case: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    status, answer = server.post(path, body, headers)
    assert status in {400, 404, 413, 415, 422}, (case, status, answer)
    text = answer.decode()
    assert "\n" not in text.strip() and orjson.loads(answer)["error"], answer
    assert "/work" not in text and ".py" not in text and "/tmp" not in text and "Traceback" not in text, text


# -- 2. connection hygiene ------------------------------------------------------------------
def test_idle_connection_flood_leaves_readiness_and_inference_answering(server: Server) -> None:
    """Acceptance: 5,000 idle connections held open; readiness answers 200 within 100 ms (best
    of three fresh connections) and a normal inference succeeds; then the header timeout
    closes every idle one, a half-sent request head gets 408, so does a body that never
    completes (server.body_timeout_s), and an idle keep-alive connection is closed after its
    own timeout."""
    _raise_fd_limit(IDLE_CONNECTIONS + 200)
    deadline = time.monotonic() + 60.0  # a variant an earlier test made the policy load may
    while server.get("/v2/health/ready")[0] != 200:  # still be loading: readiness says so
        assert time.monotonic() < deadline, "the server did not become ready again"
        time.sleep(0.2)
    idle = [_connect(server.port) for _ in range(IDLE_CONNECTIONS)]
    half = _connect(server.port)
    half.sendall(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n")  # never finished
    slow = _connect(server.port)
    raw = request_bytes("POST", INFER, infer_body(0.5, LOOSE_SLO_MS, ITEM))
    slow.sendall(raw[:-10])  # the body never completes
    opened = time.monotonic()
    try:
        probes = []
        for _ in range(3):
            t = time.perf_counter()
            with _connect(server.port) as s:
                status, _, _ = _exchange(s, request_bytes("GET", "/v2/health/ready", content_type=None))
            probes.append(((time.perf_counter() - t) * 1000.0, status))
        assert all(st == 200 for _, st in probes), probes
        assert min(ms for ms, _ in probes) < 100.0, probes
        status, answer = server.post(INFER, infer_body(0.5, LOOSE_SLO_MS, ITEM))
        assert status == 200, answer
        metrics = server.get("/metrics")[1].decode()
        assert _gauge(metrics, "infaas_http_open_connections") >= IDLE_CONNECTIONS + 1, "the flood was not held open"
        assert time.monotonic() - opened < HEADER_TIMEOUT_S, "too slow to observe the flood held open"
        with _connect(server.port) as ka:
            assert _exchange(ka, request_bytes("GET", "/v2/health/live", content_type=None))[0] == 200
            assert _eof_within(ka, KEEP_ALIVE_TIMEOUT_S + 2.0), "idle keep-alive connection not closed"
        margin_s = 3.0
        wait_s = HEADER_TIMEOUT_S + margin_s - (time.monotonic() - opened)
        assert _eof_within(idle[0], max(wait_s, margin_s))
        reply = b""
        while chunk := half.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408"), reply
        status, _, body = _exchange(slow, b"")
        assert status == 408 and b"body_timeout_s" in body, body
        still_open = set(idle) - _closed(idle, 1.0)
        assert not still_open, f"{len(still_open)} idle connections outlived server.header_timeout_s"
        counts = _http_counts(server.get("/metrics")[1].decode())
        assert counts[("http", "408")] >= 1, counts
    finally:
        for s in [*idle, half, slow]:
            s.close()


# -- 1. memory under client-chosen keys (after the flood: its load may make the policy load variants)
def test_distinct_requirement_pairs_leave_server_memory_bounded(server: Server) -> None:
    """Acceptance (scaled; the 100,000-request figure is the benchmark's): the whole run,
    cache filling included, within 50 MB, and the steady-state part within a per-request
    bound derived from the acceptance's."""

    async def load(start: int, n: int) -> Counter[int]:
        return await unique_pairs_load(server.port, INFER, n, 16, ITEM, 10, INFEASIBLE_SLO_MS, LOOSE_SLO_MS, start)

    async def warm() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        for _ in range(300):  # one fixed pair: imports, allocator pools, the variant's instance
            w.write(request_bytes("POST", INFER, infer_body(0.5, LOOSE_SLO_MS, ITEM)))
            assert (await read_response(r))[0] == 200
        w.close()

    asyncio.run(warm())
    rss0 = rss_bytes(server.proc.pid)
    fill = asyncio.run(load(0, 3 * CACHE_SIZE))  # every selection cache reaches its bound
    rss1 = rss_bytes(server.proc.pid)
    steady_n = 5000
    steady = asyncio.run(load(3 * CACHE_SIZE, steady_n))
    rss2 = rss_bytes(server.proc.pid)
    statuses = fill + steady
    assert set(statuses) == {200, 422} and statuses[200] >= (3 * CACHE_SIZE + steady_n) // 10, statuses
    # At steady state at most twice the acceptance's average rate (0.5 KB a request): the
    # allocator's pools still grow a little while caches are cleared and refilled. The leak
    # of issue 13 was 39 KB a request.
    per_request_bound = 2 * ACCEPTANCE_MB_PER_100K * 2**20 / 100_000
    assert rss2 - rss1 < steady_n * per_request_bound, (rss0, rss1, rss2)
    assert rss2 - rss0 < ACCEPTANCE_MB_PER_100K * 2**20, (rss0, rss1, rss2)


# -- 3. accounting and shutdown, on a server of their own -----------------------------------
PER_CLIENT_CAP = 40
DRAIN_S = 3.0
SHUTDOWN_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("guarded")
    final = tmp / "final-metrics.prom"
    with running_server(
        ["policy=infaas", f"server.max_connections_per_client={PER_CLIENT_CAP}",
         f"server.max_request_bytes={MAX_BODY}", f"server.shutdown_drain_s={DRAIN_S}", f"server.shutdown_timeout_s={SHUTDOWN_TIMEOUT_S}",
         f"server.final_metrics_path={final}"],
        tmp,
    ) as srv:
        yield srv, final


def test_connections_over_the_per_client_cap_are_closed_and_counted(guarded: tuple[Server, Path]) -> None:
    srv, _ = guarded
    extra = 10
    flood = [_connect(srv.port, source="127.0.0.2") for _ in range(PER_CLIENT_CAP + extra)]
    try:
        closed = _closed(flood, 1.0)
        assert len(closed) == extra, len(closed)
        assert srv.get("/v2/health/ready")[0] == 200  # another address is not limited by it
        text = srv.get("/metrics")[1].decode()
        refused = [ln for ln in text.splitlines() if ln.startswith("infaas_http_connections_refused_total{")]
        assert refused == [f'infaas_http_connections_refused_total{{reason="max_connections_per_client"}} {float(extra)}'], refused
    finally:
        for s in flood:
            s.close()


def _scrape(port: int) -> Counter[tuple[str, str]]:
    with _connect(port) as s:
        status, _, body = _exchange(s, request_bytes("GET", "/metrics", content_type=None))
    assert status == 200
    return _http_counts(body.decode())


def test_every_request_is_counted_once_and_shutdown_refuses_explicitly(guarded: tuple[Server, Path]) -> None:
    """Acceptance: per-status totals in /metrics equal what the client saw, for a mix that
    includes uvicorn-level 400s, 413, 415, a client gone mid-body (499) and, after SIGTERM,
    requests on open keep-alive connections (503 + Connection: close), one in flight (200) and
    one whose body never completes (503 when server.shutdown_timeout_s cancels it)."""
    srv, final = guarded
    port = srv.port
    seen: Counter[tuple[str, str]] = Counter()
    before = _scrape(port)
    scrapes = 1

    ok = infer_body(0.5, LOOSE_SLO_MS, ITEM)
    with _connect(port) as s:  # one keep-alive connection for the well-formed part of the mix
        for route, raw in [
            ("infer", request_bytes("POST", INFER, ok)),
            ("infer", request_bytes("POST", INFER, ok)),
            ("infer", request_bytes("POST", INFER, b"{not json")),
            ("infer", request_bytes("POST", "/v2/models/nope/infer", ok)),
            ("infer", request_bytes("POST", INFER, ok, content_type=b"text/plain")),
            ("infer", request_bytes("POST", INFER, infer_body(0.5, INFEASIBLE_SLO_MS, ITEM))),
            ("infer", request_bytes("GET", INFER, content_type=None)),
            ("other", request_bytes("GET", "/no/such/path", content_type=None)),
            ("health", request_bytes("GET", "/v2/health/live", content_type=None)),
            ("model_metadata", request_bytes("GET", f"/v2/models/{TASK}", content_type=None)),
        ]:
            seen[(route, str(_exchange(s, raw)[0]))] += 1
    with _connect(port) as s:  # over the body limit: answered before the body is read
        head = b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        seen[("infer", str(_exchange(s, head % (INFER.encode(), MAX_BODY + 1))[0]))] += 1
    with _connect(port) as s:  # malformed HTTP: uvicorn's parser answers
        status = _exchange(s, b"NOT HTTP AT ALL\x00\r\n\r\n")[0]
        seen[("http", str(status))] += 1
    with _connect(port) as s:  # the client leaves mid-body
        s.sendall(request_bytes("POST", INFER, ok)[: -len(ok) // 2])
        time.sleep(0.2)
    seen[("infer", "499")] += 1
    assert seen[("infer", "200")] == 2 and seen[("infer", "413")] == 1 and seen[("http", "400")] == 1, seen

    deadline = time.monotonic() + 10.0
    while True:
        after = _scrape(port)
        delta = after - before
        want = seen + Counter({("metrics", "200"): scrapes})
        scrapes += 1
        if delta == want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert delta == want, (delta, want)

    # -- shutdown: keep-alive connections open and one request in flight at SIGTERM --------
    keep = [_connect(port) for _ in range(5)]
    for s in keep:
        assert _exchange(s, request_bytes("GET", "/v2/health/live", content_type=None))[0] == 200
    seen_after: Counter[tuple[str, str]] = Counter()  # from the scrape `last` on
    inflight = _connect(port)
    raw = request_bytes("POST", INFER, ok)
    inflight.sendall(raw[:-10])  # head and most of the body: its handler is running
    stuck = _connect(port)
    stuck.sendall(raw[:-10])  # the same, never completed: cancelled at shutdown_timeout_s
    last = _scrape(port)
    seen_after[("metrics", "200")] += 1
    time.sleep(0.2)
    srv.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:  # the listener closes when the drain begins
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the server kept accepting after SIGTERM")
    for s in keep:
        status, headers, body = _exchange(s, request_bytes("GET", "/v2/health/ready", content_type=None))
        assert (status, headers.get(b"connection")) == (503, b"close"), (status, headers, body)
        assert _eof_within(s, 2.0)
        seen_after[("health", "503")] += 1
    status, headers, body = _exchange(inflight, raw[-10:])
    assert (status, headers.get(b"connection")) == (200, b"close"), (status, body)
    seen_after[("infer", "200")] += 1
    stuck.settimeout(DRAIN_S + SHUTDOWN_TIMEOUT_S + 10.0)
    status, headers, body = _exchange(stuck, b"")
    assert (status, headers.get(b"connection")) == (503, b"close"), (status, body)
    seen_after[("infer", "503")] += 1
    for s in [*keep, inflight, stuck]:
        s.close()
    # uvicorn re-raises the signal it handled once it has shut down: exit by SIGTERM, or 0
    assert srv.proc.wait(timeout=DRAIN_S + 30) in (0, -signal.SIGTERM)
    final_counts = _http_counts(final.read_text())
    assert final_counts - last == seen_after, (final_counts - last, seen_after)
    assert "Traceback" not in srv.log.read_text(), srv.log.read_text()[-3000:]


def test_the_open_file_limit_is_raised_and_a_shortfall_said() -> None:
    from infaas_real.server.cli import FD_RESERVE, raise_fd_limit

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_fd_limit(FD_RESERVE) is None
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    if hard != resource.RLIM_INFINITY:
        warning = raise_fd_limit(hard + 1)
        assert warning is not None and "\n" not in warning and str(hard) in warning


# -- the front gate (docs/overload-and-supervision.md, "Front-end admission") ---------------

GATE_MAX_INFLIGHT = 2


def _gate(adaptive: bool = True, lo: int = 2, hi: int = 64) -> FrontGate:
    return FrontGate(AdmissionSettings(adaptive=adaptive, target_latency_ms=50.0, interval_s=3600.0, min_inflight=lo,
                                       max_inflight=hi, increase=8.0, decrease=0.5))  # fmt: skip


def test_the_front_gate_follows_the_time_in_the_server_between_its_bounds() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        g = _gate()
        assert g.limit == 64
        for _ in range(64):
            assert g.admit()
        assert not g.admit() and g.refused == 1  # at the limit: refused
        for _ in range(64):
            g.done(time.perf_counter() - 0.1)  # answered 100 ms after their heads: twice the target
        g._tick(loop)
        assert 31.0 <= g.limit <= 32.0 and g.last_latency_ms >= 100.0  # scaled by target / mean
        for _ in range(3):
            assert g.admit()
            g.done(time.perf_counter() - 1.0)  # 20x the target: cut by `decrease` at most
            before = g.limit
            g._tick(loop)
            assert g.limit == max(2.0, before * 0.5)
        for _ in range(5):
            g.admit()
            g.done(time.perf_counter() - 1.0)
            g._tick(loop)
        assert g.limit == 2  # never below min_inflight
        g._tick(loop)  # nothing answered, the limit not reached: it stays
        assert g.limit == 2
        for _ in range(20):  # reached every interval, answers in time: it grows to max_inflight, no further
            while g.admit():
                pass
            while g.inflight:
                g.done(time.perf_counter())
            g._tick(loop)
        assert g.limit == 64
        g._timer.cancel()  # type: ignore[union-attr]

    asyncio.run(body())


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(["policy=infaas", f"server.max_inflight_requests={GATE_MAX_INFLIGHT}",
                         "server.admission.min_inflight=1", "server.admission.adaptive=false",
                         f"server.body_timeout_s={HEADER_TIMEOUT_S}"],
                        tmp_path_factory.mktemp("gated")) as srv:  # fmt: skip
        yield srv


def test_the_front_gate_refuses_before_the_body_keeps_the_connection_and_counts_once(gated: Server) -> None:
    srv = gated
    body = infer_body(0.0, LOOSE_SLO_MS, ITEM)
    head = request_bytes("POST", INFER, body)[: -len(body)]
    with _connect(srv.port) as s:
        assert _exchange(s, request_bytes("POST", INFER, body))[0] == 200  # loads the variant
    before = _scrape(srv.port)
    held = [_connect(srv.port) for _ in range(GATE_MAX_INFLIGHT)]
    try:
        for s in held:  # each holds an in-flight slot: its body is not complete
            s.sendall(head + body[:10])
        deadline = time.monotonic() + HEADER_TIMEOUT_S
        while orjson.loads(srv.get("/v2/infaas/state")[1])["front_gate"]["inflight"] < GATE_MAX_INFLIGHT:
            assert time.monotonic() < deadline, "the held requests were not admitted"
            time.sleep(0.02)
        with _connect(srv.port) as s:
            status, headers, answer = _exchange(s, head)  # refused at its head: no body sent yet
            assert status == 503 and b"server.admission" in answer and b"\n" not in answer, answer
            assert headers.get(b"connection") != b"close"
            s.sendall(body)  # the body after the refusal is skipped by the parser
            status, _, answer = _exchange(s, request_bytes("POST", INFER, body))
            assert status == 503 and b"server.admission" in answer  # still full: the same answer
            for h in held:  # the held requests complete and are served
                h.sendall(body[10:])
            for h in held:
                assert _read_one(h)[0] == 200
            status, _, answer = _exchange(s, request_bytes("POST", INFER, body))  # same connection, room again
            assert status == 200, answer
    finally:
        for h in held:
            h.close()
    after = _scrape(srv.port)
    delta = after - before
    assert delta[("infer", "503")] == 2 and delta[("infer", "200")] == GATE_MAX_INFLIGHT + 1, delta
    state = orjson.loads(srv.get("/v2/infaas/state")[1])
    assert state["front_gate"]["refused"] == 2 and state["front_gate"]["inflight"] == 0, state["front_gate"]


def _read_one(sock: socket.socket) -> tuple[int, bytes]:
    status, _, body = _exchange(sock, b"")
    return status, body
