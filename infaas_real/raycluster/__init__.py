"""``infaas-real serve cluster=ray``: INFaaS workers as Ray actors (docs/ray.md).

- :mod:`~infaas_real.raycluster.settings` — the ``ray`` block of ``configs/cluster/ray.yaml``;
- :mod:`~infaas_real.raycluster.mechanism` — the control contract's mechanism on Ray (the
  server process is the driver);
- :mod:`~infaas_real.raycluster.actor` — the worker actor, hosting the single-host executor.

Nothing here imports ``ray`` at import time: the local-only switch
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) must be in the environment before ``ray`` is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infaas_real.executor import ExecutorSettings
from infaas_real.raycluster.settings import LocalRay, RaySettings, ray_settings_from_mapping


def mechanism_factory(settings: RaySettings, connect_now: bool = False) -> Callable[[ExecutorSettings, Callable[[], float]], Any]:
    """What ``LiveState(..., mechanism=...)`` calls to build the Ray mechanism. With
    ``connect_now`` (``infaas-real serve``), Ray is started or joined at once, so that a
    cluster that cannot be reached is a one-line error before the server binds its port."""
    if connect_now:
        from infaas_real.raycluster.mechanism import connect

        connect(settings)

    def build(executor: ExecutorSettings, clock: Callable[[], float]) -> Any:
        from infaas_real.raycluster.mechanism import RayMechanism

        return RayMechanism(settings, executor, clock)

    return build


__all__ = ["LocalRay", "RaySettings", "mechanism_factory", "ray_settings_from_mapping"]
