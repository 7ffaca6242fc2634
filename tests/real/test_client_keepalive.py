"""The load generator's keep-alive pool (``infaas_real.server.client.V2Client``) and a server
that closes idle connections (``server.keep_alive_timeout_s``): a pooled connection the
server closed is not used, and a request that meets the close as it goes out (before any
byte of an answer) is sent once more on a new connection — never lost, never duplicated.

The server here is a real asyncio HTTP/1.1 responder on loopback that answers one request
per connection and then closes it, as the server's idle timeout does."""

from __future__ import annotations

import asyncio

import pytest

from infaas_real.server.client import V2Client


class OneShotServer:
    """Answers the first request on each connection (200, keep-alive), then closes it: after
    ``close_after_s``, or at once when that is 0 (the close then races the client's next
    request on that connection)."""

    def __init__(self, close_after_s: float) -> None:
        self.close_after_s = close_after_s
        self.requests = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        n = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        if n:
            await reader.readexactly(n)
        self.requests += 1
        body = b'{"n": %d}' % self.requests
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\ncontent-type: application/json\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        if self.close_after_s:
            await asyncio.sleep(self.close_after_s)
        writer.close()


async def _run(close_after_s: float, gap_s: float, requests: int) -> tuple[list[int], OneShotServer, V2Client]:
    srv = OneShotServer(close_after_s)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = V2Client(f"http://127.0.0.1:{port}", max_connections=1, timeout_s=5.0)
    seen = []
    try:
        for _ in range(requests):
            status, body = await client.get_json("/v2/health/ready")
            assert status == 200
            seen.append(body["n"])
            await asyncio.sleep(gap_s)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    return seen, srv, client


@pytest.mark.parametrize(("close_after_s", "gap_s"), [(0.01, 0.05), (0.0, 0.0)], ids=["closed-while-idle", "close-races-the-request"])
def test_a_connection_the_server_closed_is_replaced_and_no_request_is_lost_or_sent_twice(close_after_s: float, gap_s: float) -> None:
    seen, srv, client = asyncio.run(_run(close_after_s, gap_s, requests=20))
    assert seen == list(range(1, 21))  # every request answered, in order, each reached the server once
    assert srv.requests == 20
    assert srv.connections >= 20  # one per request: a closed connection was never reused
    # each of the 19 pooled connections was either seen closed and dropped, or met the close
    # as its request went out and that request was sent again: counted, for the run's summary
    assert client.stale_dropped + client.resent == 19
    if gap_s:
        assert client.stale_dropped == 19 and client.resent == 0  # the FIN had arrived: nothing resent
