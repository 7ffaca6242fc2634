"""The data plane: one FCFS queue with batching per variant instance, advanced in bulk.

An instance (``replicas`` copies of one variant on one worker; its view is the control
layer's :class:`infaas_core.control.cluster.Instance`) owns one :class:`Queue`, the
simulator's mechanism for it. Its state is a few Python lists, not one object per query:

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
from collections.abc import Callable
from heapq import heapreplace
from itertools import islice

import numpy as np

from infaas_core.control.observe import WindowCounters
from infaas_core.model import Variant
from infaas_sim.admission import RowEstimate
from infaas_sim.latency import NOISE_EXPONENTIAL, NOISE_NONE, NOISE_NORMAL, NoiseStream

KEY_BITS = 8
"""Low bits of a query key that hold its application index (at most 256 applications)."""
KEY_MASK = (1 << KEY_BITS) - 1
NAN = math.nan
_EMPTY_F = np.zeros(0)
_EMPTY_I = np.zeros(0, dtype=np.int64)
_sum = np.add.reduce
"""``ndarray.sum`` of a 1-D array without its Python layers (the same reduction, the same result)."""


class Flushed:
    """Per-query results of one instance since its last flush (numpy arrays)."""

    __slots__ = ("arrival_s", "batch", "batch_finish_s", "batch_start_s", "dropped", "finish_s", "keys",
                 "served_batches", "start_s")

    def __init__(self, arrival_s: np.ndarray, keys: np.ndarray, start_s: np.ndarray,
                 finish_s: np.ndarray, batch: np.ndarray) -> None:
        self.arrival_s = arrival_s
        self.keys = keys
        self.start_s = start_s
        self.finish_s = finish_s  # NaN: dropped
        self.batch = batch  # 0: dropped
        self.served_batches: np.ndarray = batch[:0]  # sizes of the batches served (one per batch)
        self.batch_start_s: np.ndarray = start_s[:0]  # start / finish of each served batch
        self.batch_finish_s: np.ndarray = finish_s[:0]
        self.dropped = False  # whether any of these queries was dropped


class Queue:
    """The queue and replicas of one instance (the simulator's ``InstanceMechanism``)."""

    __slots__ = (
        "_adv", "_clock", "b_fin", "b_size", "b_start", "busy_s", "carry_bfin", "carry_bsize", "carry_bstart",
        "carry_fin", "carry_lat", "factor", "first_ready_s", "head", "hold", "id", "last_routed_s", "mark", "max_batch",
        "p50_s", "pd", "pk", "pt", "rows", "servers", "sig", "stretch", "variant", "worker_id",
    )  # fmt: skip

    def __init__(self, iid: int, variant: Variant, worker_id: int, tables: tuple[list[float], list[float]],
                 clock: list[float]) -> None:
        self.id = iid
        self.variant = variant
        self.worker_id = worker_id
        self.max_batch = variant.max_batch
        self.p50_s, self.sig = tables
        self.factor = 1.0  # accelerator sharing stretch (cluster.py)
        self.stretch: Callable[[float, float], float] | None = None  # event-scale CPU sharing: (start, work) -> finish
        self.hold: Callable[[float], float] | None = None  # a batch's start once the front end's loop is free (sharing.py)
        self.pt: list[float] = []
        self.pk: list[int] = []
        self.pd: list[float] = []
        self.head = 0
        self.servers: list[tuple[float, int]] = []
        self.b_start: list[float] = []
        self.b_fin: list[float] = []
        self.b_size: list[int] = []
        self.busy_s = 0.0  # nominal (unstretched) service seconds since the last window (sharing)
        self.mark = 0  # len(pt) at the last window: pt[mark:] were routed since
        self.last_routed_s = -math.inf
        # started queries / batches that had not finished when the last window closed
        self.carry_fin = _EMPTY_F
        self.carry_lat = _EMPTY_F
        self.carry_bstart = _EMPTY_F
        self.carry_bfin = _EMPTY_F
        self.carry_bsize = _EMPTY_I
        self._clock = clock  # shared one-element list holding the view's now_s
        self._adv: tuple[NoiseStream, float, bool] | None = None  # (noise, batch timeout, drop_late) of the run
        # deadline shedding (sim.admission, infaas_sim/admission.py): the time per row of a busy
        # replica (None: no shedding), and when the first replica was ready (deadlines apply from then)
        self.rows: RowEstimate | None = None
        self.first_ready_s = math.inf

    # -- InstanceMechanism ----------------------------------------------------------------
    @property
    def queue_len(self) -> int:
        """Queries waiting or in service at the view's time, exactly: the queue is first
        brought to that time (every query that arrived before it is already routed, so the
        batches that start before it are decided)."""
        now = self._clock[0]
        servers = self.servers
        if self._adv is not None and self.head < len(self.pt) and servers and servers[0][0] < now:
            self.advance(now, *self._adv)
        in_service = 0
        for free, b in servers:
            if free > now:
                in_service += b
        return len(self.pt) - self.head + in_service

    @property
    def last_arrival_s(self) -> float:
        return self.pt[-1] if len(self.pt) > self.mark else self.last_routed_s

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
        if timeout_s > 0.0 or drop_late or self.rows is not None or self.stretch is not None or self.hold is not None:
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
        normal = kind == NOISE_NORMAL  # (locals: no global lookup per batch)
        drawn = kind != NOISE_NONE
        bs = self.b_start.append
        bf = self.b_fin.append
        bz = self.b_size.append
        exp = math.exp
        busy = 0.0
        if len(servers) == 1:
            # One replica (most instances): the same recursion with its free time in a local
            # instead of a one-element heap (no tuple and no heapreplace per batch).
            free, last_b = servers[0]
            while h < n:
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
                if normal:
                    svc = p50[b] * exp(sig[b] * buf[k])
                    k += 1
                elif drawn:
                    svc = p50[b] * buf[k]
                    k += 1
                else:
                    svc = p50[b]
                busy += svc
                free = s + svc * f
                last_b = b
                bs(s)
                bf(free)
                bz(b)
                h = hi
            servers[0] = (free, last_b)
            noise.pos = k
            self.head = h
            self.busy_s += busy
            return
        if len(servers) == 2:
            # Two replicas: the two-entry heap as locals. ``heapreplace`` on two entries puts
            # the new one first only if it sorts before the other (as a tuple), so does this.
            (free, last_b), (free1, b1) = servers
            while h < n:
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
                if normal:
                    svc = p50[b] * exp(sig[b] * buf[k])
                    k += 1
                elif drawn:
                    svc = p50[b] * buf[k]
                    k += 1
                else:
                    svc = p50[b]
                busy += svc
                fin = s + svc * f
                bs(s)
                bf(fin)
                bz(b)
                if fin < free1 or (fin == free1 and b < b1):
                    free, last_b = fin, b
                else:
                    free, last_b, free1, b1 = free1, b1, fin, b
                h = hi
            servers[0] = (free, last_b)
            servers[1] = (free1, b1)
            noise.pos = k
            self.head = h
            self.busy_s += busy
            return
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
            if normal:  # the default model first: one test per batch
                svc = p50[b] * exp(sig[b] * buf[k])
                k += 1
            elif drawn:
                svc = p50[b] * buf[k]
                k += 1
            else:
                svc = p50[b]
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
        """The same recursion with a batch timeout and/or dropping of late queries: with
        ``drop_late``, a query whose deadline (``pd``) passed when a replica could take it;
        with deadline shedding (``rows``), one that could no longer finish by it even if it
        started then (the executor's rule, :func:`infaas_sim.admission.late`)."""
        pt, pk, pd = self.pt, self.pk, self.pd
        rows = self.rows
        if rows is not None:
            drop_late = True
            b1_s = self.variant.batch1_latency_ms / 1000.0  # the profile's floor, as the executor's
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
            if self.hold is not None:
                s = self.hold(s)  # the batch's transfer waits for the front end's loop: later arrivals join it
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
                by = s if rows is None else s + max(b1_s, rows.ms / 1000.0)  # the time it would finish by
                while j < n and pt[j] <= s and len(takes) < mb:
                    (drops if pd[j] < by else takes).append(j)
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
            fin = s + svc * self.factor if self.stretch is None else self.stretch(s, svc)
            if rows is not None:
                rows.add((fin - s) * 1000.0, b)
            heapreplace(servers, (fin, b))
            self.b_start.append(s)
            self.b_fin.append(fin)
            self.b_size.append(b)
            h = hi
        noise.pos = k
        self.head = h
        self.busy_s += busy

    # -- results ---------------------------------------------------------------------------
    def flush(self, keys: np.ndarray | None = None) -> Flushed | None:
        """Hand over the queries that started (or were dropped) since the last flush
        (``keys``: ``pk`` already as an array, if the caller has it)."""
        h = self.head
        if h == 0:
            return None
        # Each list is converted once (``fromiter`` with a count: no slice copy, no type
        # probing); the per-batch arrays are only filtered if a batch record is a run of
        # dropped queries (NaN finish), which is rare.
        nb = len(self.b_size)
        sizes = np.fromiter(self.b_size, dtype=np.int64, count=nb)
        b_start = np.fromiter(self.b_start, dtype=np.float64, count=nb)
        b_fin = np.fromiter(self.b_fin, dtype=np.float64, count=nb)
        if keys is None:
            keys = np.fromiter(self.pk, dtype=np.int64, count=h)
        # (a drop needs a deadline: with none tracked, no batch record is a run of drops)
        dropped = np.isnan(b_fin) if self.pd else None
        if dropped is not None and dropped.any():
            served = ~dropped
            batch = np.where(dropped, 0, sizes)
            served_sizes, served_start, served_fin = sizes[served], b_start[served], b_fin[served]
        else:
            batch = served_sizes = sizes
            served_start, served_fin = b_start, b_fin
        out = Flushed(np.fromiter(self.pt, dtype=np.float64, count=h), keys[:h],
                      b_start.repeat(sizes), b_fin.repeat(sizes), batch.repeat(sizes))
        out.served_batches = served_sizes
        out.batch_start_s = served_start
        out.batch_finish_s = served_fin
        out.dropped = served_sizes is not sizes
        del self.pt[:h], self.pk[:h]
        if self.pd:
            del self.pd[:h]
        self.head = 0
        self.b_start, self.b_fin, self.b_size = [], [], []
        return out

    def close_window(self, t0_s: float, now_s: float, slo_ms_by_app: np.ndarray, c: WindowCounters,
                     slo_finite: bool | None = None) -> Flushed | None:
        """End an observation window ``[t0_s, now_s)``: count its raw facts into ``c`` (the
        definitions are :mod:`infaas_core.control.observe`'s) and hand over (flush) the
        queries that started in it. Queries and batches that started but finish after
        ``now_s`` are carried to the window they finish in. ``slo_finite``: whether every
        application's SLO is finite (computed here when not given)."""
        n = len(self.pk)
        mark = self.mark
        routed = n - mark
        # the keys the window's SLOs (those routed since the mark) and the flush (those
        # started) read, each converted once: all of them when the two overlap; else a
        # waiting backlog between them is skipped (the flush converts its own when nothing
        # was routed)
        keys: np.ndarray | None = None
        if routed:
            self.last_routed_s = self.pt[-1]
            if mark <= self.head:
                keys = np.fromiter(self.pk, dtype=np.int64, count=n)
                new_keys = keys[mark:]
            else:
                new_keys = np.fromiter(islice(self.pk, mark, None), dtype=np.int64, count=routed)
            slo = slo_ms_by_app[new_keys & KEY_MASK]
            c.arrivals += routed
            if slo_finite is None:
                slo_finite = bool(np.isfinite(slo_ms_by_app).all())
            if slo_finite:  # (the same elements, so the same sum)
                c.slo_sum_ms += float(_sum(slo))
                c.slo_count += routed
            else:
                finite = np.isfinite(slo)
                c.slo_sum_ms += float(_sum(slo[finite]))
                c.slo_count += int(np.count_nonzero(finite))
        flushed = self.flush(keys)
        self.mark = len(self.pt)
        fin, lat = self.carry_fin, self.carry_lat
        bs, bf, bz = self.carry_bstart, self.carry_bfin, self.carry_bsize
        if flushed is not None and flushed.served_batches.size:
            f, a = flushed.finish_s, flushed.arrival_s
            if flushed.dropped:  # served queries only
                served = flushed.batch > 0
                f, a = f[served], a[served]
            # (an empty carry is the common case: no copy through concatenate then)
            fin = np.concatenate((fin, f)) if fin.size else f
            lat = np.concatenate((lat, f - a)) if lat.size else f - a
            if bf.size:
                bs = np.concatenate((bs, flushed.batch_start_s))
                bf = np.concatenate((bf, flushed.batch_finish_s))
                bz = np.concatenate((bz, flushed.served_batches))
            else:
                bs, bf, bz = flushed.batch_start_s, flushed.batch_finish_s, flushed.served_batches
        # Finished by now_s: counted; the rest carried. When all finished (the common case)
        # the whole arrays are summed: the same elements in the same order, the same sums.
        if fin.size:
            done = fin <= now_s
            nd = int(np.count_nonzero(done))
            c.completions += nd
            if nd == fin.size:
                c.latency_sum_ms += float(_sum(lat)) * 1000.0
                self.carry_fin = self.carry_lat = _EMPTY_F
            else:
                c.latency_sum_ms += float(_sum(lat[done])) * 1000.0
                self.carry_fin, self.carry_lat = fin[~done], lat[~done]
        if bf.size:
            bdone = bf <= now_s
            nb = int(np.count_nonzero(bdone))
            c.batches += nb
            # (np.maximum: what np.clip with no upper bound calls, without its Python layers)
            c.busy_s += float(_sum(np.maximum(np.minimum(bf, now_s) - np.maximum(bs, t0_s), 0.0)))
            if nb == bf.size:
                c.batch_items += int(_sum(bz))
                self.carry_bstart = self.carry_bfin = _EMPTY_F
                self.carry_bsize = _EMPTY_I
            else:
                c.batch_items += int(_sum(bz[bdone]))
                keep = ~bdone
                self.carry_bstart, self.carry_bfin, self.carry_bsize = bs[keep], bf[keep], bz[keep]
        return flushed
