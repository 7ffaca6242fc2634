"""Policies by name. Importing this package registers every built-in policy."""

from infaas_core.policies import clipper_plus, infaas, sagemaker_plus, static
from infaas_core.policies.base import Policy, PolicyContext, known_policies, make_policy, register

__all__ = [
    "Policy",
    "PolicyContext",
    "clipper_plus",
    "infaas",
    "known_policies",
    "make_policy",
    "register",
    "sagemaker_plus",
    "static",
]
