"""The standard figures of a sweep report (matplotlib, Agg backend; PNG files).

- ``<metric>_vs_load.png`` for violation rate, goodput and cost: one panel per trace, one
  line per policy, means over seeds with min-max bars;
- ``policy_comparison.png``: the same metrics (and accuracy) as bars, one group per scenario;
- ``latency_cdf.png``: latency CDF of completed queries per policy, one panel per scenario
  (from ``queries.parquet``; when the runs' apps have SLOs, a second row shows latency / SLO;
  with more than six scenarios, the highest load of each trace);
- ``timeseries.png``: one run's timeline — queries per second, workers per instance type,
  replicas per variant, distinct variants loaded, cumulative cost (``timeline.parquet``:
  ``time_s``, counts, ``workers_<type>``, ``replicas_<variant>``, ``cost_usd``).

Each drawing function returns a :class:`~matplotlib.figure.Figure` built without pyplot (so
importing this module never changes a notebook's backend; saving uses Agg);
:func:`draw_all` saves them. The readers (:func:`load_latencies`, :func:`load_timeline`,
:func:`timeline_columns`) are public: the notebooks use them too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from infaas_sim.report_table import (
    REFERENCE_POLICY,
    RunRecord,
    ordered_policies,
    policy_rank,
    read_run,
    rel_dir,
    scenario_groups,
)

# (column, y label, file stem, as percent) of the figures drawn against load
LOAD_METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("violation_rate", "SLO violation rate (%)", "violation_rate_vs_load", True),
    ("goodput_qps", "goodput (queries/s within SLO)", "goodput_vs_load", False),
    ("cost_usd", "cost (USD)", "cost_vs_load", False),
)
BAR_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("violation_rate", "SLO violation rate (%)", True),
    ("goodput_qps", "goodput (qps)", False),
    ("cost_per_million_queries", "cost per 1M queries (USD)", False),
    ("mean_accuracy", "mean accuracy (%)", True),
)
CDF_POINTS = 400  # quantiles drawn per CDF line
MAX_CDF_PANELS = 6
TOP_VARIANTS = 8  # variants drawn by name in the time series; the rest summed as "other"
DONE_STATUSES = ("completed", "late")


def policy_color(name: str) -> Any:
    return matplotlib.colormaps["tab10"](policy_rank(name) % 10)


def _panels(n: int, width: float = 4.6, height: float = 3.4) -> tuple[Figure, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def metric_vs_load(df: pd.DataFrame, column: str, ylabel: str, percent: bool = False) -> Figure:
    """One panel per trace; a line per policy; means over seeds, bars from min to max."""
    traces = list(dict.fromkeys(df["trace"]))
    fig, axes = _panels(len(traces))
    scale = 100.0 if percent else 1.0
    for ax, trace in zip(axes, traces):
        sub = df[df["trace"] == trace]
        for policy in ordered_policies(list(sub["policy"])):
            g = sub[sub["policy"] == policy].groupby("load_qps")[column]
            mean, lo, hi = g.mean() * scale, g.min() * scale, g.max() * scale
            ax.errorbar(mean.index, mean.values, yerr=[mean - lo, hi - mean], marker="o",
                        capsize=3, label=policy, color=policy_color(policy))
        ax.set_title(f"trace: {trace}")
        ax.set_xlabel("load (queries/s)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _scenario_label(key: dict[str, Any], with_variation: bool = True) -> str:
    label = f"{key['trace']}\n{key['load_qps']:g} qps"
    return f"{label}\n{key['variation']}" if key["variation"] and with_variation else label


def _varies(df: pd.DataFrame) -> bool:
    """Whether the scenarios differ in other overrides (else labels leave them out)."""
    return df["variation"].nunique() > 1


def policy_bars(df: pd.DataFrame) -> Figure:
    """Grouped bars: one panel per metric, one group per scenario, one bar per policy."""
    groups = scenario_groups(df)
    policies = ordered_policies(list(df["policy"]))
    panel_w = max(3.4, 0.8 + 0.28 * len(groups) * len(policies))
    fig = Figure(figsize=(panel_w * 2, 3.2 * 2 + 0.6))
    axes = fig.subplots(2, 2, squeeze=False).ravel()
    width = 0.8 / len(policies)
    x = np.arange(len(groups))
    for ax, (column, label, percent) in zip(axes, BAR_METRICS):
        for i, policy in enumerate(policies):
            vals = [rows.loc[rows["policy"] == policy, column].mean() for _, rows in groups]
            ax.bar(x + (i - (len(policies) - 1) / 2) * width, np.asarray(vals) * (100 if percent else 1),
                   width, label=policy, color=policy_color(policy))
        ax.set_xticks(x, [_scenario_label(k, _varies(df)) for k, _ in groups], fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(policies), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return fig


def load_latencies(run_dir: Path) -> pd.DataFrame | None:
    """Completed queries' ``app`` and ``latency_ms`` from ``queries.parquet`` (None if absent)."""
    path = run_dir / "queries.parquet"
    if not path.is_file():
        return None
    q = pd.read_parquet(path, columns=["app", "latency_ms", "status"])
    done = q["status"].astype(str).isin(DONE_STATUSES)
    return q.loc[done, ["app", "latency_ms"]].reset_index(drop=True)


def app_slos_ms(config: dict[str, Any]) -> dict[str, float]:
    """Application name -> latency SLO (ms) from a run's resolved config, where given."""
    apps = config.get("apps")
    if not isinstance(apps, dict):
        return {}
    out: dict[str, float] = {}
    for name, spec in apps.items():
        if isinstance(spec, dict) and isinstance(spec.get("latency_slo_ms"), int | float):
            out[str(name)] = float(spec["latency_slo_ms"])
    return out


def _cdf(ax: Any, values: np.ndarray, **kw: Any) -> None:
    q = np.linspace(0.0, 1.0, CDF_POINTS)
    ax.plot(np.quantile(values, q), q, **kw)


def latency_cdf(df: pd.DataFrame, runs: Sequence[RunRecord], root: Path) -> Figure | None:
    """Latency CDF per policy (lowest seed), one column per scenario; None when no run has queries."""
    by_dir = {rel_dir(r.run_dir, root): r for r in runs}
    groups = scenario_groups(df)
    if len(groups) > MAX_CDF_PANELS:  # too many: the highest load of each trace
        top: dict[str, tuple[dict[str, Any], pd.DataFrame]] = {}
        for k, rows in groups:
            if k["trace"] not in top or k["load_qps"] > top[k["trace"]][0]["load_qps"]:
                top[k["trace"]] = (k, rows)
        groups = list(top.values())[:MAX_CDF_PANELS]
    panels: list[tuple[str, list[tuple[str, pd.DataFrame, dict[str, float]]]]] = []
    for key, rows in groups:
        lines = []
        for policy in ordered_policies(list(rows["policy"])):
            first = rows[rows["policy"] == policy].sort_values("seed").iloc[0]
            run = by_dir[first["run_dir"]]
            lat = load_latencies(run.run_dir)
            if lat is not None and len(lat):
                lines.append((policy, lat, app_slos_ms(run.config)))
        if lines:
            panels.append((_scenario_label(key, _varies(df)), lines))
    if not panels:
        return None
    with_slo = any(slos for _, lines in panels for _, _, slos in lines)
    n_rows = 2 if with_slo else 1
    fig = Figure(figsize=(4.6 * len(panels), 3.4 * n_rows))
    axes = fig.subplots(n_rows, len(panels), squeeze=False)
    for j, (title, lines) in enumerate(panels):
        ax = axes[0][j]
        for policy, lat, slos in lines:
            _cdf(ax, lat["latency_ms"].to_numpy(), label=policy, color=policy_color(policy))
            if with_slo and slos:
                slo = lat["app"].astype(str).map(slos).to_numpy(dtype=float)
                ok = ~np.isnan(slo)
                _cdf(axes[1][j], lat["latency_ms"].to_numpy()[ok] / slo[ok], label=policy,
                     color=policy_color(policy))
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of completed queries")
        ax.grid(alpha=0.3, which="both")
        if with_slo:
            ax2 = axes[1][j]
            ax2.axvline(1.0, color="k", lw=0.8, ls="--")
            ax2.set_xscale("log")
            ax2.set_xlabel("latency / application SLO")
            ax2.set_ylabel("fraction of completed queries")
            ax2.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def load_timeline(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / "timeline.parquet"
    return pd.read_parquet(path) if path.is_file() else None


def timeline_columns(tl: pd.DataFrame, prefix: str) -> dict[str, str]:
    """Columns ``<prefix><sep><name>`` (sep one of ``.:/_``) -> ``name``, e.g. workers per type."""
    out: dict[str, str] = {}
    for col in tl.columns:
        c = str(col)
        for sep in (".", ":", "/", "_"):
            if c.startswith(prefix + sep) and len(c) > len(prefix) + 1:
                out[c] = c[len(prefix) + 1:]
                break
    return out


def _time_axis(tl: pd.DataFrame) -> np.ndarray:
    for col in ("time_s", "t_s", "second", "t"):
        if col in tl.columns:
            return tl[col].to_numpy(dtype=float)
    return np.arange(len(tl), dtype=float)


def timeseries(run: RunRecord) -> Figure | None:
    """Queries per second, workers per type, replicas per variant, distinct variants, cost."""
    tl = load_timeline(run.run_dir)
    if tl is None or tl.empty:
        return None
    t = _time_axis(tl)
    workers = timeline_columns(tl, "workers")
    replicas = timeline_columns(tl, "replicas") or timeline_columns(tl, "instances")
    fig = Figure(figsize=(9, 11))
    axes = fig.subplots(5, 1, sharex=True)
    ax = axes[0]
    for col in ("arrivals", "completions", "violations", "rejected"):
        if col in tl.columns and tl[col].any():
            ax.plot(t, tl[col], label=col, lw=1)
    ax.set_ylabel("queries per second")
    ax.legend(fontsize=8)
    for col, name in workers.items():
        axes[1].step(t, tl[col], where="post", label=name)
    axes[1].set_ylabel("workers")
    if workers:
        axes[1].legend(fontsize=8)
    if replicas:
        reps = tl[list(replicas)].rename(columns=replicas).fillna(0)
        top = reps.sum().sort_values(ascending=False).index[:TOP_VARIANTS]
        shown = reps[top].copy()
        if len(reps.columns) > len(top):
            shown["other"] = reps.drop(columns=top).sum(axis=1)
        axes[2].stackplot(t, shown.T.to_numpy(), labels=list(shown.columns), step="post")
        axes[2].legend(fontsize=7, loc="upper left", ncol=2)
        axes[3].step(t, (reps > 0).sum(axis=1), where="post", color="k")
    axes[2].set_ylabel("variant replicas")
    axes[3].set_ylabel("distinct variants")
    if "cost_usd" in tl.columns:
        axes[4].plot(t, tl["cost_usd"], color="k")
    axes[4].set_ylabel("cumulative cost (USD)")
    axes[4].set_xlabel("simulated time (s)")
    for a in axes:
        a.grid(alpha=0.3)
    s = run.summary
    fig.suptitle(f"{run.choices.get('policy', s.get('policy'))} on {run.choices.get('trace', s.get('trace'))}"
                 f" (seed {s.get('seed')}): {run.run_dir.name}", fontsize=10)
    fig.tight_layout()
    return fig


def pick_timeseries_run(df: pd.DataFrame, runs: Sequence[RunRecord], root: Path) -> RunRecord | None:
    """The reference policy's run with a timeline at the highest load of the first trace."""
    with_tl = {rel_dir(r.run_dir, root): r for r in runs if (r.run_dir / "timeline.parquet").is_file()}
    if not with_tl:
        return None
    cand = df[df["run_dir"].isin(with_tl)]
    first_trace = cand["trace"].iloc[0]
    cand = cand[cand["trace"] == first_trace]
    ref = cand[cand["policy"] == REFERENCE_POLICY]
    cand = ref if len(ref) else cand
    best = cand.sort_values(["load_qps", "seed"], ascending=[False, True]).iloc[0]
    return with_tl[best["run_dir"]]


def draw_all(df: pd.DataFrame, runs: Sequence[RunRecord], root: Path, fig_dir: Path,
             timeseries_run: Path | None = None) -> list[Path]:
    """Every standard figure into ``fig_dir`` (PNG); returns the files written."""
    figures: dict[str, Figure | None] = {
        stem: metric_vs_load(df, col, label, pct) for col, label, stem, pct in LOAD_METRICS
    }
    figures["policy_comparison"] = policy_bars(df)
    figures["latency_cdf"] = latency_cdf(df, runs, root)
    run = read_run(timeseries_run) if timeseries_run is not None else pick_timeseries_run(df, runs, root)
    figures["timeseries"] = timeseries(run) if run else None
    return [save(fig, fig_dir / f"{stem}.png") for stem, fig in figures.items() if fig is not None]
