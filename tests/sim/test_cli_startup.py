"""``infaas-sim`` start-up validation (infaas_core/control/startup.py): a run that cannot work
exits 2 before it starts, with exactly one line on stderr naming the config key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sim_helpers import REPO

QUICK = ("trace=poisson", "trace.rate_qps=20", "trace.duration_s=2", "sim.progress=off")
GPU_VARIANT = "resnet50-tensorrt-fp16-gpu-v100-b1"  # in catalogs/imagenet.csv


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cluster=never`` (no type may run a worker), ``cluster=tiny_box`` (too small for any
    variant) and ``apps=bogus`` (a task no catalog row provides) on the config search path."""
    d = tmp_path_factory.mktemp("cfg")
    (d / "cluster").mkdir()
    box = "{price_usd_per_hour: 0.1, vcpus: 1, memory_gb: 0.001, startup_s: 1}"
    (d / "cluster" / "never.yaml").write_text(
        "instance_types:\n  m5.2xlarge: {price_usd_per_hour: 0.384, vcpus: 8, memory_gb: 32, startup_s: 60}\n"
        "initial_workers: {m5.2xlarge: 0}\nmax_workers: {m5.2xlarge: 0}\n")  # fmt: skip
    (d / "cluster" / "tiny_box.yaml").write_text(
        f"instance_types:\n  box: {box}\ninitial_workers: {{box: 1}}\nmax_workers: {{box: 1}}\n")
    (d / "apps").mkdir()
    (d / "apps" / "bogus.yaml").write_text("bogus: {task: nope, latency_slo_ms: 100, share: 1}\n")
    return d


def _error_line(tmp_path: Path, *args: str) -> str:
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "infaas_sim", *args, *QUICK, f"hydra.run.dir={run}"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert not (run / "summary.json").exists()
    return lines[0]


def test_an_app_naming_an_unknown_task_exits_2_naming_its_key(tmp_path: Path, config_dir: Path) -> None:
    line = _error_line(tmp_path, "--config-dir", str(config_dir), "apps=bogus")
    assert line.startswith("infaas-sim: error: apps.bogus.task: no catalog row provides task 'nope'")
    assert "known: classification-imagenet-224" in line


def test_an_app_added_by_override_is_checked_too(tmp_path: Path) -> None:
    line = _error_line(tmp_path, "apps=tiny", "+apps.bogus={model: nope, latency_slo_ms: 100, share: 1}")
    assert "apps.bogus.model: no catalog row provides model 'nope'" in line and "; known: " in line


def test_an_app_needing_hardware_the_cluster_lacks_exits_2(tmp_path: Path) -> None:
    line = _error_line(tmp_path, "cluster=cpu_only", "apps=tiny",
                       f"+apps.gpu={{variant: {GPU_VARIANT}, latency_slo_ms: 100, share: 1}}")  # fmt: skip
    assert f"apps.gpu.variant: {GPU_VARIANT} runs only on gpu-v100" in line and "offers cpu" in line


def test_a_pinned_baseline_whose_pins_the_cluster_cannot_run_exits_2(tmp_path: Path) -> None:
    """apps=default pins accelerator variants; clipper_plus on a CPU-only cluster cannot run
    them (infaas, which ignores the pins, can: its accelerator rows are just unused)."""
    line = _error_line(tmp_path, "cluster=cpu_only", "policy=clipper_plus")
    assert "apps.photo-tagging.fixed_variant: vit_b_16-tensorrt-fp16-gpu-v100-b16 runs only on gpu-v100" in line


def test_a_cluster_that_can_never_run_a_worker_exits_2(tmp_path: Path, config_dir: Path) -> None:
    line = _error_line(tmp_path, "--config-dir", str(config_dir), "cluster=never", "apps=tiny")
    assert "cluster.max_workers: " in line and "never run a worker" in line


def test_a_cluster_too_small_for_every_variant_exits_2(tmp_path: Path, config_dir: Path) -> None:
    line = _error_line(tmp_path, "--config-dir", str(config_dir), "cluster=tiny_box", "apps=tiny")
    assert "cluster.instance_types: " in line and "'tagging'" in line
