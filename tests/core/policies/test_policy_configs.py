"""Policy configs and the registry: every configs/policy/*.yaml builds its policy, every key
is required (so none is dead), unknown / missing / bad keys name themselves."""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from policy_world import build, world

from infaas_core.errors import ConfigError, UnknownNameError
from infaas_core.policies import known_policies, make_policy
from infaas_core.policies.infaas_policy import InfaasConfig
from infaas_core.policies.sagemaker_plus import SageMakerPlusConfig
from infaas_core.policies.static import StaticConfig

REPO = Path(__file__).resolve().parents[3]
POLICY_YAMLS = sorted((REPO / "configs" / "policy").glob("*.yaml"))
POLICY_SRC = REPO / "infaas_core" / "policies"


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _leaves(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.extend(_leaves(v, key + "."))
        else:
            out.append(key)
    return out


def _drop(d: dict[str, Any], dotted: str) -> dict[str, Any]:
    d = copy.deepcopy(d)
    node = d
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node[p]
    del node[parts[-1]]
    return d


@pytest.fixture
def no_yaml_defaults(tmp_path, monkeypatch):
    """Make the policies see no configs/policy dir, so params must be complete."""
    monkeypatch.setenv("INFAAS_POLICY_CONFIG_DIR", str(tmp_path))


def test_every_policy_has_a_yaml_and_every_yaml_a_policy():
    """Rule: one configs/policy/<name>.yaml per built-in policy, named by its `name`
    (other tests may register extra policies of their own)."""
    builtin = {"infaas", "infaas_cost", "infaas_no_model_autoscale", "clipper_plus", "sagemaker_plus", "static"}
    assert {p.stem for p in POLICY_YAMLS} == builtin
    assert builtin <= set(known_policies())
    for p in POLICY_YAMLS:
        assert _yaml(p)["name"] == p.stem
        assert p.read_text().startswith("# @package policy")


@pytest.mark.parametrize("path", POLICY_YAMLS, ids=lambda p: p.stem)
def test_every_policy_yaml_builds_its_policy_from_the_file_alone(path, no_yaml_defaults):
    """Rule: the yaml (as a backend passes it) is complete and valid."""
    ctx, view = world()
    p = make_policy(path.stem, ctx, _yaml(path))
    assert p.name == path.stem
    p.initial_actions(view)


@pytest.mark.parametrize("path", POLICY_YAMLS, ids=lambda p: p.stem)
def test_every_yaml_key_is_required_so_none_is_dead(path, no_yaml_defaults):
    """Rule: removing any key fails naming it -> each key maps to a config field."""
    ctx, _ = world()
    data = _yaml(path)
    for leaf in _leaves(data):
        with pytest.raises(ConfigError) as e:
            make_policy(path.stem, ctx, _drop(data, leaf))
        # a key of a family table (max_replicas.cpu) is reported by its table
        assert e.value.key in (f"policy.{leaf}", f"policy.{leaf}".rsplit(".", 1)[0]), leaf


def _fields(cls: type, seen: set[str]) -> None:
    """Every field name of a config dataclass and of the dataclasses nested in it."""
    for name, tp in typing.get_type_hints(cls).items():
        seen.add(name)
        for t in (tp, *typing.get_args(tp)):
            if dataclasses.is_dataclass(t) and isinstance(t, type):
                _fields(t, seen)


def test_every_config_field_is_read_by_the_code():
    """Rule: no dead constants -- every config field is read somewhere as `.field`
    (besides the top-level `name`, checked against the registry)."""
    fields: set[str] = set()
    for cls in (InfaasConfig, SageMakerPlusConfig, StaticConfig):
        _fields(cls, fields)
    src = "\n".join(p.read_text() for p in POLICY_SRC.glob("*.py"))
    unread = sorted(f for f in fields if not re.search(rf"\.{f}\b|\"{f}\"", src))
    assert unread == []


def test_unknown_key_is_rejected_with_its_name():
    ctx, _ = world()
    with pytest.raises(ConfigError) as e:
        build("infaas", ctx, **{"selection.tightslo": 3})
    assert e.value.key == "policy.selection.tightslo" and "known:" in str(e.value)


def test_bad_values_name_their_key():
    ctx, _ = world()
    for key, value in (
        ("selection.ordering", "fastest"),
        ("monitor.gpu.qps_factor", "high"),
        ("model_autoscaler.max_replicas", {"tpu": 2}),
        ("model_autoscaler.slack", 0.9),
        ("vm_autoscaler.scale_in.sustained_evaluations", 1.5),
    ):
        with pytest.raises(ConfigError) as e:
            build("infaas", ctx, **{key: value})
        assert e.value.key.startswith(f"policy.{key}"), (key, e.value.key)


def test_code_defaults_are_the_yaml():
    """Rule: params left out come from configs/policy/<name>.yaml, never from code."""
    ctx, _ = world()
    full = make_policy("infaas", ctx, _yaml(REPO / "configs/policy/infaas.yaml"))
    empty = make_policy("infaas", ctx, {})
    assert full.cfg == empty.cfg  # type: ignore[attr-defined]


def test_name_promises_are_checked():
    """Rule: infaas_cost orders by cost; infaas_no_model_autoscale has no model autoscaler;
    a yaml's name must match the policy it builds."""
    ctx, _ = world()
    with pytest.raises(ConfigError):
        build("infaas_cost", ctx, **{"selection.ordering": "infaas"})
    with pytest.raises(ConfigError):
        make_policy("infaas", ctx, {"name": "static"})
    p = build("infaas_no_model_autoscale", ctx)
    assert p.model_autoscale_period_s is None and p.vm_autoscale_period_s == 2.0


def test_unknown_policy_name_lists_the_known_ones():
    ctx, _ = world()
    with pytest.raises(UnknownNameError) as e:
        make_policy("infass", ctx, {})
    for name in ("infaas", "infaas_no_model_autoscale", "clipper_plus", "sagemaker_plus", "static", "infaas_cost"):
        assert name in str(e.value)
