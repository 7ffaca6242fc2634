"""Policy configs and the registry: every configs/policy/*.yaml composes (Hydra ``defaults:``)
and builds its policy, every key is required (so none is dead), unknown / missing / bad keys
name themselves, and a variant states only what differs from the config it composes."""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from policy_world import build, world

from infaas_core.errors import ConfigError, UnknownNameError
from infaas_core.policies import known_policies, make_policy
from infaas_core.policies.infaas import InfaasConfig
from infaas_core.policies.sagemaker_plus import SageMakerPlusConfig
from infaas_core.policies.static import StaticConfig
from infaas_edge import config_dir, group_options, policy_params

BUILTIN = ("clipper_plus", "infaas", "infaas_cost", "infaas_no_model_autoscale", "sagemaker_plus", "static")
POLICY_SRC = Path(__file__).resolve().parents[3] / "infaas_core" / "policies"


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


def _without(d: dict[str, Any], *dotted: str) -> dict[str, Any]:
    for key in dotted:
        d = _drop(d, key)
    return d


@pytest.fixture(scope="module")
def composed() -> dict[str, dict[str, Any]]:
    return {name: policy_params(name) for name in BUILTIN}


def test_every_policy_has_a_config_and_every_config_a_policy(composed):
    """Rule: one configs/policy/<name>.yaml per built-in policy, named by its `name`, in
    package `policy` (so `policy=<name>` selects it); other tests may register extra policies."""
    assert group_options("policy") == BUILTIN
    assert set(BUILTIN) <= set(known_policies())
    for name in BUILTIN:
        assert composed[name]["name"] == name
        assert (config_dir() / "policy" / f"{name}.yaml").read_text().startswith("# @package policy")


@pytest.mark.parametrize("name", BUILTIN)
def test_every_composed_policy_config_builds_its_policy(name, composed):
    """Rule: the composed config (what a backend passes) is complete and valid."""
    ctx, view = world()
    p = make_policy(name, ctx, composed[name])
    assert p.name == name
    p.initial_actions(view)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_config_key_is_required_so_none_is_dead(name, composed):
    """Rule: removing any key fails naming it -> each key maps to a config field."""
    ctx, _ = world()
    data = composed[name]
    for leaf in _leaves(data):
        with pytest.raises(ConfigError) as e:
            make_policy(name, ctx, _drop(data, leaf))
        # a key of a family table (max_replicas.cpu) is reported by its table
        assert e.value.key in (f"policy.{leaf}", f"policy.{leaf}".rsplit(".", 1)[0]), leaf


def test_a_policy_built_without_its_config_fails_naming_the_missing_key():
    """Rule: the code holds no defaults (the YAML is the default, and only the edge reads it)."""
    ctx, _ = world()
    for name in BUILTIN:
        with pytest.raises(ConfigError) as e:
            make_policy(name, ctx, {})
        assert e.value.key == "policy.observation" and "missing" in e.value.reason
        observation = policy_params(name)["observation"]
        with pytest.raises(ConfigError) as e:
            make_policy(name, ctx, {"observation": observation})
        assert e.value.key == "policy.name" and "missing" in e.value.reason


def test_variants_state_only_what_differs(composed):
    """Rule (STYLE.md habit 15): a variant composes the config it differs from and sets only
    its own keys; shared blocks are written once."""
    infaas, static = composed["infaas"], composed["static"]
    cost = composed["infaas_cost"]
    assert cost["selection"]["ordering"] == "cost" and cost["selection"]["truncate"] == "after_filter"
    assert cost["vm_autoscaler"]["scale_in"]["remove_cpu_workers"] is True
    assert cost["model_autoscaler"]["memory_slack_mb"] == 1024  # this project's choices; infaas keeps the code's
    assert cost["selection"]["cpu_when_tight"] == "all_forms" and cost["selection"]["accuracy_ties"] == "batch1_latency"
    assert infaas["selection"]["cpu_when_tight"] == "model_form" and infaas["selection"]["accuracy_ties"] == "name"
    own = ("selection.ordering", "selection.truncate", "selection.cpu_when_tight", "selection.accuracy_ties",
           "vm_autoscaler.scale_in.remove_cpu_workers", "model_autoscaler.memory_slack_mb")
    assert _without(cost, "name", *own) == _without(infaas, "name", *own)
    no_mas = composed["infaas_no_model_autoscale"]
    assert no_mas["model_autoscale_period_s"] is None and no_mas["model_autoscaler"] is None
    assert _without(no_mas, "name", "model_autoscale_period_s", "model_autoscaler") == _without(
        infaas, "name", "model_autoscale_period_s", "model_autoscaler"
    )
    assert _without(composed["clipper_plus"], "name", "replicas") == _without(static, "name", "replicas")
    assert composed["sagemaker_plus"]["vm_autoscaler"] == infaas["vm_autoscaler"]
    assert composed["sagemaker_plus"]["fixed_variants"] == static["fixed_variants"]
    blocks = {str(composed[n]["observation"]) for n in BUILTIN}
    assert blocks == {str({"latency_decay_divisor": {"cpu": 15.0, "gpu": 1.5, "inferentia": 1.5},
                           "gpu_utilisation": "memory"})}
    files = sorted((config_dir() / "policy").rglob("*.yaml"))
    for block in ("latency_decay_divisor:", "backoff_s:", "monitor:"):
        assert sum(block in f.read_text() for f in files) == 1, block


def test_command_line_overrides_reach_the_composed_params():
    """`policy.selection.ordering=cost` and `policy.observation...` overrides compose as on the CLI."""
    p = policy_params("infaas", ["policy.selection.ordering=cost", "policy.observation.latency_decay_divisor.cpu=10"])
    assert p["selection"]["ordering"] == "cost" and p["observation"]["latency_decay_divisor"]["cpu"] == 10
    ctx, _ = world()
    assert make_policy("infaas", ctx, p).cfg.selection.ordering == "cost"  # type: ignore[attr-defined]
    with pytest.raises(UnknownNameError) as e:
        policy_params("infass")
    assert "infaas_cost" in str(e.value)
    with pytest.raises(ConfigError) as e2:
        policy_params("infaas", ["policy.selection.ordering"])
    assert e2.value.key == "overrides"


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


def test_name_promises_are_checked():
    """Rule: infaas_cost orders by cost; infaas_no_model_autoscale has no model autoscaler;
    a yaml's name must match the policy it builds."""
    ctx, _ = world()
    with pytest.raises(ConfigError):
        build("infaas_cost", ctx, **{"selection.ordering": "infaas"})
    with pytest.raises(ConfigError):
        make_policy("infaas", ctx, policy_params("static"))
    with pytest.raises(ConfigError):
        make_policy("infaas", ctx, policy_params("infaas", ["policy.name=static"]))
    p = build("infaas_no_model_autoscale", ctx)
    assert p.model_autoscale_period_s is None and p.vm_autoscale_period_s == 2.0


def test_unknown_policy_name_lists_the_known_ones():
    ctx, _ = world()
    with pytest.raises(UnknownNameError) as e:
        make_policy("infass", ctx, {})
    for name in ("infaas", "infaas_no_model_autoscale", "clipper_plus", "sagemaker_plus", "static", "infaas_cost"):
        assert name in str(e.value)
