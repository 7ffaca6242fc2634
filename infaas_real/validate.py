"""``infaas-real validate``: one scenario through the simulator and through the real server.

The scenario (``configs/validate.yaml``): a catalog measured on this machine, the ``local``
cluster, an application mix, a policy (``static`` by default: every application pinned to
one variant with a fixed replica count, so capacity is known), and a Poisson trace at
``load_fraction`` of that capacity. Steps:

1. start ``infaas-real serve`` on a free loopback port (a subprocess), wait until ready;
2. capacity: the smaller of the pinned replicas' batch-1 service rate (catalog) and the HTTP
   front end's capacity — its cores divided by the CPU time server and generator spend per
   query, measured on a light open-loop probe (for the tiny digits models the front end is
   the bottleneck); the offered rate is ``load_fraction`` of it (or ``validate.rate_qps``);
3. calibrate the serving overhead at that rate: a separate Poisson trace (seed + 1,
   ``calibration_s`` long) is replayed and each answer's overhead is kept: client latency
   minus the replica's queue wait minus inference (HTTP, parsing, policy, IPC and the client
   itself — everything the simulator does not model). ``validate.overhead_ms`` fixes it instead;
4. replay the validation trace (seed) against the server, stop the server;
5. run the simulator on the same catalog, cluster, apps, policy, trace and seed as a
   subprocess (``python -m infaas_sim ... hydra.run.dir=<dir>/sim``). The simulator has no
   per-query overhead knob, so the overhead is added here to every simulated completed
   query's latency — a draw from the calibration sample (``overhead: sampled``, seeded) or its
   median (``overhead: median``) — and late/violation counts are recomputed against each
   application's SLO (``sim_with_overhead/summary.json``; the simulator's own run stays in ``sim/``);
6. write ``comparison.csv`` and ``comparison.md``: p50, p99, violation rate, mean accuracy,
   throughput and each variant's share of queries, with the tolerances and a verdict.

Dependency rule: ``infaas_real`` never imports ``infaas_sim``; the simulator runs as a
separate process and is read back through the shared results schema only.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.configs import REPO_ROOT
from infaas_core.control.startup import check_run
from infaas_core.errors import BackendError, ConfigError
from infaas_core.metrics import (
    write_results,
)
from infaas_core.model import App, Variant
from infaas_core.workload import generate
from infaas_real.replay import ReplaySettings, _run, replay
from infaas_real.server.config import (
    build_apps,
    build_catalog,
    build_cluster,
    compose,
    default_run_dir,
    section,
)
from infaas_real.validate_compare import (
    compare,
    in_situ_catalog,
    sim_trace,
    sim_with_overhead,
    write_comparison,
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned_variant(cfg: dict[str, Any], catalog: Catalog, apps: Sequence[App]) -> Variant:
    """The variant under test: ``validate.variant``; else, for the first application, the
    most accurate 1-core CPU variant meeting its accuracy whose batch-1 latency fits its SLO
    (fastest on ties, then the largest max_batch) — one replica of it leaves a core for the server and the generator."""
    name = section(cfg, "validate").get("variant")
    if name:
        return catalog.get(str(name))
    if not apps:
        raise ConfigError("apps", "the application mix is empty")
    req = apps[0].requirements
    if req.variant:
        return catalog.get(req.variant)
    cands = catalog.by_task(req.task) if req.task else catalog.by_model(req.model or "")
    fits = [v for v in cands if v.is_cpu and v.cores == 1 and v.accuracy >= req.min_accuracy
            and v.batch1_latency_ms <= req.latency_slo_ms]  # fmt: skip
    if not fits:
        raise ConfigError("validate.variant", f"no 1-core CPU variant meets {req}; name one")
    best = max(v.accuracy for v in fits)
    # fastest; on ties the largest max_batch (batching absorbs the front end's bursts)
    return min((v for v in fits if v.accuracy == best), key=lambda v: (v.batch1_latency_ms, -v.max_batch, v.name))


def capacity_qps(v: Variant, replicas: int, overhead_in_service_ms: float) -> float:
    """Batch-1 service rate of the pinned replicas (the load the scenario is scaled against)."""
    return replicas * 1000.0 / (v.batch1_latency_ms + overhead_in_service_ms)


def scenario_overrides(cfg: dict[str, Any], apps: Sequence[App], variant: Variant) -> list[str]:
    """Overrides that give the server and the simulator the same catalog, cluster, apps and
    policy (every application pinned to ``variant``, ``validate.replicas`` replicas)."""
    v = section(cfg, "validate")
    choices = v.get("groups") or {}
    out = [f"{g}={choices[g]}" for g in ("catalog", "cluster", "apps", "policy") if choices.get(g)]
    policy = section(cfg, "policy")
    if "fixed_variants" in policy:
        out += [f"++policy.fixed_variants.{a.name}={variant.name}" for a in apps]
    if "replicas" in policy:
        out.append(f"policy.replicas={int(v.get('replicas', 1))}")
    return [*out, f"seed={int(cfg.get('seed', 0))}"]


def start_server(overrides: list[str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "infaas_real", "serve", *overrides, f"server.port={port}", "server.host=127.0.0.1"]
    log = log_path.open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)


def await_server(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float) -> None:
    """Wait until the server answers ready; fail at once (with its log) if it exits."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise BackendError(f"server exited with code {proc.returncode}: {' | '.join(tail)}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise BackendError(f"server at {url} not ready within {timeout_s} s (log: {log_path})")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def front_end_capacity_qps(
    url: str, server_pid: int, apps: Sequence[App], catalog: Catalog, probe_qps: float, probe_s: float, cores: float
) -> tuple[float, float]:
    """Capacity of the HTTP front end: ``cores`` divided by the marginal CPU time the server
    process and this load generator spend per answered query. Two open-loop probes of the
    same length at ``probe_qps`` and three times it; the difference of their CPU time over
    the difference of their answers cancels the fixed costs (setup, idle loop, timers).
    Returns (capacity in qps, CPU ms per query)."""
    import psutil

    server = psutil.Process(server_pid)
    settings = ReplaySettings(url=url, lead_s=0.2, write_queries=False)
    _run(replay(generate("poisson", rate_qps=probe_qps, duration_s=1.0, seed=12344), apps, catalog, 12344, settings))
    cpu_s, answered = [], []  # the warm-up above paid the one-time costs (imports, data, caches)
    for k, rate in enumerate((probe_qps, 3.0 * probe_qps)):
        trace = generate("poisson", rate_qps=rate, duration_s=probe_s, seed=12345 + k)
        c0 = sum(server.cpu_times()[:2]) + time.process_time()
        result = _run(replay(trace, apps, catalog, 12345 + k, settings))
        cpu_s.append(sum(server.cpu_times()[:2]) + time.process_time() - c0)
        answered.append(int(result.summary["completed"]))
    if answered[1] <= answered[0] or cpu_s[1] <= cpu_s[0]:
        raise BackendError(f"front-end probe inconclusive: answers {answered}, CPU s {cpu_s}")
    ms_per_query = (cpu_s[1] - cpu_s[0]) * 1000.0 / (answered[1] - answered[0])
    return cores * 1000.0 / ms_per_query, ms_per_query


def run_simulator(overrides: list[str], run_dir: Path, timeout_s: float) -> None:
    cmd = [sys.executable, "-m", "infaas_sim", *overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BackendError(f"simulator failed (exit {proc.returncode}): {' | '.join(tail)}")


def main(overrides: Sequence[str]) -> int:
    composed = compose("validate", overrides)
    cfg = composed.cfg
    run_dir = (composed.run_dir or default_run_dir("validate")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    v = section(cfg, "validate")
    seed = int(cfg.get("seed", 0))
    catalog, apps = build_catalog(cfg), build_apps(cfg)
    check_run(catalog, build_cluster(cfg), apps, section(cfg, "policy"))  # before the server starts
    variant = pinned_variant(cfg, catalog, apps)
    replicas = int(v.get("replicas", 1))
    duration_s = float(v["duration_s"])
    user = [o for o in overrides if not o.startswith(("hydra.", "validate."))]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    scen = [*scenario_overrides(cfg, apps, variant), *_passthrough(user)]
    pin = _pinning(v)
    server = start_server([*scen, *pin.server_overrides, *v.get("server_overrides", [])], port, run_dir / "server.log")
    if pin.client:
        os.sched_setaffinity(0, pin.client)
    ready_s = float(v["ready_timeout_s"])
    try:
        await_server(server, url, run_dir / "server.log", ready_s)
        catalog_cap = capacity_qps(variant, replicas, float(v.get("ipc_ms_in_service", 0.0)))
        cpu_ms = math.nan
        if v.get("capacity_qps"):
            measured = float(v["capacity_qps"])
        else:
            fe_cores = float(len(set(pin.client) | set(pin.server))) if pin.client else float(
                max(1, (os.cpu_count() or 1) - replicas * variant.cores))
            measured, cpu_ms = front_end_capacity_qps(
                url, server.pid, apps, catalog, float(v["probe_qps"]), float(v["probe_s"]), fe_cores)
        cap = min(catalog_cap, measured)
        rate = float(v["rate_qps"]) if v.get("rate_qps") else float(v["load_fraction"]) * cap
        settings = ReplaySettings(url=url, ready_timeout_s=ready_s, write_queries=True)
        if v.get("overhead_ms") is not None:
            overhead = np.array([float(v["overhead_ms"])])
        else:
            calib_trace = generate("poisson", rate_qps=rate, duration_s=float(v["calibration_s"]), seed=seed + 1)
            calib = _run(replay(calib_trace, apps, catalog, seed + 1, settings))
            overhead = calib.overhead_ms
            if overhead.size == 0:
                raise BackendError("overhead calibration: no query was answered")
        trace = generate("poisson", rate_qps=rate, duration_s=duration_s, seed=seed)
        real = _run(replay(trace, apps, catalog, seed, settings))
    finally:
        stop_server(server)
    write_results(run_dir / "real", real.summary, real.table)
    offset_s = variant.load_latency_ms / 1000.0 + float(v["sim_warmup_margin_s"])
    sim_trace_over = sim_trace(trace.arrivals_s, offset_s, run_dir / "trace_arrivals.csv")
    profile_note = "the catalog as profiled"
    sim_catalog: list[str] = []
    if str(v.get("service_profile", "catalog")) == "in_situ":
        if v.get("overhead_ms") is not None:
            raise ConfigError("validate.service_profile", "in_situ needs the calibration run (overhead_ms unset)")
        cat_path, points = in_situ_catalog(catalog, variant, calib.infer_ms, calib.batch,
                                           int(v["in_situ_min_samples"]), run_dir / "catalog_in_situ.csv")  # fmt: skip
        sim_catalog = ["~catalog", f"+catalog.path={cat_path}"]
        profile_note = (f"in-situ (worker inference times of the calibration run): batch-1 p50 "
                        f"{points[min(points)][0]:.3f} ms vs profiled {variant.batch1_latency_ms:.3f} ms")  # fmt: skip
    sim_over = [*[o for o in scen if not (sim_catalog and o.split("=")[0].lstrip("+~") in ("catalog", "catalog.path"))],
                *sim_catalog, *sim_trace_over, *v.get("sim_overrides", [])]  # fmt: skip
    run_simulator(sim_over, run_dir / "sim", float(v["sim_timeout_s"]))
    mode = str(v.get("overhead", "sampled"))
    sim = sim_with_overhead(run_dir / "sim", apps, overhead, mode, seed, duration_s)
    write_results(run_dir / "sim_with_overhead", sim)
    tol = {k: float(x) for k, x in dict(v["tolerances"]).items()}
    rows = compare(sim, real.summary, tol)
    profiled_rows = None
    if sim_catalog:  # the same run on the catalog as profiled, for the record
        prof_over = [*scen, *sim_trace_over, *v.get("sim_overrides", [])]
        run_simulator(prof_over, run_dir / "sim_profiled", float(v["sim_timeout_s"]))
        prof = sim_with_overhead(run_dir / "sim_profiled", apps, overhead, mode, seed, duration_s)
        write_results(run_dir / "sim_profiled_with_overhead", prof)
        profiled_rows = compare(prof, real.summary, tol)
        if [r["metric"] for r in profiled_rows] != [r["metric"] for r in rows]:
            profiled_rows = None
    lateness = real.summary["generator_lateness_ms"]
    facts = {
        "variant": f"{variant.name} x{replicas} (batch-1 p50 {variant.batch1_latency_ms:.3f} ms, max_batch {variant.max_batch})",
        "trace": f"poisson {rate:.1f} qps for {duration_s:g} s ({len(trace)} queries), seed {seed}",
        "capacity": f"{cap:.0f} qps = min(replica batch-1 capacity from the catalog {catalog_cap:.0f}, "
        f"front end {measured:.0f} = its cores / {cpu_ms:.3f} marginal CPU ms per query of server + generator); "
        f"offered load {rate / cap:.0%}",
        "serving overhead added to the simulator": f"{mode} from {overhead.size} calibration answers "
        f"(median {np.median(overhead):.3f} ms, p99 {np.quantile(overhead, 0.99):.3f} ms)",
        "service times in the simulator": profile_note,
        "generator lateness (real)": f"p50 {lateness['p50']:.3f} ms, p99 {lateness['p99']:.3f} ms",
        "accuracy measured on labels (real)": f"{real.summary['accuracy_measured']:.4f}",
        "simulator overrides": " ".join(sim_over),
    }
    write_comparison(run_dir, rows, facts, profiled_rows)
    (run_dir / "comparison.json").write_text(json.dumps({"facts": facts, "rows": rows}, indent=2) + "\n")
    verdict = all(r["ok"] is not False for r in rows)
    print((run_dir / "comparison.md").read_text())
    print(f"validate: {'PASS' if verdict else 'FAIL'} — {run_dir}")
    return 0 if verdict or not v.get("strict", False) else 1


@dataclass(frozen=True, slots=True)
class _Pinning:
    client: tuple[int, ...]
    server: tuple[int, ...]
    server_overrides: list[str]


def _pinning(v: dict[str, Any]) -> _Pinning:
    """Cores for client, server and worker (``validate.cpus``), when the machine has them all:
    the worker gets its own core so its inference time is the profile's, not the time it
    shares a core with the HTTP front end."""
    spec = v.get("cpus") or {}
    have = os.sched_getaffinity(0)
    want = {int(c) for part in ("client", "server", "worker") for c in (spec.get(part) or [])}
    if not spec or not want <= have:
        return _Pinning((), (), [])
    fmt = lambda cs: "[" + ",".join(str(int(c)) for c in cs) + "]"  # noqa: E731
    return _Pinning(
        tuple(int(c) for c in spec.get("client") or ()),
        tuple(int(c) for c in spec.get("server") or ()),
        [f"server.cpus={fmt(spec['server'])}", f"executor.cpus={fmt(spec['worker'])}"],
    )


def _passthrough(user: list[str]) -> list[str]:
    """User overrides both backends understand (group choices and their keys, seed)."""
    return [o for o in user if o.split("=", 1)[0].lstrip("+~").split(".")[0] in ("catalog", "cluster", "apps", "policy", "seed")]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
