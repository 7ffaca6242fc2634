"""Profiler rules: a reduced digits profile writes a table load_catalog accepts, reports int8
agreement, skips a variant whose export fails without aborting, and a re-run measures nothing
(every runner comes from the cache). Bad overrides end as a ConfigError (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
pytest.importorskip("hydra")

from infaas_core.catalog import load_catalog
from infaas_real import cli, profile_cli


def _overrides(tmp: Path, out: str) -> list[str]:
    return [
        "zoo=digits", "models=[logreg,cnn_small,svd_linear]", "zoo.options.extra_models=[svd_linear]",
        "threads=[1]", "batches=[1,4]", "max_batches=[1,4]", "reps=6", "min_reps=3", "rounds=1",
        "warmup=1", "time_budget_s_per_point=0.05", f"cache_dir={tmp / 'cache'}",
        f"out={tmp / out}", "progress=false",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("profile")
    assert profile_cli.main(_overrides(tmp, "first.csv")) == 0
    return tmp


def test_reduced_profile_writes_a_loadable_table(first_run: Path) -> None:
    catalog = load_catalog(first_run / "first.csv")
    names = {v.name for v in catalog}
    assert "cnn_small-onnx-int8-cpu1-b4" in names and "logreg-torch-fp32-cpu1-b1" in names
    v = catalog.get("cnn_small-onnx-fp32-cpu1-b4")
    assert v.batches == (1, 4) and v.source.startswith("measured:") and 0.9 < v.accuracy <= 1.0
    assert catalog.get("cnn_small-onnx-fp32-cpu1-b1").batches == (1,)


def test_int8_variants_report_agreement_with_fp32(first_run: Path) -> None:
    meta = json.loads((first_run / "first.csv.meta.json").read_text())
    agreement = meta["variants"]["cnn_small-onnx-int8-cpu1-b4"]["agreement_top1"]
    assert 0.9 <= agreement <= 1.0


def test_failed_export_is_skipped_and_the_run_continues(first_run: Path) -> None:
    meta = json.loads((first_run / "first.csv.meta.json").read_text())
    failed = meta["failed"]
    assert set(failed) == {"svd_linear-onnx-fp32-t1", "svd_linear-onnx-int8-t1"}
    assert "export" in failed["svd_linear-onnx-fp32-t1"]
    catalog = load_catalog(first_run / "first.csv")
    assert "svd_linear-torch-fp32-cpu1-b4" in catalog  # torch still serves it


def test_second_run_reuses_cached_artifacts_and_measurements(first_run: Path) -> None:
    assert profile_cli.main(_overrides(first_run, "second.csv")) == 0
    meta = json.loads((first_run / "second.csv.meta.json").read_text())
    assert meta["measured_runners"] == 0 and meta["cached_runners"] == 7
    assert (first_run / "first.csv").read_text() == (first_run / "second.csv").read_text()


def test_bad_override_is_a_config_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["profile", "zoo=digits", "device=tpu"]) == 2
    assert "device" in capsys.readouterr().err
    assert cli.main(["profile", "zoo=digits", "threads=[x]"]) == 2
