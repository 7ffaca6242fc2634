"""The Hydra edge both command lines share: where the packaged configs are, and composing them.

The YAML config groups live in the source tree's ``configs/`` and install as the package
``infaas_configs`` (``setup.py`` maps the directory; ``pyproject.toml`` lists its data), so
``infaas-sim`` and ``infaas-real`` find them through :mod:`importlib.resources` in a source
checkout and in a wheel install alike — never through a path relative to a module file.

Composing writes nothing and returns plain dicts: the core never sees a ``DictConfig`` and
never reads YAML (STYLE.md habits 4 and 15). A policy gets its full params from here.

- :func:`config_dir` — the directory of the packaged configs (what Hydra searches).
- :func:`compose` — ``<config_name>.yaml`` (or no primary config) with Hydra overrides.
- :func:`group_options` — the options of a config group (``policy`` -> ``infaas``, ...).
- :func:`compose_group` — one option of a group, composed through its ``defaults:``.
- :func:`policy_params` — ``compose_group("policy", name)``: what a backend passes to
  ``make_policy``; ``updates`` is merged over it (tests and benchmarks change a few keys).
- :func:`merge` — a composed mapping with ``updates`` merged over it key by key (OmegaConf's
  merge, as Hydra merges configs).

Errors: a config that does not compose raises :class:`~infaas_core.errors.ConfigError`
(key ``overrides``); an unknown option raises :class:`~infaas_core.errors.UnknownNameError`
listing the known ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from infaas_core.errors import ConfigError, UnknownNameError

CONFIG_PACKAGE = "infaas_configs"
"""The package the YAML configs install as (the source tree's ``configs/``)."""


def config_dir() -> Path:
    """The directory of the packaged configs, found through ``importlib.resources``."""
    try:
        root = resources.files(CONFIG_PACKAGE)
    except ModuleNotFoundError:
        raise ConfigError(
            "configs", f"the package '{CONFIG_PACKAGE}' is not installed (pip install the project)"
        ) from None
    if not isinstance(root, Path) or not (root / "config.yaml").is_file():
        raise ConfigError("configs", f"'{CONFIG_PACKAGE}' is not a directory of configs: {root}")
    return root


def group_options(group: str) -> tuple[str, ...]:
    """The option names of config group ``group`` (its ``*.yaml`` files), sorted."""
    return tuple(sorted(p.stem for p in (config_dir() / group).glob("*.yaml")))


def compose(config_name: str | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``<config_name>.yaml`` (``None``: no primary config) composed with Hydra ``overrides``,
    resolved, as a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        out = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError("overrides", " ".join(str(exc).split())) from None
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items()}


def compose_group(
    group: str, option: str, overrides: Sequence[str] = (), updates: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Option ``option`` of top-level group ``group`` (``policy``, ``sim``, ``cluster``, ...)
    composed alone (``+<group>=<option>`` and ``overrides``, e.g. ``policy.selection.ordering=cost``),
    then ``updates`` merged over it key by key."""
    known = group_options(group)
    if option not in known:
        raise UnknownNameError(group, option, known)
    node = compose(None, [f"+{group}={option}", *overrides])[group]
    return merge(node, updates, key=group) if updates else dict(node)


def merge(base: Mapping[str, Any], updates: Mapping[str, Any] | None, *, key: str = "config") -> dict[str, Any]:
    """A copy of ``base`` with ``updates`` merged over it: nested mappings key by key, any other
    value (``null`` included) replaces what was there. Errors name ``key``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        merged = OmegaConf.to_container(OmegaConf.merge(dict(base), dict(updates or {})), resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(key, " ".join(str(exc).split())) from None
    assert isinstance(merged, dict)
    return {str(k): v for k, v in merged.items()}


def policy_params(
    name: str, overrides: Sequence[str] = (), updates: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The full params of policy ``name``: ``configs/policy/<name>.yaml`` with its defaults."""
    return compose_group("policy", name, overrides, updates)
