"""The table ``infaas-sim-report`` prints: per scenario, the policies side by side, then
INFaaS against each other policy; with several scenarios, a closing summary of the ratios
(mean and max over scenarios), which is how the paper states its headline numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infaas_sim.report_table import (
    RATIOS,
    _as_floats,
    _number,
    ratios_vs_reference,
    scenario_groups,
    seed_means,
)


def _fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def _fmt_pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _fmt_ms(x: float) -> str:
    return f"{x:,.1f}"


def _fmt_usd(x: float) -> str:
    return f"${x:,.4f}" if abs(x) < 10 else f"${x:,.2f}"


# (label, column, formatter) of the rows printed for each scenario
TABLE_ROWS: tuple[tuple[str, str, Any], ...] = (
    ("queries", "queries", _fmt_int),
    ("rejected (no variant fits)", "rejected", _fmt_int),
    ("SLO violation rate", "violation_rate", _fmt_pct),
    ("  late / dropped", "", None),  # then one row per application
    ("latency p50 (ms)", "latency_p50_ms", _fmt_ms),
    ("latency p99 (ms)", "latency_p99_ms", _fmt_ms),
    ("throughput (qps)", "throughput_qps", _fmt_ms),
    ("goodput (qps)", "goodput_qps", _fmt_ms),
    ("mean accuracy", "mean_accuracy", _fmt_pct),
    ("cost (USD)", "cost_usd", _fmt_usd),
    ("cost per 1M queries (USD)", "cost_per_million_queries", _fmt_usd),
    ("instance cost (USD, paper §6.2)", "cost_instance_usd", _fmt_usd),
)


def _cell(value: Any, fmt: Any) -> str:
    x = _number(value)
    return "-" if x is None or math.isnan(x) else str(fmt(x))


def _fmt_ratio(x: float) -> str:
    if math.isnan(x):
        return "-"
    return "inf" if math.isinf(x) else f"{x:.2f}x"


# how each ratio of report_table.RATIOS is labelled in the printed table
RATIO_LABELS: dict[str, str] = {
    "cost_saving": "cost saving (cost / infaas cost)",
    "instance_cost_saving": "instance-cost saving (§6.2 metric)",
    "fewer_violations": "fewer SLO violations (rate / infaas rate)",
    "goodput_gain": "goodput gain (infaas / goodput)",
    "throughput_gain": "throughput gain (infaas / throughput)",
}


def _render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return lines


def _scenario_title(key: dict[str, Any], rows: pd.DataFrame) -> str:
    parts = [f"trace={key['trace']}", f"load={key['load_qps']:g} qps"]
    parts += [f"{c}={key[c]}" for c in ("cluster", "apps", "catalog") if key[c]]
    if key["variation"]:
        parts.append(str(key["variation"]))
    seeds = rows["seed"].nunique()
    duration = rows["duration_s"].iloc[0]
    warmup = float(rows["warmup_s"].iloc[0]) if "warmup_s" in rows and pd.notna(rows["warmup_s"].iloc[0]) else 0.0
    after = f" after a {warmup:g} s warm-up" if warmup > 0 else ""
    parts.append(f"{seeds} seed{'s' if seeds != 1 else ''} x {duration:g} s simulated{after}")
    return "  ".join(parts)


def _per_app_rows(columns: list[str], m: dict[str, dict[str, float]], policies: list[str]) -> list[list[str]]:
    """Violation rate of each application (the simulator's ``per_app`` summary extra)."""
    rows = []
    for col in columns:
        if col.startswith("per_app.") and col.endswith(".violation_rate"):
            app = col[len("per_app."):-len(".violation_rate")]
            slo = m[policies[0]].get(f"per_app.{app}.slo_ms", math.nan)
            label = f"  {app}" + ("" if math.isnan(slo) else f" (SLO {slo:g} ms)")
            rows.append([label] + [
                "all rejected" if m[p].get(f"per_app.{app}.queries", 0) > 0
                and m[p].get(f"per_app.{app}.rejected") == m[p].get(f"per_app.{app}.queries")
                else _cell(m[p][col], _fmt_pct) for p in policies
            ])
    return rows


def _peak_worker_rows(columns: list[str], m: dict[str, dict[str, float]], policies: list[str]) -> list[list[str]]:
    """Peak number of workers of each instance type (the ``peak_workers`` summary extra)."""
    rows = []
    for col in columns:
        if col.startswith("peak_workers.") and any(m[p][col] > 0 for p in policies):
            rows.append([f"peak workers {col[len('peak_workers.'):]}"]
                        + [_cell(m[p][col], lambda x: f"{x:g}") for p in policies])
    return rows


# (label, column, formatter) of the offline rows (runs with sim.offline.jobs; docs/offline.md)
OFFLINE_ROWS: tuple[tuple[str, str, Any], ...] = (
    ("offline inputs done", "offline.inputs_done", _fmt_int),
    ("offline jobs finished", "offline.jobs_finished", _fmt_int),
    ("offline completion (s, slowest job)", "offline.completion_s", _fmt_ms),
    ("offline busy replica-s", "offline.busy_replica_s", _fmt_ms),
    ("offline cost share", "offline.cost_share", _fmt_pct),
    ("offline paused (s)", "offline.paused_s", _fmt_ms),
)


def _offline_rows(columns: list[str], m: dict[str, dict[str, float]], policies: list[str]) -> list[list[str]]:
    """The offline summary figures, when the runs had offline jobs."""
    return [[label] + [_cell(m[p].get(col, math.nan), fmt) for p in policies]
            for label, col, fmt in OFFLINE_ROWS if col in columns]


def format_scenario(key: dict[str, Any], rows: pd.DataFrame) -> list[str]:
    """The block printed for one scenario: policies side by side, then ratios vs infaas."""
    means = seed_means(rows)
    m = _as_floats(means)
    policies = list(m)
    table: list[list[str]] = []
    for label, col, fmt in TABLE_ROWS:
        if fmt is None:
            table.append([label] + [f"{_cell(m[p]['late'], _fmt_int)} / {_cell(m[p]['dropped'], _fmt_int)}"
                                    for p in policies])
        elif col in means.columns:
            table.append([label] + [_cell(m[p][col], fmt) for p in policies])
        if fmt is None:  # after "late / dropped"
            table += _per_app_rows(list(means.columns), m, policies)
    table += _peak_worker_rows(list(means.columns), m, policies)
    table += _offline_rows(list(means.columns), m, policies)
    lines = [f"== {_scenario_title(key, rows)}", *_render(["", *policies], table)]
    ratios = ratios_vs_reference(rows)
    if len(ratios):
        others = list(ratios["policy"])
        ratio_rows = [[RATIO_LABELS[name]] + [_fmt_ratio(float(x)) for x in ratios[name]] for _, name, _ in RATIOS]
        ratio_rows.append(["accuracy difference (infaas - policy)"]
                          + [_cell(x, lambda v: f"{v:+.1f} pts") for x in ratios["accuracy_diff_pts"]])
        lines += ["", "INFaaS against each policy (> 1x favours INFaaS):"]
        lines += _render(["", *others], ratio_rows)
    return lines


def format_across_scenarios(df: pd.DataFrame) -> list[str]:
    """Mean and max of each ratio over scenarios, per policy (empty with one scenario)."""
    ratios = ratios_vs_reference(df)
    if not len(ratios) or ratios.groupby("policy").size().max() < 2:
        return []
    policies = list(dict.fromkeys(ratios["policy"]))
    table = []
    for _, name, _ in RATIOS:
        cells = []
        for p in policies:
            vals = ratios.loc[ratios["policy"] == p, name].astype(float)
            finite = vals[np.isfinite(vals)]
            mean = float(finite.mean()) if len(finite) else math.nan
            cells.append(f"{_fmt_ratio(mean)} / {_fmt_ratio(float(vals.max()))}")
        table.append([RATIO_LABELS[name], *cells])
    n = ratios.groupby("policy").size().max()
    return [f"== across {n} scenarios: INFaaS against each policy, mean / max over scenarios",
            *_render(["", *policies], table)]


def format_report(df: pd.DataFrame, root: Path) -> str:
    n_pol = df["policy"].nunique()
    groups = scenario_groups(df)
    wall = df["wall_s"].sum() if "wall_s" in df else math.nan
    head = (f"INFaaS-py report: {len(df)} run{'s' if len(df) != 1 else ''} under {root} "
            f"({n_pol} polic{'ies' if n_pol != 1 else 'y'}, {len(groups)} scenario"
            f"{'s' if len(groups) != 1 else ''}; {wall:,.1f} s of simulator wall time)")
    lines = [head, "Values are means over seeds.", ""]
    for key, rows in groups:
        lines += format_scenario(key, rows)
        lines.append("")
    lines += format_across_scenarios(df)
    return "\n".join(lines).rstrip() + "\n"
