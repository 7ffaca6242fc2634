"""The comparison half of ``infaas-real validate``: rows, decision traces, the figure.

Rows keep one format (``metric``, ``sim``, ``real``, ``difference``, ``kind``, ``tolerance``,
``ok``; ``ok`` is ``None`` for a row reported without a tolerance). Latency, violation and
share rows compare the two backends' query tables; the rows whose metric names contain
"action" compare their decision traces (``actions.csv`` of the simulator, ``GET
/v2/infaas/actions`` of the server): the same kinds on the same variants in the same order,
each action's time within ``action_time_periods`` monitor periods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ActionRow = tuple[float, str, str, int, int, str]
"""(time s, kind, variant, worker, replicas, refusal reason or "")."""

SERVED = ("completed", "late")
VIOLATION = ("late", "dropped")


def sim_trace(trace_arrivals_s: np.ndarray, offset_s: float, path: Path) -> list[str]:
    """The real run's arrivals, shifted by ``offset_s`` (the server clock at the trace's start),
    as the simulator's trace: both backends see the same arrivals on the same clock."""
    path.write_text("arrival_s\n" + "\n".join(f"{t + offset_s:.9f}" for t in trace_arrivals_s) + "\n")
    return ["~trace", f"+trace.path={path}", "+trace.format=arrivals_csv", "+trace.name=validation"]


def frame_stats(df: Any, apps: Sequence[str]) -> dict[str, Any]:
    """p50 / p99 / violation rate and variant shares, overall and per application, of a
    query table as a data frame (``app``, ``status``, ``latency_ms``, ``variant`` columns)."""
    def stats(d: Any) -> dict[str, Any]:
        status = d["status"].astype(str)
        served = status.isin(SERVED)
        admitted = int((status != "rejected").sum())
        lat = d.loc[served, "latency_ms"].to_numpy(dtype=np.float64)
        share = d.loc[served, "variant"].astype(str).value_counts(normalize=True)
        return {"queries": len(d), "violation_rate": float(status.isin(VIOLATION).sum() / admitted) if admitted else 0.0,
                "p50": float(np.median(lat)) if lat.size else math.nan,
                "p99": float(np.quantile(lat, 0.99)) if lat.size else math.nan,
                "latency_ms": np.sort(lat), "share": {str(k): float(v) for k, v in share.items()}}  # fmt: skip

    out = {"all": stats(df)}
    for a in apps:
        out[a] = stats(df[df["app"].astype(str) == a])
    return out


def compare(sim: dict[str, Any], real: dict[str, Any], tol: dict[str, float]) -> list[dict[str, Any]]:
    """Latency, violation and share rows from :func:`frame_stats` of both backends."""
    def rel(a: float, b: float) -> float:
        return abs(b - a) / a if a else math.inf

    rows: list[dict[str, Any]] = []
    for group in sim:
        s, r = sim[group], real.get(group)
        if r is None:
            continue
        label = "" if group == "all" else f" [{group}]"
        checked = group == "all"  # tolerances on the overall figures; per application reported
        rows.append(_row(f"latency p50 (ms){label}", s["p50"], r["p50"], rel(s["p50"], r["p50"]), "rel",
                         tol["p50_rel"] if checked else None))
        rows.append(_row(f"latency p99 (ms){label}", s["p99"], r["p99"], rel(s["p99"], r["p99"]), "rel",
                         tol["p99_rel"] if checked else None))
        rows.append(_row(f"violation rate{label}", s["violation_rate"], r["violation_rate"],
                         abs(r["violation_rate"] - s["violation_rate"]), "abs",
                         tol["violation_abs"] if checked else None))
        if group != "all":
            for v in sorted(set(s["share"]) | set(r["share"])):
                a, b = s["share"].get(v, 0.0), r["share"].get(v, 0.0)
                rows.append(_row(f"share {v}{label}", a, b, abs(b - a), "abs", None))
    return rows


def _row(metric: str, sim: float, real: float, diff: float, kind: str, tol: float | None) -> dict[str, Any]:
    ok = None if tol is None else bool(diff <= tol)
    return {"metric": metric, "sim": float(sim), "real": float(real), "difference": float(diff), "kind": kind,
            "tolerance": tol, "ok": ok}


def read_actions_csv(path: Path) -> list[ActionRow]:
    import csv

    with path.open() as f:
        return [(float(r["time_s"]), r["kind"], r["variant"], int(r["worker"]), int(r["replicas"]), r["refused"])
                for r in csv.DictReader(f)]  # fmt: skip


def write_actions_csv(path: Path, rows: Sequence[ActionRow]) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("time_s", "kind", "variant", "worker", "replicas", "refused"))
        for t, *rest in rows:
            w.writerow((f"{t:.6f}", *rest))


def applied(actions: Sequence[ActionRow], kinds: Sequence[str]) -> list[ActionRow]:
    """The actions of ``kinds`` that were carried out (not refused), in order."""
    return [a for a in actions if a[1] in kinds and not a[5]]


def compare_actions(sim: Sequence[ActionRow], real: Sequence[ActionRow], kinds: Sequence[str], start_s: float,
                    time_tol_s: float, require_autoscaling: bool) -> list[dict[str, Any]]:
    """Rows for the decision traces: the sequence of (kind, variant), each matched action's
    time, refusals, and the autoscaling actions taken once the trace has started."""
    s, r = applied(sim, kinds), applied(real, kinds)
    seq_s, seq_r = [(a[1], a[2]) for a in s], [(a[1], a[2]) for a in r]
    mismatched = sum(1 for a, b in zip(seq_s, seq_r) if a != b) + abs(len(seq_s) - len(seq_r))
    rows = [_row("actions: count", len(s), len(r), abs(len(s) - len(r)), "abs", 0.0),
            _row("actions: positions whose (kind, variant) differ", len(seq_s), len(seq_r), mismatched, "abs", 0.0)]
    for i, (a, b) in enumerate(zip(s, r)):
        same = (a[1], a[2]) == (b[1], b[2])
        label = f"{a[1]} {a[2]}" if same else f"{a[1]} {a[2]} / real {b[1]} {b[2]}"
        rows.append(_row(f"action {i + 1} time (s): {label}", a[0], b[0], abs(a[0] - b[0]), "abs",
                         time_tol_s if same else None))
    late_s = [a for a in s if a[0] >= start_s]
    late_r = [a for a in r if a[0] >= start_s]
    auto = _row("actions after the trace started (autoscaling)", len(late_s), len(late_r),
                abs(len(late_s) - len(late_r)), "abs", None)
    if require_autoscaling:
        auto["ok"] = bool(late_s and late_r)
        auto["tolerance"] = 0.0
    rows.append(auto)
    ref_s = [a for a in sim if a[1] in kinds and a[5]]
    ref_r = [a for a in real if a[1] in kinds and a[5]]
    rows.append(_row("actions refused", len(ref_s), len(ref_r), abs(len(ref_s) - len(ref_r)), "abs", None))
    return rows


def load_waits(actions: Sequence[ActionRow], df: Any, offset_s: float) -> list[tuple[ActionRow, float]]:
    """For each applied load (``load`` / ``load_and_route``): seconds from the action to the
    first batch its variant started after it — the worker slot's start plus the load, as the
    queries saw it. ``df`` is a query table (``variant``, ``start_s``), its clock ``offset_s``
    behind the actions' clock; NaN when no batch of the variant started after it."""
    out = []
    start = df["start_s"].to_numpy(dtype=np.float64) + offset_s
    variant = df["variant"].astype(str).to_numpy()
    for a in actions:
        if a[1] in ("load", "load_and_route") and not a[5]:
            later = start[(variant == a[2]) & (start >= a[0])]
            out.append((a, float(later.min() - a[0]) if later.size else math.nan))
    return out


def load_wait_rows(sim: list[tuple[ActionRow, float]], real: list[tuple[ActionRow, float]]) -> list[dict[str, Any]]:
    """Reported rows: each matched load's wait for its first batch in both backends."""
    rows = []
    for i, ((a, ws), (b, wr)) in enumerate(zip(sim, real)):
        if (a[1], a[2]) == (b[1], b[2]):
            rows.append(_row(f"action load {i + 1} first batch after (s): {a[1]} {a[2]}", ws, wr, abs(wr - ws),
                             "abs", None))
    return rows


def figure(path: Path, sim: dict[str, Any], real: dict[str, Any], sim_actions: Sequence[ActionRow],
           real_actions: Sequence[ActionRow], kinds: Sequence[str], start_s: float, title: str) -> None:
    """Both latency CDFs and both action timelines, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    for stats, label, style in ((sim["all"], "simulated", "-"), (real["all"], "real", "--")):
        lat = stats["latency_ms"]
        if lat.size:
            ax.plot(lat, np.arange(1, lat.size + 1) / lat.size, style, label=f"{label} (p50 {stats['p50']:.1f}, "
                    f"p99 {stats['p99']:.1f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms), from the client's send")
    ax.set_ylabel("fraction of served queries")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    s, r = applied(sim_actions, kinds), applied(real_actions, kinds)
    lanes = sorted({(a[1], a[2]) for a in [*s, *r]})
    y = {k: i for i, k in enumerate(lanes)}
    bx.scatter([a[0] for a in s], [y[(a[1], a[2])] + 0.12 for a in s], marker="o", label="simulated", zorder=3)
    bx.scatter([a[0] for a in r], [y[(a[1], a[2])] - 0.12 for a in r], marker="x", label="real", zorder=3)
    bx.axvline(start_s, color="grey", lw=0.8, ls=":", label="trace starts")
    bx.set_yticks(range(len(lanes)), [f"{k} {v}" for k, v in lanes], fontsize=7)
    bx.set_xlabel("server clock (s)")
    bx.set_title("decision traces", fontsize=9)
    bx.grid(alpha=0.3)
    bx.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_comparison(run_dir: Path, rows: list[dict[str, Any]], facts: dict[str, Any]) -> None:
    """``comparison.csv`` and ``comparison.md`` (``comparison.json`` is written by the caller)."""
    import pandas as pd

    pd.DataFrame(rows).to_csv(run_dir / "comparison.csv", index=False)
    lines = ["# Simulated vs real", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += ["", "![latency CDFs and decision traces](comparison.png)", "",
              "| metric | sim | real | difference | tolerance | ok |", "|---|---:|---:|---:|---:|:--:|"]

    def fmt(r: dict[str, Any], x: float | None) -> str:
        if x is None:
            return ""
        return f"{x:.1%}" if r["kind"] == "rel" else f"{x:.4g}"

    for r in rows:
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "**no**")
        lines.append(f"| {r['metric']} | {r['sim']:.4g} | {r['real']:.4g} | {fmt(r, r['difference'])} | "
                     f"{fmt(r, r['tolerance'])} | {ok} |")
    (run_dir / "comparison.md").write_text("\n".join(lines) + "\n")
