"""``infaas-real validate``: one scenario through the simulator and through the real server.

The scenario (``configs/validate.yaml``): a catalog measured on this machine, the ``local``
cluster, an application mix, a policy (``static`` by default: every application pinned to
one variant with a fixed replica count, so capacity is known), and a Poisson trace at
``load_fraction`` of that capacity. Steps:

1. start ``infaas-real serve`` on a free loopback port (a subprocess), wait until ready;
2. calibrate the serving overhead: ``calibration_queries`` sequential queries at no load;
   overhead = median(client latency - the worker's inference time) — HTTP, parsing,
   policy, IPC and the client itself — unless ``validate.overhead_ms`` fixes it;
3. replay the trace against it (:mod:`infaas_real.replay`), stop the server;
4. run the simulator on the same catalog, cluster, apps, policy, trace and seed as a
   subprocess (``python -m infaas_sim ... hydra.run.dir=<dir>/sim``). The simulator has no
   per-query overhead knob, so the measured overhead is added here, to every simulated
   completed query's latency, and late/violation counts are recomputed against each
   application's SLO (``sim_with_overhead/summary.json``; the simulator's own run is kept in ``sim/``);
5. write ``comparison.csv`` and ``comparison.md``: p50, p99, violation rate, mean accuracy,
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
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.configs import REPO_ROOT
from infaas_core.errors import BackendError, ConfigError
from infaas_core.metrics import (
    COMPLETED,
    DROPPED,
    LATE,
    REJECTED,
    SummaryAccumulator,
    summarize,
    write_results,
)
from infaas_core.model import App, Variant
from infaas_core.workload import generate
from infaas_real.replay import ReplaySettings, _eval_split, _run, replay, wait_ready
from infaas_real.server.client import V2Client
from infaas_real.server.config import build_apps, build_catalog, compose, default_run_dir, section

_STATUS = {"completed": COMPLETED, "late": LATE, "dropped": DROPPED, "rejected": REJECTED}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned_variant(cfg: dict[str, Any], catalog: Catalog, apps: Sequence[App]) -> Variant:
    """The variant under test: ``validate.variant``, else the first application's own pin."""
    name = section(cfg, "validate").get("variant")
    if name:
        return catalog.get(str(name))
    for a in apps:
        pin = a.fixed_variant or a.requirements.variant
        if pin:
            return catalog.get(pin)
    raise ConfigError("validate.variant", "set the variant under test (no application pins one)")


def capacity_qps(v: Variant, replicas: int, overhead_in_service_ms: float) -> float:
    """Batch-1 service rate of the pinned replicas (the load the scenario is scaled against)."""
    return replicas * 1000.0 / (v.batch1_latency_ms + overhead_in_service_ms)


def scenario_overrides(cfg: dict[str, Any], apps: Sequence[App], variant: Variant) -> list[str]:
    """Overrides that give the server and the simulator the same catalog, cluster, apps and
    policy (every application pinned to ``variant``, ``validate.replicas`` replicas)."""
    v = section(cfg, "validate")
    choices = v.get("groups") or {}
    out = [f"{g}={choices[g]}" for g in ("catalog", "cluster", "apps", "policy") if g in choices]
    policy = section(cfg, "policy")
    if "fixed_variants" in policy:
        pins = ",".join(f"'{a.name}':'{variant.name}'" for a in apps)
        out.append(f"policy.fixed_variants={{{pins}}}")
    if "replicas" in policy:
        out.append(f"policy.replicas={int(v.get('replicas', 1))}")
    return [*out, f"seed={int(cfg.get('seed', 0))}"]


def trace_overrides(rate_qps: float, duration_s: float) -> list[str]:
    return ["trace=poisson", f"trace.rate_qps={rate_qps:.6g}", f"trace.duration_s={duration_s:g}"]


def start_server(overrides: list[str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "infaas_real", "serve", *overrides, f"server.port={port}", "server.host=127.0.0.1"]
    log = log_path.open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


async def calibrate_overhead_ms(url: str, target: str, params: dict[str, Any], n: int, ready_timeout_s: float) -> dict[str, float]:
    """Median client latency minus the worker's inference time over ``n`` sequential queries."""
    client = V2Client(url, 4)
    await wait_ready(client, ready_timeout_s)
    xs, _ = _eval_split("digits")
    extra: list[float] = []
    for i in range(n):
        t = time.perf_counter()
        r = await client.infer(target, xs[i % len(xs) : i % len(xs) + 1], params)
        lat = (time.perf_counter() - t) * 1000.0
        if r.status == 200 and i >= n // 10:  # the first tenth warms caches
            extra.append(lat - float(r.parameters["infer_ms"]))
    await client.close()
    if not extra:
        raise BackendError("overhead calibration: no query was answered")
    return {"median_ms": float(np.median(extra)), "p90_ms": float(np.quantile(extra, 0.9)), "queries": float(len(extra))}


def run_simulator(overrides: list[str], run_dir: Path, timeout_s: float) -> None:
    cmd = [sys.executable, "-m", "infaas_sim", *overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BackendError(f"simulator failed (exit {proc.returncode}): {' | '.join(tail)}")


def sim_with_overhead(sim_dir: Path, apps: Sequence[App], catalog: Catalog, overhead_ms: float) -> dict[str, Any]:
    """The simulator's queries with ``overhead_ms`` added to each completed query's latency;
    late recomputed against the application's SLO."""
    import pandas as pd

    base = json.loads((sim_dir / "summary.json").read_text())
    df = pd.read_parquet(sim_dir / "queries.parquet")
    status = df["status"].astype(str).map(_STATUS).to_numpy(dtype=np.int8)
    done = (status == COMPLETED) | (status == LATE)
    lat = df["latency_ms"].to_numpy(dtype=np.float64) + overhead_ms
    slo = df["app"].astype(str).map({a.name: a.requirements.latency_slo_ms for a in apps}).to_numpy(dtype=np.float64)
    status = np.where(done, np.where(lat > slo, LATE, COMPLETED), status).astype(np.int8)
    acc = df["accuracy"].to_numpy(dtype=np.float64)
    summary_acc = SummaryAccumulator()
    summary_acc.add(status, np.where(done, lat, np.nan), acc)
    variants = df.loc[done, "variant"].astype(str).value_counts(normalize=True)
    return summarize(
        summary_acc, policy=base["policy"], trace=base["trace"], seed=base["seed"], backend="sim",
        duration_s=base["duration_s"], cost_usd=base["cost_usd"], wall_s=base["wall_s"],
        exact_latency_ms=lat[done],
        extra={"overhead_ms_added": overhead_ms, "variant_share": {str(k): float(v) for k, v in variants.items()}},
    )  # fmt: skip


def compare(sim: dict[str, Any], real: dict[str, Any], tol: dict[str, float]) -> list[dict[str, Any]]:
    """Rows of the comparison table."""
    def rel(a: float, b: float) -> float:
        return abs(b - a) / a if a else math.inf

    rows: list[dict[str, Any]] = []
    for key, label, kind, limit in (
        ("p50", "latency p50 (ms)", "rel", tol["p50_rel"]),
        ("p99", "latency p99 (ms)", "rel", tol["p99_rel"]),
    ):
        s, r = float(sim["latency_ms"][key]), float(real["latency_ms"][key])
        rows.append({"metric": label, "sim": s, "real": r, "difference": rel(s, r), "kind": kind, "tolerance": limit})
    for key, label, limit in (
        ("violation_rate", "violation rate", tol["violation_abs"]),
        ("mean_accuracy", "mean accuracy (profile)", tol.get("accuracy_abs", 0.01)),
    ):
        s, r = float(sim[key]), float(real[key])
        rows.append({"metric": label, "sim": s, "real": r, "difference": abs(r - s), "kind": "abs", "tolerance": limit})
    s, r = float(sim["throughput_qps"]), float(real["throughput_qps"])
    rows.append({"metric": "throughput (qps)", "sim": s, "real": r, "difference": rel(s, r), "kind": "rel", "tolerance": None})
    shares = sorted(set(sim.get("variant_share", {})) | set(real.get("variant_share", {})))
    for v in shares:
        s, r = float(sim.get("variant_share", {}).get(v, 0.0)), float(real.get("variant_share", {}).get(v, 0.0))
        rows.append({"metric": f"share {v}", "sim": s, "real": r, "difference": abs(r - s), "kind": "abs", "tolerance": None})
    for row in rows:
        row["ok"] = None if row["tolerance"] is None else bool(row["difference"] <= row["tolerance"])
    return rows


def write_comparison(run_dir: Path, rows: list[dict[str, Any]], facts: dict[str, Any]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(run_dir / "comparison.csv", index=False)
    lines = ["# Simulated vs real", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += ["", "| metric | sim | real | difference | tolerance | ok |", "|---|---:|---:|---:|---:|:--:|"]
    for r in rows:
        diff = f"{r['difference']:.1%}" if r["kind"] == "rel" else f"{r['difference']:.4f}"
        tol = "" if r["tolerance"] is None else (f"{r['tolerance']:.0%}" if r["kind"] == "rel" else f"{r['tolerance']:.3f}")
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        lines.append(f"| {r['metric']} | {r['sim']:.4g} | {r['real']:.4g} | {diff} | {tol} | {ok} |")
    (run_dir / "comparison.md").write_text("\n".join(lines) + "\n")


def main(overrides: Sequence[str]) -> int:
    composed = compose("validate", overrides)
    cfg = composed.cfg
    run_dir = (composed.run_dir or default_run_dir("validate")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    v = section(cfg, "validate")
    catalog, apps = build_catalog(cfg), build_apps(cfg)
    variant = pinned_variant(cfg, catalog, apps)
    replicas = int(v.get("replicas", 1))
    fixed_rate = v.get("rate_qps")
    user = [o for o in overrides if not o.startswith(("hydra.", "validate."))]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    scen = [*scenario_overrides(cfg, apps, variant), *_passthrough(user)]
    server = start_server([*scen, *v.get("server_overrides", [])], port, run_dir / "server.log")
    try:
        a0 = apps[0]
        params = {"app": a0.name, "latency_slo_ms": a0.requirements.latency_slo_ms}
        if a0.requirements.min_accuracy > 0:
            params["min_accuracy"] = a0.requirements.min_accuracy
        calib = _run(calibrate_overhead_ms(url, a0.requirements.target, params, int(v["calibration_queries"]), float(v["ready_timeout_s"])))
        overhead_ms = float(v["overhead_ms"]) if v.get("overhead_ms") is not None else calib["median_ms"]
        cap = capacity_qps(variant, replicas, float(v.get("ipc_ms_in_service", 0.0)))
        rate = float(fixed_rate) if fixed_rate else min(float(v["load_fraction"]) * cap, float(v["max_rate_qps"]))
        trace = generate("poisson", rate_qps=rate, duration_s=float(v["duration_s"]), seed=int(cfg.get("seed", 0)))
        settings = ReplaySettings(url=url, ready_timeout_s=float(v["ready_timeout_s"]))
        real = _run(replay(trace, apps, catalog, int(cfg.get("seed", 0)), settings))
    finally:
        stop_server(server)
    write_results(run_dir / "real", real.summary, real.table)
    sim_over = [*scen, *trace_overrides(rate, float(v["duration_s"])), *v.get("sim_overrides", [])]
    run_simulator(sim_over, run_dir / "sim", float(v["sim_timeout_s"]))
    sim = sim_with_overhead(run_dir / "sim", apps, catalog, overhead_ms)
    write_results(run_dir / "sim_with_overhead", sim)
    tol = {k: float(x) for k, x in dict(v["tolerances"]).items()}
    rows = compare(sim, real.summary, tol)
    facts = {
        "variant": f"{variant.name} x{replicas} (batch-1 p50 {variant.batch1_latency_ms:.3f} ms, max_batch {variant.max_batch})",
        "trace": f"poisson {rate:.1f} qps for {float(v['duration_s']):g} s ({len(trace)} queries), seed {cfg.get('seed', 0)}",
        "capacity (batch 1, catalog)": f"{cap:.1f} qps; offered load {rate / cap:.0%} of it",
        "serving overhead added to the simulator": f"{overhead_ms:.3f} ms (calibrated median {calib['median_ms']:.3f} ms, p90 {calib['p90_ms']:.3f} ms)",
        "generator lateness (real)": f"p50 {real.summary['generator_lateness_ms']['p50']:.3f} ms, p99 {real.summary['generator_lateness_ms']['p99']:.3f} ms",
        "accuracy measured on labels (real)": f"{real.summary['accuracy_measured']:.4f}",
        "simulator overrides": " ".join(sim_over),
    }
    write_comparison(run_dir, rows, facts)
    verdict = all(r["ok"] is not False for r in rows)
    print((run_dir / "comparison.md").read_text())
    print(f"validate: {'PASS' if verdict else 'FAIL'} — {run_dir}")
    return 0 if verdict or not v.get("strict", False) else 1


def _passthrough(user: list[str]) -> list[str]:
    """User overrides both backends understand (group choices and their keys, seed)."""
    return [o for o in user if o.split("=", 1)[0].lstrip("+~").split(".")[0] in ("catalog", "cluster", "apps", "policy", "seed")]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
