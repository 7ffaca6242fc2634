"""Pieces of ``infaas-real validate`` that work on results, not on processes: the in-situ
service profile, the simulator's trace, the serving overhead added to simulated queries, and
the comparison table. See :mod:`infaas_real.validate` for the procedure."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.errors import BackendError, ConfigError
from infaas_core.metrics import COMPLETED, DROPPED, LATE, REJECTED, SummaryAccumulator, summarize
from infaas_core.model import App, Variant

_STATUS = {"completed": COMPLETED, "late": LATE, "dropped": DROPPED, "rejected": REJECTED}


def in_situ_catalog(catalog: Catalog, variant: Variant, infer_ms: np.ndarray, batch: np.ndarray,
                    min_samples: int, path: Path) -> tuple[Path, dict[int, tuple[float, float]]]:
    """A copy of the profile table where ``variant``'s latencies are those its worker showed
    while serving (p50/p99 of the inference time per batch size with ``min_samples`` or more
    answers); every other row is kept as profiled."""
    import pandas as pd

    df = pd.read_csv(catalog.source_path)
    points: dict[int, tuple[float, float]] = {}
    for b in np.unique(batch):
        ms = infer_ms[batch == b]
        if ms.size >= min_samples and 1 <= b <= variant.max_batch:
            points[int(b)] = (float(np.median(ms)), float(np.quantile(ms, 0.99)))
    if not points:
        raise BackendError(f"in-situ profile: fewer than {min_samples} answers at every batch size")
    mine = df[df["variant"] == variant.name].iloc[:1]
    rows = [mine.assign(batch=b, latency_p50_ms=p50, latency_p99_ms=p99,
                        source=f"measured:in-server:{len(infer_ms)} answers") for b, (p50, p99) in sorted(points.items())]  # fmt: skip
    out = pd.concat([df[df["variant"] != variant.name], *rows], ignore_index=True)
    out.to_csv(path, index=False)
    return path, points


def sim_trace(trace_arrivals_s: np.ndarray, offset_s: float, path: Path) -> list[str]:
    """The real run's exact arrivals, shifted by ``offset_s``, as the simulator's trace.

    The real server loads the pinned replicas before the trace starts; the simulator loads
    them at its time 0 (taking their load latency). Shifting the same arrivals past the
    loads gives both backends the same arrival sequence into ready replicas."""
    path.write_text("arrival_s\n" + "\n".join(f"{t + offset_s:.9f}" for t in trace_arrivals_s) + "\n")
    return ["~trace", f"+trace.path={path}", "+trace.format=arrivals_csv", "+trace.name=poisson"]


def sim_with_overhead(
    sim_dir: Path, apps: Sequence[App], overhead_ms: np.ndarray, mode: str, seed: int, duration_s: float
) -> dict[str, Any]:
    """The simulator's queries with the serving overhead added to each completed query's
    latency (a seeded draw from ``overhead_ms``, or its median); late recomputed against the
    application's SLO."""
    import pandas as pd

    base = json.loads((sim_dir / "summary.json").read_text())
    df = pd.read_parquet(sim_dir / "queries.parquet")
    status = df["status"].astype(str).map(_STATUS).to_numpy(dtype=np.int8)
    done = (status == COMPLETED) | (status == LATE)
    if mode == "sampled":
        added = np.random.default_rng(seed).choice(overhead_ms, size=len(df))
    elif mode == "median":
        added = np.full(len(df), float(np.median(overhead_ms)))
    else:
        raise ConfigError("validate.overhead", f"'sampled' or 'median', got {mode!r}")
    lat = df["latency_ms"].to_numpy(dtype=np.float64) + added
    slo = df["app"].astype(str).map({a.name: a.requirements.latency_slo_ms for a in apps}).to_numpy(dtype=np.float64)
    status = np.where(done, np.where(lat > slo, LATE, COMPLETED), status).astype(np.int8)
    acc = df["accuracy"].to_numpy(dtype=np.float64)
    summary_acc = SummaryAccumulator()
    summary_acc.add(status, np.where(done, lat, np.nan), acc)
    variants = df.loc[done, "variant"].astype(str).value_counts(normalize=True)
    return summarize(
        summary_acc, policy=base["policy"], trace=base["trace"], seed=base["seed"], backend="sim",
        duration_s=duration_s, cost_usd=base["cost_usd"], wall_s=base["wall_s"],
        exact_latency_ms=lat[done],
        extra={"overhead_ms_added": {"mode": mode, "median": float(np.median(overhead_ms)),
                                      "p99": float(np.quantile(overhead_ms, 0.99))},
               "variant_share": {str(k): float(v) for k, v in variants.items()}},
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


def write_comparison(
    run_dir: Path, rows: list[dict[str, Any]], facts: dict[str, Any], profiled: list[dict[str, Any]] | None = None
) -> None:
    """``comparison.csv`` (the verdict rows; ``sim_profiled`` = the simulator on the catalog as
    profiled, when the verdict used the in-situ profile) and ``comparison.md``."""
    import pandas as pd

    table = pd.DataFrame(rows)
    if profiled:
        table["sim_profiled"] = [r["sim"] for r in profiled]
        table["difference_profiled"] = [r["difference"] for r in profiled]
    table.to_csv(run_dir / "comparison.csv", index=False)
    lines = ["# Simulated vs real", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    head = "| metric | sim | real | difference | tolerance | ok |"
    rule = "|---|---:|---:|---:|---:|:--:|"
    if profiled:
        head += " sim, profiled catalog | difference |"
        rule += "---:|---:|"
    lines += ["", head, rule]

    def diff(r: dict[str, Any]) -> str:
        return f"{r['difference']:.1%}" if r["kind"] == "rel" else f"{r['difference']:.4f}"

    for i, r in enumerate(rows):
        tol = "" if r["tolerance"] is None else (f"{r['tolerance']:.0%}" if r["kind"] == "rel" else f"{r['tolerance']:.3f}")
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        line = f"| {r['metric']} | {r['sim']:.4g} | {r['real']:.4g} | {diff(r)} | {tol} | {ok} |"
        if profiled:
            line += f" {profiled[i]['sim']:.4g} | {diff(profiled[i])} |"
        lines.append(line)
    (run_dir / "comparison.md").write_text("\n".join(lines) + "\n")
