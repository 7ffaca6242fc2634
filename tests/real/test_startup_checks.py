"""``infaas-real serve | replay | validate`` start-up validation (infaas_core/control/startup.py):
a run that cannot work exits 2 with exactly one line naming the config key — ``serve`` before
it binds its port or spawns a worker, ``replay`` before it waits for a server, ``validate``
before it starts one."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import REPO

from infaas_real.cli import main as cli_main

BOGUS_APP = "+apps.bogus={task: nope, latency_slo_ms: 100, share: 1}"
NEVER = ("cluster.initial_workers.local=0", "cluster.max_workers.local=0")


def _serve_error_line(*overrides: str) -> str:
    """Run ``infaas-real serve`` on a port this test holds: had the server got as far as
    binding, it would fail there (exit 1, uvicorn's errors), not with our one line."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "infaas_real", "serve", *overrides, f"server.port={port}"],
                           capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "listening" not in p.stdout
    return lines[0]


def test_serve_with_an_app_naming_an_unknown_task_exits_2_before_binding() -> None:
    line = _serve_error_line(BOGUS_APP)
    assert line.startswith("infaas-real serve: error: apps.bogus.task: no catalog row provides task 'nope'")
    assert "known: classification-digits" in line


def test_serve_on_a_cluster_that_can_never_run_a_worker_exits_2_before_binding() -> None:
    line = _serve_error_line(*NEVER)
    assert line.startswith("infaas-real serve: error: cluster.max_workers: ") and "never run a worker" in line


def test_serve_with_a_pin_the_catalog_lacks_exits_2() -> None:
    line = _serve_error_line("policy=static", "++policy.fixed_variants.digits-strict=nope")
    assert "policy.fixed_variants.digits-strict: unknown variant 'nope'" in line


def _cli_error_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli_main(list(args)) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_replay_with_an_unknown_task_exits_2_before_waiting_for_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _cli_error_line(capsys, "replay", "trace=poisson", "trace.rate_qps=10", "trace.duration_s=1", BOGUS_APP,
                           "server.url=http://127.0.0.1:9", "replay.ready_timeout_s=30",
                           f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert line.startswith("infaas-real replay: error: apps.bogus.task: ")


@pytest.mark.parametrize("overrides", [(BOGUS_APP,), NEVER], ids=["unknown-task", "no-worker"])
def test_validate_exits_2_before_starting_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: tuple[str, ...]
) -> None:
    line = _cli_error_line(capsys, "validate", *overrides, f"hydra.run.dir={tmp_path}")
    assert line.startswith(("infaas-real validate: error: apps.bogus.task: ",
                            "infaas-real validate: error: cluster.max_workers: "))  # fmt: skip
    assert not (tmp_path / "server.log").exists()
