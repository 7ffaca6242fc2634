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

**Idle fast-forward** (the simulator's ``sim.idle_fast_forward``). Over idle time every part
still runs every period, so a trace with arrivals at 0 s and at 1e9 s would run 1e9 windows.
:meth:`ControlLoop.settled` tells the backend when those runs can no longer change anything,
and :meth:`ControlLoop.skip_to` then drops them up to the next arrival. Exactness — a run
with the skip gives the same results, bit for bit, as one without:

1. *A fixed point.* After each instant at which parts ran, with the backend's data plane
   idle (nothing queued, in service or unrecorded; no start-up, load or unload pending —
   the backend's ``idle``), the loop takes the complete state the parts read and write: the
   policy object walked to its leaves (:func:`state_fingerprint`: every attribute, counter,
   timestamp and cache; the catalog, the view and frozen values by identity), the cluster's
   workers, instances, published statistics, utilisation, flags, refusal and event counts
   (:func:`cluster_state`) and the backend's own ``extra`` state. A change, or a view
   version that moved by anything but the one bump each closed window makes, restarts the
   count; the state is *settled* once it has stayed the same for ``quiet_s``.
2. *No clock left to read.* A policy reads time only as ``view.now_s`` compared with a
   stored time plus a duration (``Sustained``, ``Cooldown``, a blacklist's expiry, the
   pressure window, ``idle_s``); each such comparison flips at most once as time grows.
   The durations are in its params (keys ending ``_s`` or ``_ms``, STYLE habit 7), its
   periods, the catalog's load latencies and the workers' start-up times;
   ``quiet_s`` is at least the longest of them (:func:`longest_duration_s`) and the
   backend's floor, and at least every part's period (so every part ran on the settled
   state). A stored time never lies in the future by more than such a duration, so after
   ``quiet_s`` of unchanged state every comparison has flipped for good: each part maps
   the state to itself at every later instant, as long as no query arrives.
3. *What a skipped run would have done.* Each part keeps its last due time before the next
   arrival and runs there; the runs before it are dropped. Those would have left the state
   as it is, except for the view version (one bump per window), which :meth:`skip_to` adds,
   and the window's span: the one window that runs closes the whole idle stretch, and an
   idle window's statistics do not depend on its length (0 arrivals / span = 0, no
   completion leaves the (settled) decayed latency as it is, zero busy time gives zero
   utilisation, memory-based GPU utilisation does not read the span). The due times kept
   are those the repeated ``next_s += period`` additions give, computed exactly
   (:func:`last_due_before`). Costs need nothing: a worker costs from its start to its
   removal, whichever windows ran.

A policy that never settles (a counter that keeps counting while idle) is simply never
skipped: slower, never wrong.
"""

from __future__ import annotations

import enum
import functools
import math
import random
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from infaas_core.actions import Action
from infaas_core.catalog import Catalog
from infaas_core.control.cluster import Cluster, Instance, Worker
from infaas_core.model import App, ClusterSpec, InstanceType, Requirements, Variant
from infaas_core.policies.base import Policy, PolicyContext


@dataclass(slots=True)
class _Part:
    name: str
    period_s: float
    run: Callable[[], None]
    next_s: float


class ControlLoop:
    """Runs a policy's periodic parts against one cluster."""

    def __init__(self, policy: Policy, cluster: Cluster, stats_period_s: float,
                 on_window: Callable[[float], None] | None = None, quiet_min_s: float | None = None) -> None:
        """``quiet_min_s``: enables :meth:`settled` (``None``: never settled), with this floor
        under the quiet time."""
        self.policy = policy
        self.cluster = cluster
        self.stats_period_s = stats_period_s
        self.on_window = on_window
        self._last_window_s = cluster.now_s
        self.windows = 0
        """Windows closed so far (skipped ones included)."""
        self.skipped_windows = 0
        """Windows :meth:`skip_to` dropped."""
        self.parts: list[_Part] = [_Part("window", stats_period_s, self._window, stats_period_s)]
        p = policy
        if p.monitor_period_s is not None and p.monitor_period_s != stats_period_s:
            self._add("monitor", p.monitor_period_s, p.monitor)
        if p.model_autoscale_period_s is not None:
            self._add("model_autoscaler", p.model_autoscale_period_s, p.autoscale_models)
        if p.vm_autoscale_period_s is not None:
            self._add("vm_autoscaler", p.vm_autoscale_period_s, p.autoscale_vms)
        self.quiet_s: float | None = None
        """How long the state must stay unchanged before :meth:`settled` (``None``: off)."""
        if quiet_min_s is not None:
            self.quiet_s = max(quiet_min_s, longest_duration_s(policy, cluster), *(q.period_s for q in self.parts))
        self._seen: tuple[list[Any], list[Any] | None] | None = None  # (cluster, policy) state last seen
        self._seen_at = (0, 0)  # (view version, windows) when it was taken
        self._steady_since_s = math.nan

    def _add(self, name: str, period_s: float, part: Callable[[Cluster], list[Action]]) -> None:
        self.parts.append(_Part(name, period_s, lambda: self._act(part), period_s))

    def _act(self, part: Callable[[Cluster], list[Action]]) -> None:
        actions = part(self.cluster)
        if actions:
            self.cluster.apply(actions)

    def _close(self) -> None:
        self.windows += 1
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

    # -- idle fast-forward (module docstring) --------------------------------------------
    def settled(self, now_s: float, idle: bool, extra: object = None) -> bool:
        """Call after :meth:`run_due` ran parts at ``now_s``. ``idle``: the backend's data
        plane holds nothing and nothing is pending; ``extra``: the backend's own state the
        parts' results depend on. True once the state has been the same for ``quiet_s``."""
        if self.quiet_s is None or not idle:
            self._seen = None
            return False
        c = self.cluster
        moved = (c.version - self._seen_at[0], self.windows - self._seen_at[1])
        self._seen_at = (c.version, self.windows)
        cs = state_fingerprint((cluster_state(c), extra))
        if self._seen is None or moved[0] != moved[1] or cs != self._seen[0]:
            self._seen = (cs, None)  # the policy is walked only once the cluster holds still
            self._steady_since_s = now_s
            return False
        ps = state_fingerprint(self.policy)
        if ps != self._seen[1]:
            self._seen = (cs, ps)
            self._steady_since_s = now_s
            return False
        return now_s - self._steady_since_s >= self.quiet_s

    def skip_to(self, t_s: float) -> int:
        """Drop every part's runs due before ``t_s`` except its last one (only when
        :meth:`settled`); returns the windows dropped, whose version bumps are added."""
        dropped = 0
        for p in self.parts:
            if p.next_s >= t_s:
                continue
            last, n = last_due_before(p.next_s, p.period_s, t_s)
            p.next_s = last
            if p.name == "window":
                dropped = n - 1
        if dropped > 0:
            self.windows += dropped
            self.skipped_windows += dropped
            self.cluster.version += dropped
            self._seen_at = (self._seen_at[0] + dropped, self._seen_at[1] + dropped)
        return dropped


_ACCUMULATE_BLOCK = 1 << 20


def last_due_before(start_s: float, period_s: float, t_s: float) -> tuple[float, int]:
    """``(x, n)``: of ``start_s``, ``start_s + period_s``, ... (each term one float addition
    to the one before, as :meth:`ControlLoop.run_due` makes them), the last ``x`` before
    ``t_s`` and how many are before it (``start_s < t_s``). Exact: in closed form where
    every term is a float (start and period on a common binary grid small enough), else by
    the additions themselves, a block of them at a time."""
    a, b = Fraction(start_s), Fraction(period_s)
    grid = Fraction(1, max(a.denominator, b.denominator))
    if Fraction(t_s) + b < grid * (1 << 53):  # every term is a multiple of grid below 2**53 grids
        n = math.ceil((Fraction(t_s) - a) / b)  # terms start + k * period < t for k < n
        return float(a + (n - 1) * b), n
    x, n = start_s, 0
    block = np.full(_ACCUMULATE_BLOCK, period_s)
    while True:
        block[0] = x
        terms = np.add.accumulate(block)  # sequential: the same roundings as one addition at a time
        k = int(np.searchsorted(terms, t_s, side="left"))
        if k < terms.size:
            return float(terms[k - 1]) if k else x, n + k
        n += terms.size - 1
        x = float(terms[-1])


def cluster_state(c: Cluster) -> tuple[Any, ...]:
    """What the policy can read of the cluster, and what the results count, without the
    clock and the view version: workers, instances and their published statistics,
    utilisation, flags, free capacity, and the refusal, event and decision counts."""
    workers = tuple(
        (w.id, w.state, w.instance_type.name, w.free.cores, w.free.memory_mb,
         tuple(w.free.accelerator_memory_mb.items()), tuple(w.utilization.items()), w.scale_down_to_cpu,
         tuple(i.id for i in w.instances))
        for w in c.workers
    )  # fmt: skip
    instances = tuple(
        (i.id, i.state, i.replicas, i.overloaded, i.interfered, i.rate_qps, i.observed_latency_ms, i.batch,
         i.slo_ms, i.busy_s, i.queue_len, i.mech.last_arrival_s if i.mech is not None else None)
        for i in c.instances.values()
    )  # fmt: skip
    return (sum(c.refused.values()), len(getattr(c, "decision_trace", ())), len(c.gone_workers),
            tuple(sorted(c.counts.items())), tuple(sorted(c.peak_workers.items())), workers, instances)  # fmt: skip


_SHARED: tuple[type, ...] = (Catalog, PolicyContext, Cluster, Instance, Worker, ClusterSpec, InstanceType,
                             Variant, App, Requirements)  # fmt: skip
"""Read-only for a policy, or fingerprinted by :func:`cluster_state`: compared by identity."""
_ATOMS = (int, float, str, bytes, bool, type(None), complex)
_BY_ID = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.BuiltinMethodType,
          functools.partial, type, types.ModuleType)  # fmt: skip


def state_fingerprint(root: object) -> list[Any]:
    """Everything reachable from ``root`` flattened to a list of atoms; two equal lists mean
    equal state (NaN counts as equal to NaN). Containers and objects (``__dict__`` and
    ``__slots__``) are walked in their own order, shared read-only objects and callables are
    taken by identity, numpy arrays by their bytes, random generators by their state; an
    object reached twice is a back-reference."""
    out: list[Any] = []
    seen: dict[int, int] = {}
    keep: list[object] = []  # objects made here (states) stay alive so their ids stay unique
    stack: list[object] = [root]
    put = out.append
    kinds = _KINDS
    while stack:
        o = stack.pop()
        t = type(o)
        kind = kinds.get(t)
        if kind is None:
            kind = kinds[t] = _kind(t)
        if kind == _ATOM:
            put(o if o == o else "nan")
            continue
        i = id(o)
        if i in seen:
            put(("ref", seen[i]))
            continue
        seen[i] = len(seen)
        if kind == _MAPPING:
            put((t, len(o)))  # type: ignore[arg-type]
            for k, v in o.items():  # type: ignore[attr-defined]
                stack.append(v)
                stack.append(k)
        elif kind == _SEQUENCE:
            put((t, len(o)))  # type: ignore[arg-type]
            stack.extend(o)  # type: ignore[arg-type]
        elif kind == _ENUM:
            put((t, o.value))  # type: ignore[attr-defined]
        elif kind == _IDENTITY:
            put(("id", i))
        elif kind == _ARRAY:
            put((o.dtype.str, o.shape, o.tobytes()))  # type: ignore[attr-defined]
        elif kind == _SCALAR:
            put(o.item())  # type: ignore[attr-defined]
        elif kind == _RNG:
            st = o.bit_generator.state if isinstance(o, np.random.Generator) else o.getstate()  # type: ignore[attr-defined]
            keep.append(st)
            stack.append(st)
        else:
            put(t)
            d = getattr(o, "__dict__", None)
            if d is not None:
                stack.append(d)
            for name in _slot_names(t):
                stack.append(getattr(o, name, None))
    return out


_ATOM, _MAPPING, _SEQUENCE, _ENUM, _IDENTITY, _ARRAY, _SCALAR, _RNG, _OBJECT = range(9)
_KINDS: dict[type, int] = {}
"""How :func:`state_fingerprint` walks each type (decided once per type)."""


def _kind(t: type) -> int:
    if t in _ATOMS:
        return _ATOM
    if issubclass(t, Mapping):
        return _MAPPING
    if issubclass(t, list | tuple | set | frozenset):
        return _SEQUENCE
    if issubclass(t, enum.Enum):
        return _ENUM
    if issubclass(t, _SHARED) or issubclass(t, _BY_ID):
        return _IDENTITY
    if issubclass(t, np.ndarray):
        return _ARRAY
    if issubclass(t, np.generic):
        return _SCALAR
    if issubclass(t, np.random.Generator | random.Random):
        return _RNG
    return _OBJECT


_SLOT_NAMES: dict[type, tuple[str, ...]] = {}


def _slot_names(t: type) -> tuple[str, ...]:
    names = _SLOT_NAMES.get(t)
    if names is None:
        names = _SLOT_NAMES[t] = tuple(n for cls in t.__mro__ for n in _slots(cls) if n not in ("__dict__", "__weakref__"))
    return names


def _slots(cls: type) -> Iterable[str]:
    s = cls.__dict__.get("__slots__", ())
    return (s,) if isinstance(s, str) else s


def longest_duration_s(policy: Policy, cluster: Cluster) -> float:
    """The longest duration a policy may compare elapsed time with: every number in its
    params under a key ending ``_s`` (or ``_ms``, in seconds), its periods, the catalog's
    load latencies and the instance types' start-up times."""
    found: list[float] = [0.0]

    def walk(m: object) -> None:
        if isinstance(m, Mapping):
            for k, v in m.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    if str(k).endswith("_s"):
                        found.append(float(v))
                    elif str(k).endswith("_ms"):
                        found.append(float(v) / 1000.0)
                else:
                    walk(v)
        elif isinstance(m, list | tuple):
            for v in m:
                walk(v)

    walk(policy.params)
    for p in (policy.monitor_period_s, policy.model_autoscale_period_s, policy.vm_autoscale_period_s):
        if p is not None:
            found.append(float(p))
    found.extend(v.load_latency_ms / 1000.0 for v in cluster.catalog.variants)
    found.extend(t.startup_s for t in cluster.cluster.instance_types)
    return max(found)
