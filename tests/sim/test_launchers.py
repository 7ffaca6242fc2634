"""The ready launcher configs in configs/hydra/launcher compose with the simulator's config
(joblib_local, slurm, ray_cluster), and a two-run sweep on a local Ray (the `ray` extra,
which `make test` installs) writes one summary per run and leaves no Ray process behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
LAUNCHERS = REPO / "configs" / "hydra" / "launcher"
RAY_POLICIES = ("infaas", "clipper_plus")
RAY_CPUS = 2
RAY_SWEEP_TIMEOUT_S = 240  # ~30 s on a 2-core machine shared with other work
RAY_EXIT_WAIT_S = 30  # Ray's raylet and GCS stop within a few seconds of the driver
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _launcher(name: str) -> dict:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=False)  # type: ignore[return-value]


def test_joblib_local_takes_its_job_count_from_the_environment() -> None:
    launcher = _launcher("joblib_local")
    assert launcher["_target_"].endswith("JoblibLauncher")
    assert launcher["n_jobs"] == "${oc.env:INFAAS_JOBS,-1}"


def test_slurm_extends_the_submitit_slurm_schema() -> None:
    launcher = _launcher("slurm")
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["cpus_per_task"] == 1 and launcher["timeout_min"] > 0
    assert launcher["partition"] == "${oc.env:INFAAS_SLURM_PARTITION,null}"


def test_ray_cluster_extends_the_local_ray_launcher() -> None:
    """`ray_cluster` is the plugin's local `ray` launcher: ray.init() joins $RAY_ADDRESS when it
    is set and otherwise starts Ray on this machine; every argument that ray.init refuses when
    it joins a cluster is left null, and each run asks for one CPU."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the `ray` extra is not installed")
    launcher = _launcher("ray_cluster")
    assert launcher["_target_"].endswith("ray_launcher.RayLauncher")
    init = launcher["ray"]["init"]
    assert init["address"] == "${oc.env:RAY_ADDRESS,null}"
    assert init["num_cpus"] == "${oc.env:INFAAS_RAY_CPUS,null}"
    assert init["object_store_memory"] is None
    assert launcher["ray"]["remote"] == {"num_cpus": 1}
    assert yaml.safe_load((LAUNCHERS / "ray_cluster.yaml").read_text())["defaults"] == ["ray"]


def _procs_mentioning(text: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if text in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:120]}")
    return found


@pytest.mark.slow
def test_sweep_on_a_local_ray_writes_one_summary_per_run(tmp_path: Path) -> None:
    """`infaas-sim -m hydra/launcher=ray_cluster` on a local Ray of two CPUs: each run is a
    Ray task that writes its own summary.json with its overrides, and when the sweep returns,
    the Ray it started (raylet, GCS, workers) is gone."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the `ray` extra is not installed")
    # Ray's sockets live under its temp dir, and a Unix socket path is limited to 107 bytes:
    # pytest's tmp_path is too deep, so the temp dir is a short one under /tmp.
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    sweep_dir = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "INFAAS_RAY_CPUS")}
    env[RAY_LOOPBACK_ENV] = "0"  # Ray's local-only mode: its node address and ports on 127.0.0.1
    try:
        p = subprocess.run(
            [sys.executable, "-m", "infaas_sim", "-m", "experiment=tiny",
             f"policy={','.join(RAY_POLICIES)}", "trace.duration_s=3",
             "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.num_cpus={RAY_CPUS}",
             f"+hydra.launcher.ray.init._temp_dir={ray_tmp}", f"hydra.sweep.dir={sweep_dir}"],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=RAY_SWEEP_TIMEOUT_S,
        )  # fmt: skip
        out = p.stdout + p.stderr
        assert p.returncode == 0, out[-3000:]
        assert f"Ray Launcher is launching {len(RAY_POLICIES)} jobs" in out
        assert "Started a local Ray instance" in out
        assert out.count("(_run_job pid=") >= len(RAY_POLICIES), "the runs did not execute as Ray tasks"
        summaries = sorted(sweep_dir.rglob("summary.json"))
        assert len(summaries) == len(RAY_POLICIES)
        got = set()
        for f in summaries:
            s = json.loads(f.read_text())
            overrides = yaml.safe_load((f.parent / ".hydra" / "overrides.yaml").read_text())
            assert overrides == ["experiment=tiny", f"policy={s['policy']}", "trace.duration_s=3"]
            assert f.parent.name == f"experiment=tiny,policy={s['policy']},trace.duration_s=3"
            assert s["completed"] > 0
            got.add(s["policy"])
        assert got == set(RAY_POLICIES)
        raylet_logs = list(ray_tmp.glob("session_*/logs/raylet.out"))
        assert raylet_logs and "node:127.0.0.1" in raylet_logs[0].read_text(), "Ray's node is not on loopback"
        deadline = time.monotonic() + RAY_EXIT_WAIT_S
        while (left := _procs_mentioning(str(ray_tmp))) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"Ray processes left behind: {left}"
    finally:
        for line in _procs_mentioning(str(ray_tmp)):  # do not leak them into later tests
            psutil.Process(int(line.split(":")[0])).kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
