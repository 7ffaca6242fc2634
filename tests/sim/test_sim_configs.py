"""Every simulator config composes: each option of each group (with the defaults for the
others) gives a config that :func:`infaas_sim.config.inputs_from_config` accepts, and the
overrides the command line documents work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from infaas_core.errors import ConfigError
from infaas_sim.cli import CONFIG_DIR, CONFIG_NAME, check_composes
from infaas_sim.config import SimSettings, inputs_from_config

GROUPS = ("policy", "trace", "cluster", "catalog", "apps", "sim", "experiment")
# groups whose options need data that is not in the repository (downloaded traces)
NEEDS_DOWNLOAD = {("trace", "azure_functions"), ("trace", "azure_llm"), ("trace", "twitter")}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _compose(overrides: list[str]) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=CONFIG_NAME, overrides=overrides)
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def _cases() -> list[tuple[str, str]]:
    return [(g, o) for g in GROUPS for o in _options(g)]


@pytest.mark.parametrize(("group", "option"), _cases())
def test_every_group_option_composes_and_validates(group: str, option: str) -> None:
    """``<group>=<option>`` composes with the defaults, and the result builds a run's inputs
    (or fails with a ConfigError naming a key, for combinations that cannot work)."""
    if (group, option) in NEEDS_DOWNLOAD:
        pytest.skip("trace data is downloaded separately (traces/README.md)")
    if not (CONFIG_DIR.parent / "catalogs" / "imagenet.csv").exists() and group != "catalog":
        pytest.skip("the default catalog (configs/catalog/imagenet.yaml) is not in this checkout yet")
    cfg = _compose([f"{group}={option}", "trace.duration_s=2"] if group != "experiment" else [f"{group}={option}"])
    try:
        inputs = inputs_from_config(cfg)
    except ConfigError as e:
        pytest.fail(f"{group}={option}: {e}")
    assert inputs.apps and len(inputs.catalog) > 0


def test_documented_overrides_work() -> None:
    """policy=, trace=, trace.duration_s=, trace.rate_qps=, catalog.path=, cluster=, apps=, seed=."""
    if not (CONFIG_DIR.parent / "catalogs" / "imagenet.csv").exists():
        pytest.skip("the default catalog is not in this checkout yet")
    cfg = _compose(["policy=clipper_plus", "trace=poisson", "trace.duration_s=3", "trace.rate_qps=250",
                    "cluster=aws_all", "apps=default", "seed=7", "sim.latency_model=deterministic"])
    inputs = inputs_from_config(cfg)
    assert inputs.policy == "clipper_plus" and inputs.seed == 7
    assert inputs.arrivals.duration_s == 3 and inputs.arrivals.count is not None
    assert 500 < inputs.arrivals.count < 1000
    assert inputs.sim.latency_model == "deterministic"


def _sim_default() -> dict:
    import yaml

    return yaml.safe_load((CONFIG_DIR / "sim" / "default.yaml").read_text())


def test_the_default_sim_group_is_the_only_source_of_defaults() -> None:
    """Rule: configs/sim/default.yaml holds every setting; SimSettings has no defaults of its
    own, so leaving a key out fails naming it (the two cannot drift apart)."""
    d = _sim_default()
    assert SimSettings.from_mapping(d).latency_model == d["latency_model"]
    with pytest.raises(TypeError):
        SimSettings()  # type: ignore[call-arg]
    for key in d:
        with pytest.raises(ConfigError, match=rf"sim\.{key}: missing key"):
            SimSettings.from_mapping({k: v for k, v in d.items() if k != key})


def test_unknown_sim_key_and_unknown_latency_model_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"sim\.latency_modell"):
        SimSettings.from_mapping({**_sim_default(), "latency_modell": "profile"})
    with pytest.raises(ConfigError, match=r"sim\.latency_model.*known: deterministic, exponential, profile"):
        SimSettings.from_mapping({**_sim_default(), "latency_model": "gaussian"})


def test_check_composes_reports_a_bad_override_in_one_line() -> None:
    """The CLI's pre-check: a bad key or group option (first job of a sweep) -> one line."""
    if not (CONFIG_DIR.parent / "catalogs" / "imagenet.csv").exists():
        pytest.skip("the default catalog is not in this checkout yet")
    assert check_composes([]) is None
    assert check_composes(["--help"]) is None
    for args in (["trace.no_such_key=3"], ["-m", "sim=no_such_sim,default"], ["-m", "seed=1,2", "sim=default,no_such_sim"]):
        problem = check_composes(args)
        assert problem is not None and "\n" not in problem
    assert "no_such_sim" in (check_composes(["-m", "seed=1,2", "sim=default,no_such_sim"]) or "")


def test_hydra_sweep_subdirs_are_named_by_overrides() -> None:
    cfg = (Path(CONFIG_DIR) / "config.yaml").read_text()
    assert "subdir: ${hydra.job.override_dirname}" in cfg
