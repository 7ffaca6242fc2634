"""The INFaaS worker as a Ray actor: one per worker, on the node the mechanism chose.

It hosts the single-host executor unchanged (:class:`infaas_real.executor.Instance`, one
process per replica, the same batching queue, deadline shedding, supervision and retry of a
dead replica's queries), inside the actor's own event loop (an async actor). The server
talks to it through actor calls only:

- ``ready()`` — the first answer (the server measures start-up up to it): node id, address, pid;
- ``load`` / ``add_replicas`` / ``remove_replicas`` / ``unload`` — the instance's replicas;
- ``watch(iid, seen)`` — answers when the instance changed after version ``seen``: its facts
  (serving, gone, replicas, pids, shed counts); the server long-polls it to learn readiness
  and the end of a drain;
- ``infer(iid, x, slo_ms, spent_ms, background)`` — one query (or offline batch); the
  answer, or an error kind and message (never a Ray exception for the executor's own
  refusals); ``infer_many(iid, queries)`` several at once (the server's coalesced call);
  ``cancel_background(iid)`` drops the offline batches not sent yet;
- ``stats()`` — per instance, the busy time, batches and batch items since the last call
  (the window counters only the worker can count);
- ``shutdown()`` — stop every replica now.

A call that names an instance whose ``load`` has not run yet waits for it (Ray does not
promise that an async actor runs calls in the order they were sent).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np

from infaas_core.control.observe import WindowCounters
from infaas_core.errors import BackendError
from infaas_core.model import Variant
from infaas_real.executor import (
    DeadlineRefused,
    ExecutorSettings,
    InferenceFailed,
    Instance,
    Overloaded,
    WorkerDied,
)

Answer = tuple[Any, ...]
"""``("ok", y, queue_ms, infer_ms, batch, replica_pid)`` or ``("error", kind, message)``."""

ERROR_KINDS = ("deadline", "overloaded", "died", "failed", "backend", "gone")


class WorkerActor:
    """Body of the worker actor (wrapped with ``ray.remote`` by the mechanism)."""

    def __init__(self, worker_id: int, executor: ExecutorSettings) -> None:
        self.worker_id = worker_id
        self.executor = executor
        self._t0 = time.perf_counter()
        self.instances: dict[int, Instance] = {}
        self.counters: dict[int, WindowCounters] = {}
        self.versions: dict[int, int] = {}
        self._changed: dict[int, asyncio.Event] = {}
        self._known: dict[int, asyncio.Event] = {}
        self._gone: dict[int, dict[str, Any]] = {}  # facts of the instances that have finished

    def _clock(self) -> float:
        return time.perf_counter() - self._t0

    async def ready(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid()}

    # -- instances -----------------------------------------------------------------------
    async def _instance(self, iid: int) -> Instance | None:
        """The instance ``iid`` once loaded (None if it has already finished)."""
        if iid in self._gone:
            return None
        if iid not in self.instances:
            await self._known.setdefault(iid, asyncio.Event()).wait()
        return self.instances.get(iid)

    async def load(self, iid: int, variant: Variant, replicas: int) -> None:
        self.counters[iid] = WindowCounters()
        self.versions[iid] = 0
        self._changed[iid] = asyncio.Event()
        self.instances[iid] = Instance(iid, variant, self.worker_id, replicas, self.executor, self._clock,
                                       lambda _ei: self._on_change(iid), lambda: self.counters[iid])  # fmt: skip
        self._known.setdefault(iid, asyncio.Event()).set()

    def _on_change(self, iid: int) -> None:
        self.versions[iid] = self.versions.get(iid, 0) + 1
        ev = self._changed.get(iid)
        if ev is not None:
            ev.set()
            self._changed[iid] = asyncio.Event()
        ei = self.instances.get(iid)
        if ei is not None and ei.gone:
            self._gone[iid] = self._facts(iid, ei)
            del self.instances[iid]

    def _facts(self, iid: int, ei: Instance) -> dict[str, Any]:
        return {
            "version": self.versions.get(iid, 0), "serving": ei.serving, "gone": ei.gone, "gave_up": ei.gave_up,
            "live_replicas": ei.live_replicas, "pids": ei.replica_pids, "ready_pids": ei.ready_pids,
            "shed": dict(ei.shed), "hung": list(ei.hung), "service_ms_per_row": ei.service_ms_per_row,
            "overhead_ms": ei.overhead_ms, "loop_lag_ms": ei.loop_lag_ms, "queue_len": ei.queue_len,
        }  # fmt: skip

    async def watch(self, iid: int, seen: int) -> dict[str, Any]:
        """The instance's facts once its version is past ``seen``."""
        while True:
            ei = await self._instance(iid)
            if ei is None:
                return self._gone[iid]
            if self.versions[iid] > seen:
                return self._facts(iid, ei)
            await self._changed[iid].wait()

    async def add_replicas(self, iid: int, n: int) -> None:
        ei = await self._instance(iid)
        if ei is not None:
            ei.add_replicas(n)

    async def remove_replicas(self, iid: int, n: int) -> None:
        ei = await self._instance(iid)
        if ei is not None:
            ei.remove_replicas(n)

    async def unload(self, iid: int) -> None:
        ei = await self._instance(iid)
        if ei is not None:
            ei.unload()

    # -- queries -------------------------------------------------------------------------
    async def infer(self, iid: int, x: np.ndarray, slo_ms: float, spent_ms: float, background: bool) -> Answer:
        """One query (``spent_ms`` of its SLO spent before it reached the worker); with
        ``background`` an offline batch (the executor's low-priority queue, no SLO)."""
        ei = await self._instance(iid)
        if ei is None:
            return ("error", "gone", f"instance {iid} on worker {self.worker_id} has been unloaded")
        try:
            s = await (ei.submit_background(x) if background else ei.submit(x, slo_ms, spent_ms))
        except DeadlineRefused as exc:
            return ("error", "deadline", str(exc))
        except Overloaded as exc:
            return ("error", "overloaded", str(exc))
        except WorkerDied as exc:
            return ("error", "died", str(exc))
        except InferenceFailed as exc:
            return ("error", "failed", str(exc))
        except BackendError as exc:
            return ("error", "backend", str(exc))
        except asyncio.CancelledError:
            return ("error", "cancelled", "cancelled")
        return ("ok", s.y, s.queue_ms, s.infer_ms, s.batch, s.replica_pid)

    async def infer_many(self, iid: int, queries: list[tuple[np.ndarray, float, float]]) -> list[Answer]:
        """Several queries to one instance (the server sends together those that waited for a
        call), each submitted at once; their answers once all have one."""
        if len(queries) == 1:
            x, slo_ms, spent_ms = queries[0]
            return [await self.infer(iid, x, slo_ms, spent_ms, False)]
        return list(await asyncio.gather(*(self.infer(iid, x, slo_ms, spent_ms, False) for x, slo_ms, spent_ms in queries)))

    async def cancel_background(self, iid: int) -> int:
        ei = self.instances.get(iid)
        return 0 if ei is None else ei.cancel_background()

    # -- observation ---------------------------------------------------------------------
    async def stats(self) -> dict[int, tuple[float, int, int]]:
        """Per instance: (busy replica-seconds, batches, batch items) since the last call."""
        now = self._clock()
        out: dict[int, tuple[float, int, int]] = {}
        for iid, ei in self.instances.items():
            ei.collect(now)
            c = self.counters[iid]
            out[iid] = (c.busy_s, c.batches, c.batch_items)
            self.counters[iid] = WindowCounters()
        return out

    async def shutdown(self) -> None:
        for ei in list(self.instances.values()):
            ei.kill()
