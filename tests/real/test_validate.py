"""``infaas-real validate`` on a short trace: both backends run the same scenario and the
comparison table is written (the 60 s acceptance run is ``infaas-real validate`` itself;
its figures are in docs/real-backend.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from server_harness import catalog_overrides

from infaas_core.metrics import SUMMARY_KEYS
from infaas_real.cli import main as cli_main


@pytest.mark.slow
def test_validate_writes_both_summaries_and_the_comparison(tmp_path: Path) -> None:
    over = catalog_overrides()
    if over:  # a catalog given by path: both backends get it that way
        over = [*over, "validate.groups.catalog=null"]
    rc = cli_main(
        ["validate", *over, "validate.duration_s=3", "validate.calibration_s=2", "validate.probe_s=1",
         f"hydra.run.dir={tmp_path}"]
    )  # fmt: skip
    assert rc == 0
    real = json.loads((tmp_path / "real" / "summary.json").read_text())
    sim = json.loads((tmp_path / "sim_with_overhead" / "summary.json").read_text())
    raw = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert real["backend"] == "real" and sim["backend"] == "sim" and raw["backend"] == "sim"
    assert set(SUMMARY_KEYS) <= set(real) and set(SUMMARY_KEYS) <= set(sim)
    assert real["queries"] == sim["queries"]  # the simulator replayed the real run's arrivals
    table = pd.read_csv(tmp_path / "comparison.csv")
    metrics = set(table["metric"])
    assert {"latency p50 (ms)", "latency p99 (ms)", "violation rate", "mean accuracy (profile)"} <= metrics
    assert any(m.startswith("share ") for m in metrics)
    md = (tmp_path / "comparison.md").read_text()
    assert "| latency p99 (ms) |" in md and "serving overhead" in md
