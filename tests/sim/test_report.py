"""``infaas-sim-report``: one table (CSV + parquet) of every summary.json under a directory,
a printed comparison with the policies side by side, the standard figures, and one-line
errors with exit status 2. Results come from the real simulator on ``experiment=tiny``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from infaas_sim.report import build_table, find_runs, format_report, main, seed_means

REPO = Path(__file__).resolve().parents[2]
POLICIES = ("infaas", "clipper_plus")
FIGURES = {"violation_rate_vs_load.png", "goodput_vs_load.png", "cost_vs_load.png",
           "policy_comparison.png", "latency_cdf.png", "timeseries.png"}  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

needs_default_catalog = pytest.mark.skipif(
    not (REPO / "catalogs" / "imagenet.csv").exists(),
    reason="catalogs/imagenet.csv (the default catalog) is not in this checkout yet",
)


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "infaas_sim", *args], capture_output=True, text=True,
                       cwd=REPO, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-policy tiny sweep (Hydra's basic launcher, in one process)."""
    d = tmp_path_factory.mktemp("report") / "sweep"
    _sim("-m", "experiment=tiny", f"policy={','.join(POLICIES)}", f"hydra.sweep.dir={d}")
    return d


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infaas_sim.report", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)  # fmt: skip


@pytest.mark.slow
@needs_default_catalog
def test_table_has_one_row_per_run_with_the_summary_values(sweep: Path, tmp_path: Path) -> None:
    """Rule: every summary.json under the directory becomes one row; nested latency keys are
    flattened; policy/trace/load/seed come from the run's Hydra record."""
    p = _report(str(sweep), "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    csv = pd.read_csv(tmp_path / "summary.csv")
    parquet = pd.read_parquet(tmp_path / "summary.parquet")
    assert len(csv) == len(parquet) == len(POLICIES)
    assert set(csv["policy"]) == set(POLICIES)
    assert set(csv["trace"]) == {"poisson"} and set(csv["load_qps"]) == {40.0}
    assert set(csv["experiment"]) == {"tiny"}
    for _, row in parquet.iterrows():
        s = json.loads((sweep / row["run_dir"] / "summary.json").read_text())
        assert row["queries"] == s["queries"] and row["seed"] == s["seed"]
        assert row["latency_p99_ms"] == pytest.approx(s["latency_ms"]["p99"], nan_ok=True)
        assert row["cost_usd"] == pytest.approx(s["cost_usd"])
    assert not (sweep / "summary.csv").exists(), "--out must leave the sweep directory alone"


@pytest.mark.slow
@needs_default_catalog
def test_printed_table_puts_policies_side_by_side_with_ratios_vs_infaas(sweep: Path, tmp_path: Path) -> None:
    p = _report(str(sweep), "--out", str(tmp_path), "--no-figures")
    assert p.returncode == 0, p.stderr
    header = next(ln for ln in p.stdout.splitlines() if ln.strip().startswith("infaas "))
    assert header.split() == list(POLICIES)
    for label in ("SLO violation rate", "latency p99 (ms)", "goodput (qps)", "cost per 1M queries (USD)",
                  "mean accuracy", "INFaaS against each policy", "cost saving"):
        assert label in p.stdout
    df = pd.read_csv(tmp_path / "summary.csv")
    ratio = df.set_index("policy").loc["clipper_plus", "cost_usd"] / df.set_index("policy").loc["infaas", "cost_usd"]
    cost_line = next(ln for ln in p.stdout.splitlines() if ln.startswith("cost saving"))
    assert cost_line.split()[-1] == f"{ratio:.2f}x"
    # the paper's per-instance cost (§6.2) beside VM-hours, with its own ratio
    assert "instance cost (USD, paper §6.2)" in p.stdout
    by = df.set_index("policy")
    inst = by.loc["clipper_plus", "cost_instance_usd"] / by.loc["infaas", "cost_instance_usd"]
    inst_line = next(ln for ln in p.stdout.splitlines() if ln.startswith("instance-cost saving"))
    assert inst_line.split()[-1] == f"{inst:.2f}x"
    assert not (tmp_path / "figures").exists()


@pytest.mark.slow
@needs_default_catalog
def test_figures_are_written_as_png(sweep: Path, tmp_path: Path) -> None:
    assert main([str(sweep), "--out", str(tmp_path)]) == 0
    written = {f.name for f in (tmp_path / "figures").iterdir()}
    assert written == FIGURES
    for name in FIGURES:
        assert (tmp_path / "figures" / name).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
@needs_default_catalog
def test_a_single_run_directory_and_a_streaming_run_work(tmp_path: Path) -> None:
    """Rule: the report accepts one run directory; without queries.parquet (sim.stream=true)
    it skips the latency CDF and still draws the rest."""
    run = tmp_path / "run"
    _sim("experiment=tiny", "sim.stream=true", f"hydra.run.dir={run}")
    assert not (run / "queries.parquet").exists()
    assert main([str(run)]) == 0
    df = pd.read_csv(run / "summary.csv")
    assert list(df["run_dir"]) == ["."] and list(df["policy"]) == ["infaas"]
    written = {f.name for f in (run / "figures").iterdir()}
    assert written == FIGURES - {"latency_cdf.png"}


@pytest.mark.slow
@needs_default_catalog
def test_means_over_seeds(sweep: Path, tmp_path: Path) -> None:
    """Rule: the printed values are means over seeds of the same policy and scenario."""
    shutil.copytree(sweep, tmp_path / "a")
    shutil.copytree(sweep, tmp_path / "b")
    for f in (tmp_path / "b").rglob("summary.json"):  # the same runs again, as seed 7
        s = json.loads(f.read_text())
        s["seed"], s["cost_usd"] = 7, 3 * s["cost_usd"]
        f.write_text(json.dumps(s))
    df = build_table(find_runs(tmp_path), tmp_path)
    means = seed_means(df)
    base = build_table(find_runs(tmp_path / "a"), tmp_path / "a").set_index("policy")
    for policy in POLICIES:
        assert means.at[policy, "n_seeds"] == 2
        assert means.at[policy, "cost_usd"] == pytest.approx(2 * base.at[policy, "cost_usd"])
    assert "2 seeds" in format_report(df, tmp_path)


def _one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_missing_directory_is_one_line_exit_2(tmp_path: Path) -> None:
    assert "no such directory" in _one_line_error(_report(str(tmp_path / "nope")))


def test_directory_without_summaries_is_one_line_exit_2(tmp_path: Path) -> None:
    assert "no summary.json" in _one_line_error(_report(str(tmp_path)))


def test_unreadable_summary_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "summary.json").write_text('{"policy": "infaas", ')
    line = _one_line_error(_report(str(tmp_path)))
    assert str(tmp_path / "r1" / "summary.json") in line
