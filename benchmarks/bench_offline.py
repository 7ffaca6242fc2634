"""An offline job beside online load on the real server, measured in one run.

    .venv/bin/python benchmarks/bench_offline.py [--inputs 10000] [--rate 100] [--phase-s 6]
        [--slo-ms 75] [--online-target offline_variant|task] [--online-accuracy 0.95]
        [--offline-accuracy 0.5] [--runs 1] [--serve-override KEY=VALUE ...] [--out offline.json]

Starts ``infaas-real serve`` (digits catalog, loopback). A 4-input offline job first loads the
offline variant and a few online queries load the online one, so no load falls inside a
phase. Then the same open-loop online schedule (Poisson arrivals at ``--rate`` queries/s for
``--phase-s`` seconds, one seeded draw used for both phases) runs twice:

- phase *with*: an offline job of ``--inputs`` 64-feature digits inputs is submitted at its
  start (``POST /v2/infaas/offline``) and polled until done;
- phase *without*: online queries only (second, so the offline instance loaded by the warm-up
  is surely still there for the job).

``--online-target offline_variant`` (the default) sends the online queries to the offline
job's own variant: one instance serves both, and the executor's priority rule (online first, a
running offline batch finishes) is what keeps online latency; ``task`` lets the policy choose
the online variant by task and accuracy (another instance: only the CPU and the server's event
loop are shared).

An online query violates when it is not answered 200 within ``--slo-ms`` of its scheduled
time. Per phase: queries, violations and their rate, p50/p99 of the answer time and of the
server's ``queue_ms`` (waiting for a replica), the worker's CPU utilisation as the policy saw it
at the phase's end (offline batches count in it, as in the original); for the job: when it was
done (seconds after its phase started), its pauses and inputs per second. Every run is bounded
in time (a phase lasts ``--phase-s``; the job is given at most ``--job-timeout-s``).
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from infaas_real.replay import send_on_schedule  # noqa: E402
from infaas_real.server.client import V2Client, call_json  # noqa: E402

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
    p50_ms: float  # answer time from the scheduled arrival
    p99_ms: float
    queue_p50_ms: float  # the server's queue_ms: waiting for a replica (answered queries)
    queue_p99_ms: float
    statuses: dict[str, int]  # HTTP status -> queries ("0": no answer: a connection error or the client's timeout)
    errors: dict[str, int]  # "status: error" of the queries not answered 200 -> count
    cpu_utilisation: float  # the worker's, as the policy saw it when the phase ended


@dataclass(frozen=True, slots=True)
class Measured:
    online_model: str  # what the online queries named (the offline variant, or the task)
    without_job: Phase
    with_job: Phase
    job: dict[str, Any]  # the job's final status
    job_done_after_s: float  # seconds from the start of the "with" phase until the job was seen done (inf: not)
    inputs_per_s: float  # inputs / (finished_s - started_s) on the server's clock
    paused_reasons: list[str]  # distinct pause reasons seen while polling
    server: dict[str, Any]  # at the end: variants given up (unservable), refused actions, replicas killed as hung


def http_json(url: str, method: str = "GET", body: Any = None, timeout_s: float = 30.0) -> tuple[int, Any]:
    return call_json(url, method, body, timeout_s)


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


async def _online(client: V2Client, model: str, arrivals_s: np.ndarray, x: np.ndarray, params: dict[str, Any],
                  ) -> tuple[np.ndarray, np.ndarray, list[int], dict[str, int]]:
    latency_ms = np.full(len(arrivals_s), np.inf)
    queue_ms = np.full(len(arrivals_s), np.nan)
    statuses = [0] * len(arrivals_s)
    errors: dict[str, int] = {}

    async def one(i: int, t_sched: float) -> None:
        r = await client.infer(model, x[i % len(x)][None, :], params)
        statuses[i] = r.status
        latency_ms[i] = (time.perf_counter() - t_sched) * 1000.0
        if r.status == 200:
            queue_ms[i] = float(r.parameters.get("queue_ms", np.nan))
        else:
            why = f"{r.status}: {str(r.error)[:120]}"
            errors[why] = errors.get(why, 0) + 1

    await send_on_schedule(list(arrivals_s), time.perf_counter(), one)
    return latency_ms, queue_ms, statuses, errors


def _phase(name: str, run: tuple[np.ndarray, np.ndarray, list[int], dict[str, int]], slo_ms: float,
           util: float) -> Phase:
    latency_ms, queue_ms, statuses, errors = run
    ok = np.array([s == 200 for s in statuses]) & (latency_ms <= slo_ms)
    counts: dict[str, int] = {}
    for s in statuses:
        counts[str(s)] = counts.get(str(s), 0) + 1
    answered = latency_ms[np.isfinite(latency_ms)]
    q = queue_ms[np.isfinite(queue_ms)]

    def pct(a: np.ndarray, k: float) -> float:
        return float(np.percentile(a, k)) if len(a) else float("inf")

    return Phase(name, len(statuses), int((~ok).sum()), float((~ok).mean()) if len(ok) else 0.0,
                 pct(answered, 50), pct(answered, 99), pct(q, 50), pct(q, 99), counts, errors, util)


async def _submit(url: str, body: dict[str, Any]) -> dict[str, Any]:
    status, job = await asyncio.to_thread(http_json, f"{url}/v2/infaas/offline", "POST", body)
    assert status == 202, job
    return dict(job)


async def _measure(url: str, inputs_path: Path, output_path: Path, x_online: np.ndarray, rate_qps: float,
                   phase_s: float, slo_ms: float, online_target: str, online_accuracy: float,
                   offline_accuracy: float, job_timeout_s: float, seed: int) -> Measured:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate_qps, size=int(rate_qps * phase_s * 2) + 16)
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < phase_s]
    # the offline variant is loaded by a small job, before both phases
    job = await _submit(url, {"task": TASK, "min_accuracy": offline_accuracy,
                              "input_path": str(inputs_path.with_name("warm.npy")),
                              "output_path": str(output_path.with_name("warm-out.npy"))})
    warm = await asyncio.to_thread(wait_job, url, job["id"], job_timeout_s)
    assert warm["state"] == "done", warm
    if online_target == "offline_variant":  # online and offline share one instance (and its queue)
        model, params = str(warm["variant"]), {"latency_slo_ms": slo_ms}
    else:  # the policy picks the online variant for the task (another instance, on another core)
        model, params = TASK, {"min_accuracy": online_accuracy, "latency_slo_ms": slo_ms}
    client = V2Client(url, timeout_s=max(slo_ms / 1000.0 * 20, 10.0))
    try:
        for _ in range(5):  # the first query may load the online variant
            await client.infer(model, x_online[:1], params)
        # "with" first, while the warm instance is surely loaded; a fresh client pool per phase
        t0 = time.perf_counter()
        job = await _submit(url, {"task": TASK, "min_accuracy": offline_accuracy, "input_path": str(inputs_path),
                                  "output_path": str(output_path)})  # fmt: skip
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
        run_b = await _online(client, model, arrivals, x_online, params)
        with_job = _phase("with_job", run_b, slo_ms, await asyncio.to_thread(cpu_utilisation, url))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(poller, max(job_timeout_s - (time.perf_counter() - t0), 0.1))
        await client.close()
        run_a = await _online(client, model, arrivals, x_online, params)
        without = _phase("without_job", run_a, slo_ms, await asyncio.to_thread(cpu_utilisation, url))
    finally:
        await client.close()
    final = await asyncio.to_thread(wait_job, url, job["id"], 0.0)
    _, snap = await asyncio.to_thread(http_json, f"{url}/v2/infaas/state")
    server = {"unservable": snap.get("unservable", {}), "refused_actions": snap.get("refused_actions", {}),
              "hung": sum(len(i.get("hung", [])) for w in snap["workers"] for i in w["instances"])}
    run_s = (final["finished_s"] or float("nan")) - (final["started_s"] or float("nan"))
    return Measured(model, without, with_job, final, seen["done_after_s"],
                    final["inputs_done"] / run_s if run_s > 0 else 0.0, sorted(seen["reasons"]), server)


def measure(url: str, workdir: Path, inputs: int = 10000, rate_qps: float = 100.0, phase_s: float = 6.0,
            slo_ms: float = 75.0, online_target: str = "offline_variant", online_accuracy: float = 0.95,
            offline_accuracy: float = 0.5, job_timeout_s: float = 60.0, seed: int = 0) -> Measured:
    """Both phases against the server at ``url`` (digits catalog); inputs are written to ``workdir``.
    ``online_target``: ``offline_variant`` (online queries name the offline job's variant: one
    shared instance, the executor's priority rule decides) or ``task`` (by task and
    ``online_accuracy``: the policy's variant)."""
    from infaas_real.zoo import get_zoo

    x, _ = get_zoo("digits").eval_data()  # type: ignore[misc]
    x = np.ascontiguousarray(x, dtype=np.float32)
    big = x[np.arange(inputs) % len(x)]
    np.save(workdir / "inputs.npy", big)
    np.save(workdir / "warm.npy", x[:4])
    return asyncio.run(_measure(url, workdir / "inputs.npy", workdir / "outputs.npy", x, rate_qps, phase_s, slo_ms,
                                online_target, online_accuracy, offline_accuracy, job_timeout_s, seed))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--phase-s", type=float, default=6.0)
    ap.add_argument("--slo-ms", type=float, default=75.0)
    ap.add_argument("--online-target", choices=("offline_variant", "task"), default="offline_variant")
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
            m = measure(srv.url, Path(tmp), a.inputs, a.rate, a.phase_s, a.slo_ms, a.online_target,
                        a.online_accuracy, a.offline_accuracy, a.job_timeout_s, seed=run)
            y = np.load(Path(tmp) / "outputs.npy") if m.job["state"] == "done" else None
            doc = asdict(m) | {"run": run, "output_shape": None if y is None else list(y.shape)}
            results.append(doc)
            print(json.dumps({k: doc[k] for k in ("run", "online_model", "without_job", "with_job", "job_done_after_s",
                                                  "inputs_per_s", "paused_reasons", "server", "output_shape")}),
                  flush=True)
    if a.out:
        a.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
