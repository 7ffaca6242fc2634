"""``clipper_plus``: static provisioning with a user-chosen variant per application.

Rule: each application is served by one fixed variant (``fixed_variants``, or derived from
its requirements by :func:`~infaas_core.policies.pinned.pinned_variants`), with ``replicas``
replicas loaded at time 0; queries go to the least-queued instance; no model-level and no
VM-level scaling. Source: INFAAS.md §4.1, "Clipper+-like = static provisioning" (INFaaS's
worker autoscaler 1 STATIC / 0 NONE with the ``ROUNDROBIN_STATIC`` dispatcher and a fixed
variant per application; the name follows the third-party reimplementation).
"""

from __future__ import annotations

from infaas_core.policies.base import register
from infaas_core.policies.static import StaticPolicy


@register("clipper_plus")
class ClipperPlusPolicy(StaticPolicy):
    """Same mechanism as ``static``; configured by ``configs/policy/clipper_plus.yaml``."""
