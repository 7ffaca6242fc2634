"""An offline job beside online load on the real server, measured in one run.

    .venv/bin/python benchmarks/bench_offline.py [--inputs 10000] [--rate 100] [--phase-s 8]
        [--slo-ms 75] [--online-accuracy 0.95] [--offline-accuracy 0.5] [--runs 1]
        [--serve-override KEY=VALUE ...] [--out offline.json]

Starts ``infaas-real serve`` (digits catalog, loopback) and, after a warm-up (a few online
queries load the online variant; a 4-input offline job loads the offline variant, so neither
load falls inside a phase), drives the same open-loop online schedule (Poisson arrivals at
``--rate`` queries/s for ``--phase-s`` seconds, one seeded draw used for both phases) twice:

- phase *without*: online queries only;
- phase *with*: the same schedule, with an offline job of ``--inputs`` 64-feature digits
  inputs submitted at its start (``POST /v2/infaas/offline``) and polled until it is done.

An online query violates when it is not answered 200 within ``--slo-ms`` of its scheduled
time. Per phase: queries, violations and their rate, p50/p99 of the answer time, the worker's
CPU utilisation as the policy saw it at the phase's end (offline batches count in it, as in the
original); for the job: when it was done
(seconds after the phase started), its pauses and inputs per second. Every run is bounded in
time (a phase lasts ``--phase-s``; the job is given at most ``--job-timeout-s``).
:func:`measure` is what tests/real/test_offline.py runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from infaas_real.replay import send_on_schedule  # noqa: E402
from infaas_real.server.client import V2Client  # noqa: E402

TASK = "classification-digits"
SERVE = ["policy=infaas", "server.keep_alive_timeout_s=60"]
"""The server's overrides: keep-alive connections the client's pool holds between bursts stay
open (the default 5 s closes some mid-phase: a client-side error, not the server's answer)."""
FINISHED = ("done", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    queries: int
    violations: int
    violation_rate: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]  # HTTP status -> queries ("0": no answer: a connection error or the client's timeout)
    errors: dict[str, int]  # the errors of unanswered queries
    cpu_utilisation: float  # the worker's, as the policy saw it when the phase ended


@dataclass(frozen=True, slots=True)
class Measured:
    without_job: Phase
    with_job: Phase
    job: dict[str, Any]  # the job's final status
    job_done_after_s: float  # seconds from the start of the "with" phase until the job was seen done (inf: not)
    inputs_per_s: float  # inputs / (finished_s - started_s) on the server's clock
    paused_reasons: list[str]  # distinct pause reasons seen while polling


def http_json(url: str, method: str = "GET", body: Any = None, timeout_s: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_job(url: str, job_id: str, timeout_s: float, poll_s: float = 0.1) -> dict[str, Any]:
    """The job's status once finished (or at the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, doc = http_json(f"{url}/v2/infaas/offline/{job_id}")
        if doc["state"] in FINISHED or time.monotonic() > deadline:
            return dict(doc)
        time.sleep(poll_s)


def cpu_utilisation(url: str) -> float:
    _, snap = http_json(f"{url}/v2/infaas/state")
    return max((float(w["utilization"].get("cpu", 0.0)) for w in snap["workers"]), default=0.0)


async def _online(client: V2Client, arrivals_s: np.ndarray, x: np.ndarray, params: dict[str, Any],
                  slo_ms: float) -> tuple[np.ndarray, list[int], dict[str, int]]:
    latency_ms = np.full(len(arrivals_s), np.inf)
    statuses = [0] * len(arrivals_s)
    errors: dict[str, int] = {}

    async def one(i: int, t_sched: float) -> None:
        r = await client.infer(TASK, x[i % len(x)][None, :], params)
        statuses[i] = r.status
        latency_ms[i] = (time.perf_counter() - t_sched) * 1000.0
        if r.status == 0:
            errors[str(r.error)[:120]] = errors.get(str(r.error)[:120], 0) + 1

    await send_on_schedule(list(arrivals_s), time.perf_counter(), one)
    return latency_ms, statuses, errors


def _phase(name: str, latency_ms: np.ndarray, statuses: list[int], errors: dict[str, int], slo_ms: float,
           util: float) -> Phase:
    ok = np.array([s == 200 for s in statuses]) & (latency_ms <= slo_ms)
    counts: dict[str, int] = {}
    for s in statuses:
        counts[str(s)] = counts.get(str(s), 0) + 1
    answered = latency_ms[np.isfinite(latency_ms)]
    return Phase(name, len(statuses), int((~ok).sum()), float((~ok).mean()) if len(ok) else 0.0,
                 float(np.percentile(answered, 50)) if len(answered) else float("inf"),
                 float(np.percentile(answered, 99)) if len(answered) else float("inf"), counts, errors, util)


async def _measure(url: str, inputs_path: Path, output_path: Path, x_online: np.ndarray, rate_qps: float,
                   phase_s: float, slo_ms: float, online_accuracy: float, offline_accuracy: float,
                   job_timeout_s: float, seed: int) -> Measured:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_qps, size=int(rate_qps * phase_s * 2) + 16)
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < phase_s]
    params = {"min_accuracy": online_accuracy, "latency_slo_ms": slo_ms}
    client = V2Client(url, timeout_s=max(slo_ms / 1000.0 * 20, 10.0))
    try:
        for _ in range(5):  # the first query loads the online variant
            await client.infer(TASK, x_online[:1], params)
        # the offline variant is loaded by a small job, outside both phases
        status, job = await asyncio.to_thread(http_json, f"{url}/v2/infaas/offline", "POST", {
            "task": TASK, "min_accuracy": offline_accuracy, "input_path": str(inputs_path.with_name("warm.npy")),
            "output_path": str(output_path.with_name("warm-out.npy"))})  # fmt: skip
        assert status == 202, job
        warm = await asyncio.to_thread(wait_job, url, job["id"], job_timeout_s)
        assert warm["state"] == "done", warm

        # a fresh pool per phase: a keep-alive connection idle past the server's timeout would fail
        await client.close()
        lat_a, st_a, err_a = await _online(client, arrivals, x_online, params, slo_ms)
        without = _phase("without_job", lat_a, st_a, err_a, slo_ms, await asyncio.to_thread(cpu_utilisation, url))

        t0 = time.perf_counter()
        status, job = await asyncio.to_thread(http_json, f"{url}/v2/infaas/offline", "POST", {
            "task": TASK, "min_accuracy": offline_accuracy, "input_path": str(inputs_path),
            "output_path": str(output_path)})  # fmt: skip
        assert status == 202, job
        seen: dict[str, Any] = {"done_after_s": float("inf"), "reasons": set()}

        async def poll() -> None:
            while True:
                _, doc = await client.get_json(f"/v2/infaas/offline/{job['id']}")
                if doc.get("paused_reason"):
                    seen["reasons"].add(doc["paused_reason"])
                if doc["state"] in FINISHED:
                    seen["done_after_s"] = time.perf_counter() - t0
                    return
                await asyncio.sleep(0.1)

        await client.close()
        poller = asyncio.get_running_loop().create_task(poll())
        lat_b, st_b, err_b = await _online(client, arrivals, x_online, params, slo_ms)
        with_job = _phase("with_job", lat_b, st_b, err_b, slo_ms, await asyncio.to_thread(cpu_utilisation, url))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(poller, max(job_timeout_s - (time.perf_counter() - t0), 0.1))
    finally:
        await client.close()
    final = await asyncio.to_thread(wait_job, url, job["id"], 0.0)
    run_s = (final["finished_s"] or float("nan")) - (final["started_s"] or float("nan"))
    return Measured(without, with_job, final, seen["done_after_s"], final["inputs_done"] / run_s if run_s > 0 else 0.0,
                    sorted(seen["reasons"]))


def measure(url: str, workdir: Path, inputs: int = 10000, rate_qps: float = 100.0, phase_s: float = 8.0,
            slo_ms: float = 75.0, online_accuracy: float = 0.95, offline_accuracy: float = 0.5,
            job_timeout_s: float = 60.0, seed: int = 0) -> Measured:
    """Both phases against the server at ``url`` (digits catalog); inputs are written to ``workdir``."""
    from infaas_real.zoo import get_zoo

    x, _ = get_zoo("digits").eval_data()  # type: ignore[misc]
    x = np.ascontiguousarray(x, dtype=np.float32)
    big = x[np.arange(inputs) % len(x)]
    np.save(workdir / "inputs.npy", big)
    np.save(workdir / "warm.npy", x[:4])
    return asyncio.run(_measure(url, workdir / "inputs.npy", workdir / "outputs.npy", x, rate_qps, phase_s, slo_ms,
                                online_accuracy, offline_accuracy, job_timeout_s, seed))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--phase-s", type=float, default=8.0)
    ap.add_argument("--slo-ms", type=float, default=75.0)
    ap.add_argument("--online-accuracy", type=float, default=0.95)
    ap.add_argument("--offline-accuracy", type=float, default=0.5)
    ap.add_argument("--job-timeout-s", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--serve-override", action="append", default=[])
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests" / "real"))
    from server_harness import running_server

    results = []
    for run in range(a.runs):
        with tempfile.TemporaryDirectory() as tmp, running_server([*SERVE, *a.serve_override], Path(tmp)) as srv:
            m = measure(srv.url, Path(tmp), a.inputs, a.rate, a.phase_s, a.slo_ms, a.online_accuracy,
                        a.offline_accuracy, a.job_timeout_s, seed=run)
            y = np.load(Path(tmp) / "outputs.npy") if m.job["state"] == "done" else None
            doc = asdict(m) | {"run": run, "output_shape": None if y is None else list(y.shape)}
            results.append(doc)
            print(json.dumps({k: doc[k] for k in ("run", "without_job", "with_job", "job_done_after_s",
                                                  "inputs_per_s", "paused_reasons", "output_shape")}), flush=True)
    if a.out:
        a.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
