"""What the benchmarks that start their own server share: a free loopback port, and waiting
until the server answers readiness (or exits, or takes too long). Scripts run as
``python benchmarks/<name>.py`` import it by name (their folder is on ``sys.path``)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float, who: str) -> None:
    """Poll ``url``'s ``/v2/health/ready`` until it answers 200; ``SystemExit`` with one line
    naming ``who`` if ``proc`` exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{who}: the server exited ({proc.returncode}) before it was ready")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{who}: the server was not ready within {timeout_s:g} s")
