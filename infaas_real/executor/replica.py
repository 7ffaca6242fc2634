"""One replica: a worker process and the parent's end of its pipe.

The parent never blocks on a replica: the pipe's file descriptor is non-blocking and
registered with the event loop (``loop.add_reader``; writes that do not fit the pipe wait in
an output buffer flushed by ``loop.add_writer``), so results, readiness and death all arrive
as callbacks on the loop thread, and a stopped (``SIGSTOP``) worker cannot stall the server.
A replica that dies — killed, crashed, or failed to load — is seen as end-of-file on its
pipe, the one signal every kind of death produces; a hung one is killed by its instance's
supervisor (:meth:`Replica.kill_hung`), which turns the hang into a death. An idle replica
is pinged by the same supervisor (:meth:`Replica.heartbeat`): a worker answers ``PING`` as
soon as it reads it, so one stopped while idle is found without a query being sent to it.

Frames are ``multiprocessing.Connection``'s (a 4-byte big-endian length, then the message),
so the worker reads them with ``recv_bytes``. Up to ``max_batches_in_flight`` batches may be
on their way to or inside a worker at once (it serves them in order, joining those that
wait into one batch of up to ``max_batch`` rows): one result per event-loop turn would
otherwise cap a batch-1 variant at the loop's turn rate under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing.connection import Connection
from typing import Protocol

import numpy as np

from infaas_core.model import Variant
from infaas_real.executor import ipc
from infaas_real.executor.worker import worker_main

_SPAWN = mp.get_context("forkserver")
# Replicas are forked from one server process that has imported the worker's modules once, so
# a replacement for a dead or hung replica starts in a fraction of a second (``spawn`` would
# re-import the parent's main module — the whole CLI and web stack — in every new process).
_SPAWN.set_forkserver_preload(["infaas_real.executor.worker", "infaas_real.runtime"])
_LEN = struct.Struct("!i")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class RunnerSpec:
    """How worker processes build their runner (``executor.*`` of configs/serve.yaml)."""

    factory: str  # "module:function" building a runner for a variant
    cache_dir: str | None  # artifact cache (None: the default cache)
    device: str  # where accelerator variants run (e.g. "cuda"); CPU variants always run on "cpu"
    cpus: tuple[int, ...]  # cores the worker processes may run on; () = wherever the OS puts them


class ReplicaState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    DEAD = "dead"


class ReplicaOwner(Protocol):
    def on_ready(self, replica: Replica) -> None: ...
    def on_result(self, replica: Replica, result: ipc.Result) -> None: ...
    def on_failed(self, replica: Replica, batch_id: int, reason: str) -> None: ...
    def on_exit(self, replica: Replica, reason: str | None, lost: list[int]) -> None:
        """The process is gone: ``reason`` is None after a graceful stop, else why it died;
        ``lost`` are the ids of the batches it had not answered."""
        ...


class Replica:
    __slots__ = ("_clock", "_fd", "_in", "_loop", "_out", "_writing", "busy_since_s", "conn", "head_since_s",
                 "heard_s", "id", "inflight", "info", "last_idle_turnaround_s", "last_interval_s", "owner", "ping_sent_s",
                 "process", "rows_in_flight", "started_s", "state", "variant")  # fmt: skip

    def __init__(self, rid: int, variant: Variant, owner: ReplicaOwner, spec: RunnerSpec,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.id = rid
        self.variant = variant
        self.owner = owner
        self.state = ReplicaState.STARTING
        self.info: dict[str, object] = {}
        self.inflight: deque[tuple[int, int, float]] = deque()  # (batch id, rows, sent at; < 0: sent busy)
        self.rows_in_flight = 0
        self.busy_since_s = 0.0  # start of the busy time not yet counted in the window
        self.head_since_s = 0.0  # when the oldest batch in flight became the worker's current one
        self._clock = clock
        self.started_s = clock()
        self.heard_s = self.started_s  # when the worker last sent anything (start: its start)
        self.ping_sent_s = -1.0  # when the unanswered heartbeat was sent (< 0: none outstanding)
        self.last_idle_turnaround_s = -1.0  # send-to-answer time of the last batch sent to an idle replica (< 0: not one)
        self.last_interval_s = 0.0  # busy time from the previous answer (or the send to an idle replica) to the last
        self._loop = asyncio.get_running_loop()
        parent, child = _SPAWN.Pipe(duplex=True)
        self.conn: Connection = parent
        self.process = _SPAWN.Process(
            target=worker_main,
            args=(child, variant, spec.factory, spec.cache_dir, "cpu" if variant.is_cpu else spec.device, spec.cpus),
            name=f"infaas-{variant.name}-r{rid}",
            daemon=True,
        )
        self.process.start()
        child.close()  # so the parent sees EOF when the worker dies
        self._fd = parent.fileno()
        os.set_blocking(self._fd, False)
        self._in = bytearray()
        self._out = bytearray()
        self._writing = False
        self._loop.add_reader(self._fd, self._on_readable)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def batch_id(self) -> int:
        """The oldest batch in flight (-1 if none)."""
        return self.inflight[0][0] if self.inflight else -1


    def heartbeat(self, now_s: float, period_s: float, timeout_s: float) -> str | None:
        """The supervisor's heartbeat: ping a ready replica idle for ``period_s`` since the
        worker last spoke; a ping unanswered ``timeout_s`` after it was sent (whatever was
        sent after it: the worker answers a ping as it reads it, before any later batch)
        means a hang, returned as the reason; None otherwise."""
        if self.ping_sent_s >= 0.0:
            self.drain()  # an answer already written is not a hang
            if self.ping_sent_s >= 0.0 and now_s - self.ping_sent_s > timeout_s and self.state is not ReplicaState.DEAD:
                return f"no answer to a heartbeat within {timeout_s:g} s"
            return None
        if self.state is ReplicaState.IDLE and now_s - self.heard_s >= period_s:
            self.ping_sent_s = now_s
            self._write(ipc.encode_ping())
        return None

    def send(self, batch_id: int, x: np.ndarray, now_s: float) -> None:
        assert self.state in (ReplicaState.IDLE, ReplicaState.BUSY), self.state
        idle = not self.inflight
        if idle:
            self.busy_since_s = now_s
            self.head_since_s = now_s
        self.state = ReplicaState.BUSY
        self.inflight.append((batch_id, int(x.shape[0]), now_s if idle else -1.0))
        self.rows_in_flight += int(x.shape[0])
        self._write(ipc.encode_batch(batch_id, x))

    def _write(self, msg: bytes) -> None:
        self._out += _LEN.pack(len(msg))
        self._out += msg
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        try:
            while self._out:
                n = os.write(self._fd, self._out)
                del self._out[:n]
        except BlockingIOError:
            pass
        except OSError:  # the worker is gone: EOF on the read side reports it
            self._out.clear()
        if self._out and not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._flush)
        elif not self._out and self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def stop(self) -> None:
        """Ask the worker to exit after the batches it has (graceful)."""
        if self.state in (ReplicaState.DEAD, ReplicaState.STOPPING):
            return
        self.state = ReplicaState.STOPPING
        self._write(ipc.encode_stop())

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._closed("worker process exited")
            return
        buf = self._in
        buf += chunk
        while len(buf) >= _LEN.size and self.state is not ReplicaState.DEAD:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) < _LEN.size + n:
                break
            msg = bytes(buf[_LEN.size : _LEN.size + n])
            del buf[: _LEN.size + n]
            self._handle(msg)

    def drain(self) -> None:
        """Read whatever the worker has already written (before judging it hung)."""
        if self.state is not ReplicaState.DEAD:
            self._on_readable()

    def _handle(self, msg: bytes) -> None:
        kind = ipc.kind_of(msg)
        self.heard_s = self._clock()
        self.ping_sent_s = -1.0  # whatever it says, the worker is alive
        if kind == ipc.PONG:
            return
        if kind == ipc.RESULT:
            self._answered()
            self.owner.on_result(self, ipc.decode_result(msg))
        elif kind == ipc.READY:
            self.info = ipc.decode_ready(msg)
            if self.state is ReplicaState.STARTING:
                self.state = ReplicaState.IDLE
                self.owner.on_ready(self)
        elif kind == ipc.FAILED:
            batch_id, reason = ipc.decode_failed(msg)
            if self.state is ReplicaState.STARTING:
                self._closed(f"failed to load: {reason.strip().splitlines()[-1] if reason.strip() else reason}")
                return
            self._answered()
            self.owner.on_failed(self, batch_id, reason)

    def _answered(self) -> None:
        now = self._clock()
        self.last_interval_s = now - self.head_since_s
        self.last_idle_turnaround_s = -1.0
        if self.inflight:
            _, rows, sent_s = self.inflight.popleft()
            self.rows_in_flight -= rows
            if sent_s >= 0:
                self.last_idle_turnaround_s = now - sent_s
        self.head_since_s = now
        if not self.inflight and self.state is ReplicaState.BUSY:
            self.state = ReplicaState.IDLE

    def _closed(self, reason: str) -> None:
        if self.state is ReplicaState.DEAD:
            return
        self._detach()
        self.process.join(timeout=1.0)
        graceful = self.state is ReplicaState.STOPPING and not self.inflight
        self.state = ReplicaState.DEAD
        code = self.process.exitcode
        lost = [b[0] for b in self.inflight]
        self.inflight.clear()
        self.rows_in_flight = 0
        self.owner.on_exit(self, None if graceful else f"{reason} (exit code {code})", lost)

    def _detach(self) -> None:
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._out.clear()
        self.conn.close()

    def kill_hung(self, reason: str) -> None:
        """The supervisor's verdict: SIGKILL the process (a stopped one too), reap it, and
        report the death with ``reason`` (its batches are retried or failed by the owner)."""
        if self.state is ReplicaState.DEAD:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid or 0, signal.SIGKILL)
        self._closed(f"hung: {reason}")

    def kill(self) -> None:
        """Hard stop (server shutdown)."""
        if self.state is ReplicaState.DEAD:
            return
        self._detach()
        self.state = ReplicaState.DEAD
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=1.0)
