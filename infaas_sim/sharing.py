"""Event-scale CPU sharing (``sim.frontend.sharing: event``): each CPU batch is stretched over
its own run by the machine's CPU demand while it runs.

On a small machine the server's front end, the load generator and the worker processes share
the cores. The window model (:meth:`infaas_sim.cluster.SimMechanism._share_cpu`) stretches a
window's service by the previous window's mean demand, so a burst — the front end busy for a
few tens of milliseconds while batches run — is averaged away over a second. Here a batch that
starts at ``s`` with nominal (uncontended) time ``S`` runs at speed

    speed(t) = min(1, cores / demand(t)),
    demand(t) = other(s) + 1 + busy_cores x front_end_busy(t)

until its work ``S`` is done, where ``front_end_busy(t)`` is how many of the front end's
servers are serving at ``t`` (known exactly: the front-end stage is computed over the whole
trace before the policy runs, :func:`infaas_sim.frontend.busy_levels`), ``busy_cores`` the
cores the front end uses while it serves (its thread and the load generator's process,
calibrated), and ``other(s)`` the rest of the machine's demand when the batch starts: the
worker's other busy CPU replicas, its loading ones (``loading_cores`` each) and other work
(``background_cores``). That is processor sharing between the batch and the front end at the
resolution of the front end's own busy periods.

**The transfer on the front end's loop** (``sim.frontend.transfer_on_loop``): the real
server writes a batch to its worker process from the same event loop that serves the front
end (an image is 600 kB, many pipe-fulls), so while the loop serves other requests a
dispatched batch does not start before the loop's next turn: the first pipe-full goes at once,
the rest after the request the loop is serving (one front-end service). Re-simulating two
real validation runs of imagenet_cpu_small (736 queries each; the real server ran 96 and 84 of
them in batches shared with another query): with this hold 125 and 109 did, holding the batch
for the whole busy period 132 and 119, no hold 34 and 22. With the switch on, a
batch that could start at ``s`` while the front end serves a request starts when that request
leaves the front end (:meth:`EventSharing.loop_free`) and takes every query waiting then (that
request included); the calibrated in-slot time (measured with an idle loop) runs from there.

What it leaves out: the front end's own slowdown (its stage keeps its calibrated time), the
other replicas' demand changing while the batch runs (it is read once, at the start), and the
state of queues not yet advanced to ``s`` (the data plane advances queues lazily; in
``infaas-real validate``'s scenarios one or two CPU instances run at a time).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence

import numpy as np

from infaas_core.control.cluster import Instance
from infaas_sim.frontend import busy_levels


class EventSharing:
    """The stretch of one CPU batch on a machine of ``cores`` shared with the front end."""

    __slots__ = ("background", "busy_cores", "cores", "departures", "levels", "loading", "service_s", "times",
                 "transfer_on_loop")

    def __init__(self, cores: int, busy_cores: float, loading_cores: float, background_cores: float,
                 departures: Sequence[float], service_s: float, transfer_on_loop: bool = False) -> None:
        self.cores = float(cores)
        self.busy_cores = float(busy_cores)
        self.loading = float(loading_cores)
        self.background = float(background_cores)
        self.transfer_on_loop = transfer_on_loop
        self.departures = list(departures)  # when each query leaves the front end (sorted)
        self.service_s = float(service_s)  # the front end's time per query
        # its busy level changes (sorted): levels[j] on [times[j], times[j+1])
        self.times, self.levels = busy_levels(np.asarray(self.departures), self.service_s)

    def other_demand(self, inst: Instance, s: float) -> float:
        """Cores the rest of ``inst``'s worker wants at ``s``: its CPU replicas busy past ``s``
        (this batch's replica is free at ``s``, so it is not among them), the loading ones,
        and other work."""
        demand = self.background
        for other in inst.worker.instances:
            if not other.variant.is_cpu or other.mech is None:
                continue
            for free, b in other.mech.servers:
                if free > s:
                    demand += 1.0 if b else self.loading  # (b == 0: a replica not yet ready: loading)
        return demand

    def finish(self, s: float, work_s: float, other: float) -> float:
        """When a batch starting at ``s`` with ``work_s`` seconds of uncontended work ends."""
        cores, k, times, levels = self.cores, self.busy_cores, self.times, self.levels
        base = other + 1.0
        t, left = s, work_s
        j = bisect_right(times, t) - 1  # the level in force at t (-1: before the first change)
        n = len(times)
        while True:
            level = levels[j] if j >= 0 else 0
            demand = base + k * level
            speed = 1.0 if demand <= cores else cores / demand
            seg_end = times[j + 1] if j + 1 < n else math.inf
            room = (seg_end - t) * speed
            if room >= left:
                return t + left / speed
            left -= room
            t = seg_end
            j += 1


    def loop_free(self, s: float) -> float:
        """When a batch that could start at ``s`` starts: ``s`` if the front end is idle then,
        else when the request it is serving at ``s`` leaves it (the loop's next turn)."""
        dep = self.departures
        j = bisect_right(dep, s)  # the first request to leave the front end after s
        if j < len(dep) and dep[j] - self.service_s <= s:
            return dep[j]
        return s


def stretcher(sharing: EventSharing, inst: Instance) -> Callable[[float, float], float]:
    """The data plane's hook for one CPU instance: ``(start, work) -> finish``."""

    def finish(s: float, work_s: float) -> float:
        return sharing.finish(s, work_s, sharing.other_demand(inst, s))

    return finish
