"""The packaged configs: every command line finds configs/ as the installed package
``infaas_configs`` (importlib.resources), never through a path relative to the source tree,
and every policy composes from there; a wheel install runs ``infaas-sim`` from anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from infaas_edge import config_dir, group_options, policy_params

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTION = ("pyproject.toml", "setup.py", "README.md", "configs", "infaas_core", "infaas_sim", "infaas_real",
                "infaas_edge")  # fmt: skip
CLI_MODULES = ("infaas_sim/cli.py", "infaas_real/server/config.py", "infaas_real/profile_cli.py", "infaas_real/cli.py")

_PROBE = """
import json
from infaas_edge import config_dir, group_options, policy_params
import infaas_sim.cli
print(json.dumps({
    "config_dir": str(config_dir()),
    "cli_config_dir": str(infaas_sim.cli.CONFIG_DIR),
    "policies": {n: policy_params(n).get("monitor_period_s") for n in group_options("policy")},
}))
"""


def test_the_config_dir_is_the_installed_package() -> None:
    """Rule: config_dir() is importlib.resources' view of the package infaas_configs, and the
    command lines use it (none builds a configs path from the source tree)."""
    import infaas_sim.cli

    assert config_dir() == Path(str(resources.files("infaas_configs")))
    assert config_dir() == infaas_sim.cli.CONFIG_DIR
    for rel in CLI_MODULES:
        src = (REPO / rel).read_text()
        assert '/ "configs"' not in src and "__file__" not in src, rel


def test_the_config_dir_follows_the_package_not_the_source_tree(tmp_path: Path) -> None:
    """A copy of configs/ installed as infaas_configs elsewhere is what composes, from any
    working directory: change a value in the copy and the composed policy shows it."""
    site = tmp_path / "site"
    shutil.copytree(config_dir(), site / "infaas_configs", ignore=shutil.ignore_patterns("__pycache__"))
    infaas = site / "infaas_configs" / "policy" / "infaas.yaml"
    text = infaas.read_text()
    assert "monitor_period_s: 1.0 " in text
    infaas.write_text(text.replace("monitor_period_s: 1.0 ", "monitor_period_s: 7.0 ", 1))
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["config_dir"] == got["cli_config_dir"] == str(site / "infaas_configs")
    assert got["policies"]["infaas"] == 7.0  # the copy's value...
    assert got["policies"]["infaas_cost"] == 7.0  # ...reaches the variants through their defaults
    assert policy_params("infaas")["monitor_period_s"] == 1.0  # this process still sees its own package


def test_every_policy_composes_from_the_package() -> None:
    for name in group_options("policy"):
        params = policy_params(name)
        assert params["name"] == name and "latency_decay_divisor" in params["observation"]


@pytest.mark.slow
def test_a_wheel_install_runs_the_simulator_without_the_source_tree(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv (dependencies borrowed from this one, none
    downloaded), run ``infaas-sim`` from an empty directory: the configs come from the wheel."""
    src, wheels, venv, run_dir = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv", tmp_path / "run"
    src.mkdir()
    for name in DISTRIBUTION:  # build from a copy, so the build leaves nothing in the checkout
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, capture_output=True, cwd=tmp_path)  # fmt: skip
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (wheel,) = wheels.glob("infaas_py-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True)  # fmt: skip
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (site / "zz_borrowed_deps.pth").write_text("\n".join(deps) + "\n")  # plain paths: no editable finder
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    out = subprocess.run(
        [str(venv / "bin" / "infaas-sim"), "policy=infaas_cost", "trace.duration_s=2", "sim.progress=off",
         f"catalog.path={REPO / 'catalogs' / 'imagenet.csv'}", f"hydra.run.dir={run_dir}"],
        cwd=empty, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["policy"] == "infaas_cost" and summary["queries"] > 0
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import infaas_edge; print(infaas_edge.config_dir())"],
                           cwd=empty, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(site), where
