"""The ready launcher configs in configs/hydra/launcher compose with the simulator's config
(joblib_local, slurm) or, for Ray, are well-formed for users who install the plugin; no
test needs Ray."""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
LAUNCHERS = REPO / "configs" / "hydra" / "launcher"


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


def test_ray_cluster_config_is_well_formed_without_the_plugin() -> None:
    """hydra-ray-launcher is optional: its config extends the plugin's `ray` schema."""
    data = yaml.safe_load((LAUNCHERS / "ray_cluster.yaml").read_text())
    assert data["defaults"] == ["ray"]
    assert set(data["ray"]) == {"init", "remote"}
    assert "RAY_ADDRESS" in data["ray"]["init"]["address"]
    assert "pip install hydra-ray-launcher" in (LAUNCHERS / "ray_cluster.yaml").read_text()
