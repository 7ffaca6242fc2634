"""The control loop: which part of a policy runs when, over a clock the backend supplies.

Parts and their periods (a period of ``None`` means the part never runs):

1. **window** every ``stats_period_s`` (the policy's monitor period, else ``sim``/``server``
   setting): the cluster closes its observation window
   (:meth:`~infaas_core.control.cluster.Cluster.close_window`), then the policy's monitor runs
   when its period is the window's;
2. **monitor** every ``policy.monitor_period_s``, when it differs from the window;
3. **model autoscaler** every ``policy.model_autoscale_period_s``;
4. **VM autoscaler** every ``policy.vm_autoscale_period_s``.

Part *k* first runs at ``period_k`` and then every ``period_k``; parts due at the same
instant run in the order above (observe, then decide at the worker, then at the cluster —
INFaaS's monitor feeds its autoscalers). Every action a part returns goes through
:meth:`Cluster.apply <infaas_core.control.cluster.Cluster.apply>`.

The backend asks :meth:`ControlLoop.next_due_s` and, when its clock reaches it, calls
:meth:`ControlLoop.run_due` — the simulator from one SimPy process, the server from one
asyncio task. Neither schedules a policy part itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from infaas_core.actions import Action
from infaas_core.control.cluster import Cluster
from infaas_core.policies.base import Policy


@dataclass(slots=True)
class _Part:
    name: str
    period_s: float
    run: Callable[[], None]
    next_s: float


class ControlLoop:
    """Runs a policy's periodic parts against one cluster."""

    def __init__(self, policy: Policy, cluster: Cluster, stats_period_s: float,
                 on_window: Callable[[float], None] | None = None) -> None:
        self.policy = policy
        self.cluster = cluster
        self.stats_period_s = stats_period_s
        self.on_window = on_window
        self._last_window_s = cluster.now_s
        self.parts: list[_Part] = [_Part("window", stats_period_s, self._window, stats_period_s)]
        p = policy
        if p.monitor_period_s is not None and p.monitor_period_s != stats_period_s:
            self._add("monitor", p.monitor_period_s, p.monitor)
        if p.model_autoscale_period_s is not None:
            self._add("model_autoscaler", p.model_autoscale_period_s, p.autoscale_models)
        if p.vm_autoscale_period_s is not None:
            self._add("vm_autoscaler", p.vm_autoscale_period_s, p.autoscale_vms)

    def _add(self, name: str, period_s: float, part: Callable[[Cluster], list[Action]]) -> None:
        self.parts.append(_Part(name, period_s, lambda: self._act(part), period_s))

    def _act(self, part: Callable[[Cluster], list[Action]]) -> None:
        actions = part(self.cluster)
        if actions:
            self.cluster.apply(actions)

    def _close(self) -> None:
        now = self.cluster.now_s
        span = max(now - self._last_window_s, 0.0)
        self._last_window_s = now
        self.cluster.close_window(span)
        if self.on_window is not None:
            self.on_window(span)

    def _window(self) -> None:
        self._close()
        if self.policy.monitor_period_s == self.stats_period_s:
            self._act(self.policy.monitor)

    # -- driving -------------------------------------------------------------------------
    def start(self) -> None:
        """Time 0: the cluster's initial workers, then the policy's initial actions."""
        self.cluster.add_initial_workers()
        self.cluster.apply(self.policy.initial_actions(self.cluster))

    def next_due_s(self) -> float:
        return min((p.next_s for p in self.parts), default=math.inf)

    def run_due(self, now_s: float) -> None:
        """Run every part due at or before ``now_s`` (in the order of the module docstring)."""
        for p in self.parts:
            if p.next_s <= now_s + 1e-12:
                p.run()
                p.next_s += p.period_s
                if p.next_s <= now_s:  # a backend that fell behind skips, never bursts
                    p.next_s = now_s + p.period_s

    def close_final_window(self) -> None:
        """End of a run: close the window in progress (results, no policy decision)."""
        self._close()
