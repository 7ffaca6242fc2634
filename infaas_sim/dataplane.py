"""The data plane: one FCFS queue with batching per variant instance, advanced in bulk.

An instance (``replicas`` copies of one variant on one worker) owns one queue. Its state
is a few Python lists, not one object per query:

- ``pt`` / ``pk`` / ``pd``: arrival time, key (``query_id << KEY_BITS | app``) and deadline
  of every query routed here and not yet flushed, in arrival order; ``head`` is the first
  query that has not started (those before it are served or dropped and wait for
  :meth:`Instance.flush`);
- ``servers``: a heap of ``(free_s, last_batch)`` per replica — when each replica next
  frees (a loading replica frees at its ready time, so queries routed to a loading
  instance simply wait);
- ``b_start`` / ``b_fin`` / ``b_size``: one record per batch (a run of dropped queries is
  a record with ``fin = NaN``) since the last flush. Batches cover consecutive runs of the
  queue, so per-query start/finish times are recovered with ``numpy.repeat`` at flush.

:meth:`Instance.advance` runs the per-batch recursion up to a time ``t_end``: the
earliest-free replica starts a batch at ``s = max(free, first waiting arrival)`` with every
waiting query that arrived by ``s`` (at most ``max_batch``); with a batch timeout it waits
until ``max_batch`` are there or the oldest has waited ``batch_timeout_s``. A batch is only
committed if everything that decides it is known (all arrivals before ``t_end`` are
routed), so advancing in windows gives exactly the result of one long run.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from heapq import heapreplace
from typing import TYPE_CHECKING

import numpy as np

from infaas_core.model import Variant
from infaas_core.view import InstanceState
from infaas_sim.latency import NOISE_EXPONENTIAL, NOISE_NONE, NoiseStream

if TYPE_CHECKING:
    from infaas_sim.cluster import Worker

KEY_BITS = 8
"""Low bits of a query key that hold its application index (at most 256 applications)."""
KEY_MASK = (1 << KEY_BITS) - 1
NAN = math.nan


class Flushed:
    """Per-query results of one instance since its last flush (numpy arrays)."""

    __slots__ = ("arrival_s", "batch", "finish_s", "keys", "served_batches", "start_s")

    def __init__(self, arrival_s: np.ndarray, keys: np.ndarray, start_s: np.ndarray,
                 finish_s: np.ndarray, batch: np.ndarray) -> None:
        self.arrival_s = arrival_s
        self.keys = keys
        self.start_s = start_s
        self.finish_s = finish_s  # NaN: dropped
        self.batch = batch  # 0: dropped
        self.served_batches: np.ndarray = batch[:0]  # sizes of the batches served (one per batch)


class Instance:
    """A variant loaded on a worker; implements :class:`infaas_core.view.InstanceView`."""

    __slots__ = (
        "_clock",
        "b_fin",
        "b_size",
        "b_start",
        "batch",
        "busy_s",
        "factor",
        "head",
        "id",
        "interfered",
        "last_routed_s",
        "latency_ms",
        "loaded_s",
        "mark",
        "max_batch",
        "overloaded",
        "p50_s",
        "pd",
        "pk",
        "pt",
        "rate_qps",
        "servers",
        "sig",
        "slo_ms",
        "state",
        "variant",
        "worker",
        "worker_id",
    )  # fmt: skip

    def __init__(self, iid: int, variant: Variant, worker: Worker, tables: tuple[list[float], list[float]],
                 clock: list[float]) -> None:
        self.id = iid
        self.variant = variant
        self.worker = worker
        self.worker_id = worker.id
        self.state = InstanceState.LOADING
        self.max_batch = variant.max_batch
        self.p50_s, self.sig = tables
        self.factor = 1.0  # accelerator sharing stretch (cluster.py)
        self.pt: list[float] = []
        self.pk: list[int] = []
        self.pd: list[float] = []
        self.head = 0
        self.servers: list[tuple[float, int]] = []
        self.b_start: list[float] = []
        self.b_fin: list[float] = []
        self.b_size: list[int] = []
        self.busy_s = 0.0  # nominal (unstretched) service seconds since the last stats tick
        self.mark = 0  # len(pt) at the last stats tick: pt[mark:] were routed since
        # observed over the last stats window (published to policies)
        self.rate_qps = 0.0
        self.latency_ms = 0.0
        self.batch = 0.0
        self.slo_ms = math.inf
        self.overloaded = False
        self.interfered = False
        self.loaded_s = clock[0]
        self.last_routed_s = -math.inf
        self._clock = clock  # shared one-element list holding the view's now_s

    # -- InstanceView ----------------------------------------------------------------------
    @property
    def replicas(self) -> int:
        return len(self.servers)

    @property
    def queue_len(self) -> int:
        now = self._clock[0]
        in_service = 0
        for free, b in self.servers:
            if free > now:
                in_service += b
        return len(self.pt) - self.head + in_service

    @property
    def idle_s(self) -> float:
        last = self.pt[-1] if len(self.pt) > self.mark else self.last_routed_s
        return self._clock[0] - (last if last > self.loaded_s else self.loaded_s)

    @property
    def drained_at_s(self) -> float:
        """When the last started batch finishes (``inf`` while queries still wait)."""
        if self.head < len(self.pt):
            return math.inf
        return max(f for f, _ in self.servers) if self.servers else 0.0

    # -- the recursion ---------------------------------------------------------------------
    def advance(self, t_end: float, noise: NoiseStream, timeout_s: float, drop_late: bool) -> None:
        """Start every batch whose start time is decided before ``t_end``."""
        pt = self.pt
        n = len(pt)
        h = self.head
        if h >= n:
            return
        if timeout_s > 0.0 or drop_late:
            self._advance_general(t_end, noise, timeout_s, drop_late)
            return
        servers = self.servers
        mb = self.max_batch
        p50 = self.p50_s
        sig = self.sig
        f = self.factor
        kind = noise.kind
        k = noise.pos
        buf = noise.buf
        if kind and len(buf) - k < n - h:
            buf = noise.ensure(n - h)
            k = noise.pos
        bs = self.b_start.append
        bf = self.b_fin.append
        bz = self.b_size.append
        exp = math.exp
        busy = 0.0
        while h < n:
            free = servers[0][0]
            a = pt[h]
            s = free if free > a else a
            if s >= t_end:
                break
            hi = h + mb
            if hi > n:
                hi = n
            if pt[hi - 1] > s:
                hi = bisect_right(pt, s, h, hi)
            b = hi - h
            if kind == NOISE_NONE:
                svc = p50[b]
            elif kind == NOISE_EXPONENTIAL:
                svc = p50[b] * buf[k]
                k += 1
            else:
                svc = p50[b] * exp(sig[b] * buf[k])
                k += 1
            busy += svc
            fin = s + svc * f
            heapreplace(servers, (fin, b))
            bs(s)
            bf(fin)
            bz(b)
            h = hi
        noise.pos = k
        self.head = h
        self.busy_s += busy

    def _advance_general(self, t_end: float, noise: NoiseStream, timeout_s: float, drop_late: bool) -> None:
        """The same recursion with a batch timeout and/or dropping of late queries."""
        pt, pk, pd = self.pt, self.pk, self.pd
        n = len(pt)
        h = self.head
        servers = self.servers
        mb = self.max_batch
        buf = noise.ensure(n - h)
        k = noise.pos
        busy = 0.0
        while h < n:
            free = servers[0][0]
            a = pt[h]
            s = free if free > a else a
            if timeout_s > 0.0:
                full = h + mb - 1
                if full < n and pt[full] <= a + timeout_s:
                    close = pt[full]  # max_batch waiting before the oldest times out
                else:
                    close = a + timeout_s
                    if close >= t_end and free < t_end:
                        break  # more queries may arrive before the timeout
                if close > s:
                    s = close
            if s >= t_end:
                break
            hi = min(h + mb, n)
            if not drop_late:
                if pt[hi - 1] > s:
                    hi = bisect_right(pt, s, h, hi)
            else:
                # queries past their deadline are dropped; move them before the batch
                j = h
                drops: list[int] = []
                takes: list[int] = []
                while j < n and pt[j] <= s and len(takes) < mb:
                    (drops if pd[j] < s else takes).append(j)
                    j += 1
                if drops:
                    order = drops + takes
                    pt[h:j] = [pt[i] for i in order]
                    pk[h:j] = [pk[i] for i in order]
                    pd[h:j] = [pd[i] for i in order]
                    self.b_start.append(s)
                    self.b_fin.append(NAN)
                    self.b_size.append(len(drops))
                    h += len(drops)
                if not takes:
                    continue  # the replica is still free at s
                hi = h + len(takes)
            b = hi - h
            if noise.kind == NOISE_NONE:
                svc = self.p50_s[b]
            elif noise.kind == NOISE_EXPONENTIAL:
                svc = self.p50_s[b] * buf[k]
                k += 1
            else:
                svc = self.p50_s[b] * math.exp(self.sig[b] * buf[k])
                k += 1
            busy += svc
            fin = s + svc * self.factor
            heapreplace(servers, (fin, b))
            self.b_start.append(s)
            self.b_fin.append(fin)
            self.b_size.append(b)
            h = hi
        noise.pos = k
        self.head = h
        self.busy_s += busy

    # -- results ---------------------------------------------------------------------------
    def flush(self) -> Flushed | None:
        """Hand over the queries that started (or were dropped) since the last flush."""
        h = self.head
        if h == 0:
            return None
        sizes = np.array(self.b_size, dtype=np.int64)
        b_fin = np.array(self.b_fin)
        dropped = np.isnan(b_fin)
        batch = np.where(dropped, 0, sizes) if dropped.any() else sizes
        out = Flushed(np.array(self.pt[:h]), np.array(self.pk[:h], dtype=np.int64),
                      np.repeat(np.array(self.b_start), sizes), np.repeat(b_fin, sizes), np.repeat(batch, sizes))
        out.served_batches = sizes[~dropped]
        del self.pt[:h], self.pk[:h]
        if self.pd:
            del self.pd[:h]
        self.head = 0
        self.b_start, self.b_fin, self.b_size = [], [], []
        return out

    def close_window(self, window_s: float, latency_decay: float, slo_ms_by_app: np.ndarray) -> Flushed | None:
        """End a stats window: publish the observed rate / latency / batch / SLO of the
        window, and hand over (flush) the queries that started in it."""
        routed = len(self.pt) - self.mark
        self.rate_qps = routed / window_s if window_s > 0 else 0.0
        if routed:
            self.last_routed_s = self.pt[-1]
        flushed = self.flush()
        self.mark = len(self.pt)
        # SLO of the queries that started in the window (or, if none did, of those routed)
        if flushed is not None:
            self.slo_ms = float(slo_ms_by_app[flushed.keys & KEY_MASK].mean())
        elif routed:
            self.slo_ms = float(slo_ms_by_app[np.array(self.pk[-routed:], dtype=np.int64) & KEY_MASK].mean())
        else:
            self.slo_ms = math.inf
        if flushed is not None and flushed.served_batches.size:
            lat = flushed.finish_s - flushed.arrival_s
            self.latency_ms = float(np.nanmean(lat)) * 1000.0
            self.batch = float(flushed.served_batches.mean())  # mean over batches, not queries
        else:
            self.latency_ms = self.latency_ms / latency_decay
            self.batch = 0.0
        return flushed
