"""Gathering a sweep's results into one table (the numbers behind ``infaas-sim-report``).

:func:`find_runs` reads every ``summary.json`` under a directory together with what the
run's ``.hydra/`` files say about it (config-group choices, overrides, resolved config);
:func:`build_table` makes one row per run: identification columns (``policy``, ``trace``,
``load_qps``, ``seed``, ``cluster``, ``apps``, ``catalog``, ``experiment``, ``variation``:
other overrides) then the results schema flattened (``latency_ms.p99`` ->
``latency_p99_ms``; extras such as ``per_app.<app>.violation_rate`` keep dotted names).
A *scenario* is everything but policy and seed (:data:`SCENARIO_COLUMNS`);
:func:`seed_means` averages over seeds and :func:`ratios_vs_reference` compares each
policy with ``infaas`` (> 1 favours INFaaS).
"""

from __future__ import annotations

import json
import math
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


def seed_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns averaged over seeds, one row per policy (in policy order)."""
    numeric = rows.select_dtypes("number").columns.drop("seed", errors="ignore")
    means = rows.groupby("policy", sort=False)[list(numeric)].mean()
    means["n_seeds"] = rows.groupby("policy", sort=False)["seed"].nunique()
    return means.loc[ordered_policies(list(means.index))]


# (column, name, direction): direction +1 = the policy's value over infaas's (cost, violations:
# > 1 means INFaaS is lower), -1 = infaas's over the policy's (goodput, throughput)
RATIOS: tuple[tuple[str, str, int], ...] = (
    ("cost_usd", "cost_saving", +1),
    ("cost_instance_usd", "instance_cost_saving", +1),  # the paper's §6.2 metric (infaas_core.metrics)
    ("violation_rate", "fewer_violations", +1),
    ("goodput_qps", "goodput_gain", -1),
    ("throughput_qps", "throughput_gain", -1),
)


def ratio(num: float, den: float) -> float:
    """num / den, with 0/0 = 1 (both perfect) and x/0 = inf; NaN in, NaN out."""
    if math.isnan(num) or math.isnan(den):
        return math.nan
    if den == 0:
        return 1.0 if num == 0 else math.inf
    return num / den


def _as_floats(means: pd.DataFrame) -> dict[str, dict[str, float]]:
    """policy -> column -> value (NaN where not a number)."""
    return {
        str(p): {str(c): math.nan if (x := _number(v)) is None else x for c, v in vals.items()}
        for p, vals in means.to_dict(orient="index").items()
    }


def ratios_vs_reference(df: pd.DataFrame, reference: str = REFERENCE_POLICY) -> pd.DataFrame:
    """One row per (scenario, other policy): the :data:`RATIOS` of seed means (> 1 favours
    ``reference``) and ``accuracy_diff_pts`` (reference minus policy, in points)."""
    rows: list[dict[str, Any]] = []
    for key, group in scenario_groups(df):
        m = _as_floats(seed_means(group))
        if reference not in m:
            continue
        ref = m[reference]
        for policy, vals in m.items():
            if policy == reference:
                continue
            row: dict[str, Any] = {**key, "policy": policy}
            for col, name, direction in RATIOS:
                a, b = vals.get(col, math.nan), ref.get(col, math.nan)
                row[name] = ratio(a, b) if direction > 0 else ratio(b, a)
            row["accuracy_diff_pts"] = 100 * (ref.get("mean_accuracy", math.nan) - vals.get("mean_accuracy", math.nan))
            rows.append(row)
    return pd.DataFrame(rows)
