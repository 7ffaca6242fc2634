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
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from infaas_core.errors import InputError
from infaas_sim.report_table import (
    REFERENCE_POLICY,
    ReportError,
    RunRecord,
    build_table,
    find_runs,
    ordered_policies,
    ratios_vs_reference,
    read_run,
    scenario_groups,
    seed_means,
    write_table,
)
from infaas_sim.report_text import format_report

__all__ = [
    "REFERENCE_POLICY", "ReportError", "RunRecord", "build_table", "find_runs", "format_report", "main",
    "ordered_policies", "ratios_vs_reference", "read_run", "report", "scenario_groups", "seed_means",
    "write_table",
]  # fmt: skip


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
