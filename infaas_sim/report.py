"""``infaas-sim-report <dir> [--out DIR]``: one table and the standard figures for a sweep.

Gathers every ``summary.json`` under ``<dir>`` (a Hydra multirun directory, a single run
directory, or any tree of them) together with what each run's ``.hydra/`` files say about
it (the config-group choices, the overrides, the resolved config), and writes:

- ``<out>/summary.csv`` and ``<out>/summary.parquet``: one row per run, the results schema
  flattened (``latency_ms.p99`` becomes ``latency_p99_ms``) beside the run's policy, trace,
  load, seed and the other choices;
- a readable table on stdout: for each scenario, the policies side by side (means over
  seeds), then each baseline against ``infaas`` as ratios where > 1 favours INFaaS;
- ``<out>/figures/``: see :mod:`infaas_sim.report_figures`.

``<out>`` defaults to ``<dir>``. Errors (no such directory, no summaries, an unreadable
summary) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from infaas_core.errors import InputError

SUMMARY_FILE = "summary.json"
# policies first in this order in every table and figure; the rest alphabetically
POLICY_ORDER: tuple[str, ...] = (
    "infaas", "infaas_no_model_autoscale", "infaas_cost", "clipper_plus", "sagemaker_plus", "static",
)  # fmt: skip
REFERENCE_POLICY = "infaas"
# the columns that say which scenario a run belongs to (policy and seed vary within one)
SCENARIO_COLUMNS: tuple[str, ...] = ("trace", "load_qps", "cluster", "apps", "catalog", "variation")
# config groups whose choice is reported as a column of its own
CHOICE_COLUMNS: tuple[str, ...] = ("policy", "trace", "cluster", "apps", "catalog", "experiment")
_OWN_OVERRIDE_KEYS = frozenset({"policy", "trace", "cluster", "apps", "catalog", "experiment", "seed"})


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One finished run: its directory, summary and what Hydra recorded about it."""

    run_dir: Path
    summary: dict[str, Any]
    choices: dict[str, str]
    overrides: tuple[str, ...]
    config: dict[str, Any]


class ReportError(Exception):
    """Something that stops the report; printed as one line."""


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None


def read_run(run_dir: Path) -> RunRecord:
    """The summary and Hydra metadata of one run directory (missing metadata is left empty)."""
    path = run_dir / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except ValueError as e:
        raise InputError(str(path), getattr(e, "lineno", None), None, f"not valid JSON ({e})") from e
    if not isinstance(summary, dict):
        raise InputError(str(path), 1, None, "summary.json must hold a JSON object")
    hydra_dir = run_dir / ".hydra"
    hydra = _read_yaml(hydra_dir / "hydra.yaml") or {}
    choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    overrides = _read_yaml(hydra_dir / "overrides.yaml") or []
    config = _read_yaml(hydra_dir / "config.yaml") or {}
    return RunRecord(
        run_dir=run_dir,
        summary=summary,
        choices={str(k): str(v) for k, v in choices.items() if "/" not in str(k)},
        overrides=tuple(str(o) for o in overrides),
        config=config if isinstance(config, dict) else {},
    )


def find_runs(root: Path) -> list[RunRecord]:
    """Every run under ``root`` (``root`` itself included), in path order."""
    if not root.is_dir():
        raise ReportError(f"{root}: no such directory")
    paths = sorted(root.rglob(SUMMARY_FILE))
    if not paths:
        raise ReportError(f"{root}: no {SUMMARY_FILE} found (is this a sweep or run directory?)")
    return [read_run(p.parent) for p in paths]


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is None or isinstance(value, str | int | float | bool):
        out[prefix] = value


def _load_qps(run: RunRecord) -> float:
    """The configured rate of a synthetic trace, else the offered rate the run measured."""
    trace_cfg = run.config.get("trace")
    rate = _number(trace_cfg.get("rate_qps")) if isinstance(trace_cfg, dict) else None
    if rate is not None:
        return rate
    duration = _number(run.summary.get("duration_s")) or 0.0
    queries = _number(run.summary.get("queries")) or 0.0
    return round(queries / duration, 3) if duration > 0 else math.nan


def rel_dir(run_dir: Path, root: Path) -> str:
    """A run directory as the table names it: relative to the report's root ("." for the root)."""
    return "." if run_dir == root else str(run_dir.relative_to(root))


def run_row(run: RunRecord, root: Path) -> dict[str, Any]:
    """One table row: identification columns, then the flattened summary."""
    s = run.summary
    variation = sorted(
        o for o in run.overrides
        if o.split("=", 1)[0].lstrip("+~") not in _OWN_OVERRIDE_KEYS
        and not o.startswith(("hydra", "policy.", "trace.rate_qps", "trace.duration_s", "seed"))
    )  # fmt: skip
    policy = run.choices.get("policy") or str(s.get("policy", "?"))
    tweaks = sorted(o for o in run.overrides if o.startswith("policy."))
    row: dict[str, Any] = {
        "run_dir": rel_dir(run.run_dir, root),
        "policy": policy + (f"[{','.join(tweaks)}]" if tweaks else ""),
        "trace": run.choices.get("trace") or str(s.get("trace", "?")),
        "load_qps": _load_qps(run),
        "seed": s.get("seed"),
        "backend": s.get("backend"),
        "cluster": run.choices.get("cluster", ""),
        "apps": run.choices.get("apps", ""),
        "catalog": run.choices.get("catalog", ""),
        "experiment": run.choices.get("experiment", ""),
        "variation": " ".join(variation),
        "overrides": " ".join(run.overrides),
    }
    flat: dict[str, Any] = {}
    _flatten("", s, flat)
    for key, value in flat.items():
        if key.startswith("latency_ms."):
            key = f"latency_{key.split('.', 1)[1]}_ms"
        if key in row:
            continue
        row[key] = value
    return row


def build_table(runs: Sequence[RunRecord], root: Path) -> pd.DataFrame:
    """One row per run, sorted by scenario, policy and seed."""
    df = pd.DataFrame([run_row(r, root) for r in runs])
    df["_order"] = df["policy"].map(policy_rank)
    df = df.sort_values([*SCENARIO_COLUMNS, "_order", "policy", "seed"], kind="stable")
    return df.drop(columns="_order").reset_index(drop=True)


def policy_rank(name: str) -> int:
    base = name.split("[", 1)[0]
    return POLICY_ORDER.index(base) if base in POLICY_ORDER else len(POLICY_ORDER)


def ordered_policies(names: Sequence[str]) -> list[str]:
    return sorted(set(names), key=lambda n: (policy_rank(n), n))


def scenario_groups(df: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """(scenario key columns -> value, rows) for each scenario, in table order."""
    out: list[tuple[dict[str, Any], pd.DataFrame]] = []
    for key, rows in df.groupby(list(SCENARIO_COLUMNS), sort=False, dropna=False):
        out.append((dict(zip(SCENARIO_COLUMNS, key, strict=True)), rows))
    return out


def write_table(df: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / "summary.csv", out / "summary.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    return csv, parquet


# --- the printed table -------------------------------------------------------------------

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
)


def _cell(value: Any, fmt: Any) -> str:
    x = _number(value)
    return "-" if x is None or math.isnan(x) else str(fmt(x))


def _ratio(num: float, den: float) -> str:
    if any(math.isnan(v) for v in (num, den)):
        return "-"
    if den == 0:
        return "same (0)" if num == 0 else "inf"
    return f"{num / den:.2f}x"


def _render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return lines


def seed_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns averaged over seeds, one row per policy (in policy order)."""
    numeric = rows.select_dtypes("number").columns.drop("seed", errors="ignore")
    means = rows.groupby("policy", sort=False)[list(numeric)].mean()
    means["n_seeds"] = rows.groupby("policy", sort=False)["seed"].nunique()
    return means.loc[ordered_policies(list(means.index))]


def _scenario_title(key: dict[str, Any], rows: pd.DataFrame) -> str:
    parts = [f"trace={key['trace']}", f"load={key['load_qps']:g} qps"]
    parts += [f"{c}={key[c]}" for c in ("cluster", "apps", "catalog") if key[c]]
    if key["variation"]:
        parts.append(str(key["variation"]))
    seeds = rows["seed"].nunique()
    duration = rows["duration_s"].iloc[0]
    parts.append(f"{seeds} seed{'s' if seeds != 1 else ''} x {duration:g} s simulated")
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


def format_scenario(key: dict[str, Any], rows: pd.DataFrame) -> list[str]:
    """The block printed for one scenario: policies side by side, then ratios vs infaas."""
    means = seed_means(rows)
    m: dict[str, dict[str, float]] = {
        str(p): {str(c): math.nan if (x := _number(v)) is None else x for c, v in vals.items()}
        for p, vals in means.to_dict(orient="index").items()
    }
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
    lines = [f"== {_scenario_title(key, rows)}", *_render(["", *policies], table)]
    others = [p for p in policies if p != REFERENCE_POLICY]
    if REFERENCE_POLICY in m and others:
        r = m[REFERENCE_POLICY]
        ratio_rows = [
            ["cost saving (cost / infaas cost)"] + [_ratio(m[p]["cost_usd"], r["cost_usd"]) for p in others],
            ["fewer SLO violations (rate / infaas rate)"]
            + [_ratio(m[p]["violation_rate"], r["violation_rate"]) for p in others],
            ["goodput gain (infaas / goodput)"]
            + [_ratio(r["goodput_qps"], m[p]["goodput_qps"]) for p in others],
            ["throughput gain (infaas / throughput)"]
            + [_ratio(r["throughput_qps"], m[p]["throughput_qps"]) for p in others],
            ["accuracy difference (infaas - policy)"]
            + [_cell(100 * (r["mean_accuracy"] - m[p]["mean_accuracy"]), lambda x: f"{x:+.1f} pts")
               for p in others],
        ]
        lines += ["", "INFaaS against each policy (> 1x favours INFaaS):"]
        lines += _render(["", *others], ratio_rows)
    return lines


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
    return "\n".join(lines).rstrip() + "\n"


def report(root: Path, out: Path | None = None, *, figures: bool = True,
           timeseries_run: Path | None = None) -> tuple[pd.DataFrame, str, list[Path]]:
    """Gather, write the table and figures; returns (table, printed text, figure paths)."""
    out = out or root
    runs = find_runs(root)
    df = build_table(runs, root)
    write_table(df, out)
    text = format_report(df, root)
    paths: list[Path] = []
    if figures:
        from infaas_sim.report_figures import draw_all

        paths = draw_all(df, runs, root, out / "figures", timeseries_run=timeseries_run)
    return df, text, paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="infaas-sim-report",
        description="Gather the summary.json of every run under a sweep (or run) directory into "
                    "one table (summary.csv, summary.parquet) and draw the standard figures.",
    )
    parser.add_argument("dir", type=Path, help="a sweep directory, a run directory, or a tree of them")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: DIR)")
    parser.add_argument("--no-figures", action="store_true", help="write the table only")
    parser.add_argument("--timeseries-run", type=Path, default=None,
                        help="the run whose timeline to draw (default: an infaas run)")
    args = parser.parse_args(argv)
    try:
        _, text, paths = report(args.dir, args.out, figures=not args.no_figures,
                                 timeseries_run=args.timeseries_run)
    except (ReportError, InputError) as e:
        print(f"infaas-sim-report: {e}", file=sys.stderr)
        return 2
    out = args.out or args.dir
    print(text, end="")
    print(f"\nTable: {out / 'summary.csv'} (and .parquet)")
    if paths:
        print(f"Figures ({len(paths)}): {out / 'figures'}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
