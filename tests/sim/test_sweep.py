"""Sweeps: a 4-policy x 2-trace x 2-seed tiny sweep runs in parallel with the joblib
launcher and writes one summary per run; the report reads it; running the same command
again with ``sweep.resume=true`` skips the finished runs and redoes only the missing one;
the submitit launcher works in LOCAL mode."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
POLICIES = ("infaas", "infaas_no_model_autoscale", "clipper_plus", "sagemaker_plus")
TRACES = ("poisson", "flat")
SEEDS = (0, 1)
SKIP_LINE = "resume: skipping finished run"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REPO / "catalogs" / "imagenet.csv").exists(),
                       reason="catalogs/imagenet.csv (the default catalog) is not in this checkout yet"),
]


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "infaas_sim", *args], capture_output=True, text=True,
                       cwd=REPO, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _sweep_args(sweep_dir: Path) -> list[str]:
    return ["-m", "experiment=tiny", f"policy={','.join(POLICIES)}", f"trace={','.join(TRACES)}",
            "trace.rate_qps=40", "trace.duration_s=3", f"seed={','.join(map(str, SEEDS))}",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "sweep.resume=true",
            f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    d = tmp_path_factory.mktemp("sweep") / "sweep"
    return d, _sim(*_sweep_args(d))


def _summaries(d: Path) -> list[Path]:
    return sorted(d.rglob("summary.json"))


def test_joblib_sweep_runs_in_parallel_one_summary_per_run(sweep: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    d, p = sweep
    assert "Joblib.Parallel(n_jobs=2" in p.stdout + p.stderr
    got = set()
    for f in _summaries(d):
        s = json.loads(f.read_text())
        got.add((s["policy"], s["trace"], s["seed"]))
        assert (f.parent / ".done").is_file()
    assert got == set(itertools.product(POLICIES, TRACES, SEEDS))


def test_report_on_the_sweep(sweep: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    d, _ = sweep
    p = subprocess.run([sys.executable, "-m", "infaas_sim.report", str(d), "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    df = pd.read_parquet(tmp_path / "summary.parquet")
    assert len(df) == len(POLICIES) * len(TRACES) * len(SEEDS)
    assert set(df.groupby("policy")["seed"].nunique()) == {len(SEEDS)}
    assert p.stdout.count("== trace=") == len(TRACES)
    assert {f.name for f in (tmp_path / "figures").iterdir()} >= {"violation_rate_vs_load.png", "timeseries.png"}


def test_resumed_sweep_skips_finished_runs(sweep: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """Rule: with sweep.resume=true, a run whose directory holds finished results for the
    same config is skipped; an interrupted (here: deleted) run is done again."""
    d, _ = sweep
    runs = sorted(f.parent for f in _summaries(d))
    lost = runs[3]
    shutil.rmtree(lost)  # as if the sweep had been killed before this run
    before = {r: (r / "summary.json").stat().st_mtime_ns for r in runs if r != lost}
    p = _sim(*_sweep_args(d))
    after = {r: (r / "summary.json").stat().st_mtime_ns for r in before}
    assert after == before, "finished runs were redone"
    assert (lost / "summary.json").is_file() and (lost / ".done").is_file()
    logs = "".join(f.read_text() for r in before for f in r.glob("*.log"))
    assert (p.stdout + p.stderr + logs).count(SKIP_LINE) >= len(before)
    assert not any(SKIP_LINE in f.read_text() for f in lost.glob("*.log"))


def test_submitit_local_launcher(tmp_path: Path) -> None:
    """The SLURM code path (submitit) in LOCAL mode: one subprocess per run."""
    d = tmp_path / "sweep"
    _sim("-m", "experiment=tiny", "policy=infaas,clipper_plus", "trace.duration_s=2",
         "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", f"hydra.sweep.dir={d}")
    assert {json.loads(f.read_text())["policy"] for f in _summaries(d)} == {"infaas", "clipper_plus"}
    assert (d / ".submitit").is_dir()
