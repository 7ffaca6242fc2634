"""The ``infaas-sim`` command: writes the results schema into the run directory, prints a
summary, and turns bad input into one line on stderr with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sim_helpers import REPO, mini_imagenet, write_catalog_csv

from infaas_core.metrics import QUERY_COLUMNS, SUMMARY_KEYS


def _sim(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infaas_sim", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def mini_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config dir adding ``catalog=mini`` (a small imagenet-like table) to the search path."""
    d = tmp_path_factory.mktemp("cfg")
    write_catalog_csv(mini_imagenet(), d / "mini.csv")
    (d / "catalog").mkdir()
    (d / "catalog" / "mini.yaml").write_text(f"path: {d / 'mini.csv'}\n")
    return d


def _one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


@pytest.mark.slow
def test_a_run_writes_summary_queries_and_timeline(tmp_path: Path, mini_config_dir: Path) -> None:
    """python -m infaas_sim ... hydra.run.dir=<dir> writes the three result files."""
    run = tmp_path / "run"
    p = _sim("--config-dir", str(mini_config_dir), "catalog=mini", "trace.duration_s=5", "trace.rate_qps=500",
             f"hydra.run.dir={run}", "sim.progress=off")
    assert p.returncode == 0, p.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert all(k in summary for k in SUMMARY_KEYS)
    assert summary["backend"] == "sim" and summary["policy"] == "infaas" and summary["queries"] > 0
    q = pd.read_parquet(run / "queries.parquet")
    assert tuple(q.columns) == QUERY_COLUMNS and len(q) == summary["queries"]
    tl = pd.read_parquet(run / "timeline.parquet")
    assert {"time_s", "arrivals", "completions", "violations", "cost_usd"} <= set(tl.columns)
    assert any(c.startswith("workers_") for c in tl.columns)
    assert int(tl["arrivals"].sum()) == summary["queries"]
    assert "violation rate" in p.stdout and "queries/s" in p.stdout


def test_a_broken_catalog_fails_with_one_line(tmp_path: Path, mini_config_dir: Path) -> None:
    """A bad profile table: one line naming the file, line and column; exit 2."""
    bad = tmp_path / "bad.csv"
    write_catalog_csv(mini_imagenet(), bad)
    lines = bad.read_text().splitlines()
    cells = lines[2].split(",")
    cells[8] = "fast"  # latency_p50_ms
    lines[2] = ",".join(cells)
    bad.write_text("\n".join(lines) + "\n")
    line = _one_error_line(_sim("--config-dir", str(mini_config_dir), "catalog=mini", f"catalog.path={bad}",
                                "trace.duration_s=1", f"hydra.run.dir={tmp_path / 'r'}"))
    assert "bad.csv:3" in line and "latency_p50_ms" in line


def test_a_bad_config_value_fails_with_one_line(tmp_path: Path, mini_config_dir: Path) -> None:
    """A bad sim knob: one line naming the key; exit 2."""
    line = _one_error_line(_sim("--config-dir", str(mini_config_dir), "catalog=mini", "sim.latency_model=gaussian",
                                f"hydra.run.dir={tmp_path / 'r'}"))
    assert "sim.latency_model" in line and "gaussian" in line


def test_a_missing_trace_file_fails_with_one_line(tmp_path: Path, mini_config_dir: Path) -> None:
    """A trace file that does not exist: one line naming the key and path; exit 2."""
    line = _one_error_line(_sim("--config-dir", str(mini_config_dir), "catalog=mini", "trace=flat",
                                "~trace.kind", f"+trace.path={tmp_path / 'nope.csv'}",
                                f"hydra.run.dir={tmp_path / 'r'}"))
    assert "trace.path" in line and "nope.csv" in line


def test_an_unknown_config_group_option_fails_with_one_line(tmp_path: Path) -> None:
    """policy=<unknown>: Hydra's composition error as one line; exit 2."""
    line = _one_error_line(_sim("policy=no_such_policy", f"hydra.run.dir={tmp_path / 'r'}"))
    assert "no_such_policy" in line


@pytest.mark.slow
def test_the_default_scenario_runs_with_no_overrides(tmp_path: Path) -> None:
    """infaas-sim with no overrides (only where to write): the default INFaaS scenario."""
    if not (REPO / "catalogs" / "imagenet.csv").exists():
        pytest.skip("catalogs/imagenet.csv (the default catalog) is not in this checkout yet")
    p = _sim(f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["policy"] == "infaas" and s["trace"] == "bursty" and s["duration_s"] == 120
    assert s["queries"] == pytest.approx(240_000, rel=0.05)
    assert set(s["per_app"]) == {"photo-tagging", "live-video", "search-thumbs", "moderation"}


@pytest.mark.slow
def test_the_readme_multirun_compares_policies(tmp_path: Path) -> None:
    """-m policy=infaas,infaas_no_model_autoscale,clipper_plus,sagemaker_plus: one run per policy,
    in sub-directories named by the override."""
    if not (REPO / "catalogs" / "imagenet.csv").exists():
        pytest.skip("catalogs/imagenet.csv (the default catalog) is not in this checkout yet")
    policies = ("infaas", "infaas_no_model_autoscale", "clipper_plus", "sagemaker_plus")
    p = _sim("-m", f"policy={','.join(policies)}", "trace.duration_s=10", f"hydra.sweep.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    for pol in policies:
        (run,) = tmp_path.glob(f"policy={pol},*")  # sub-directory named by the job's overrides
        s = json.loads((run / "summary.json").read_text())
        assert s["policy"] == pol and s["queries"] > 0


def test_a_broken_trace_file_fails_with_one_line(tmp_path: Path, mini_config_dir: Path) -> None:
    """A trace file with a non-numeric arrival: one line naming file, line and column; exit 2."""
    trace = tmp_path / "arrivals.csv"
    trace.write_text("arrival_s\n0.1\n0.2\nsoon\n0.4\n")
    line = _one_error_line(_sim("--config-dir", str(mini_config_dir), "catalog=mini", "trace=flat",
                                "~trace.kind", "~trace.rate_qps", "~trace.duration_s", f"+trace.path={trace}",
                                f"hydra.run.dir={tmp_path / 'r'}"))
    assert "arrivals.csv:4" in line
