"""Policies by name. Importing this package registers every built-in policy."""

from infaas_core.policies import static
from infaas_core.policies.base import Policy, PolicyContext, known_policies, make_policy, register

__all__ = ["Policy", "PolicyContext", "known_policies", "make_policy", "register", "static"]
