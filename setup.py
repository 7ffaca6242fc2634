"""The one piece of package layout pyproject.toml cannot express: the source tree's ``configs/``
(the Hydra config groups, data only) installs as the package ``infaas_configs``, so every command
line finds its configs through importlib.resources (``infaas_edge.config_dir``) in a wheel install
as in a checkout. Everything else about the distribution is in pyproject.toml."""

from setuptools import find_namespace_packages, find_packages, setup

CODE = ["infaas_core*", "infaas_sim*", "infaas_real*", "infaas_edge*", "hydra_plugins*"]
# each config group is a directory of YAML files; listing them as packages ships their data
GROUPS = find_namespace_packages(where="configs", exclude=["__pycache__", "*.__pycache__"])

setup(
    packages=[*find_packages(include=CODE), "infaas_configs", *(f"infaas_configs.{g}" for g in GROUPS)],
    package_dir={"infaas_configs": "configs"},
)
