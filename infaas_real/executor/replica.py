"""One replica: a worker process and the parent's end of its pipe.

The parent never blocks on a replica: the pipe's file descriptor is registered with the
event loop (``loop.add_reader``), so results, readiness and death all arrive as callbacks
on the loop thread. A replica that dies — killed, crashed, or failed to load — is seen as
end-of-file on its pipe, the one signal every kind of death produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing.connection import Connection
from typing import Protocol

import numpy as np

from infaas_core.model import Variant
from infaas_real.executor import ipc
from infaas_real.executor.worker import worker_main

_SPAWN = mp.get_context("spawn")


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
    def on_exit(self, replica: Replica, reason: str | None) -> None:
        """The process is gone: ``reason`` is None after a graceful stop, else why it died."""
        ...


class Replica:
    __slots__ = ("_loop", "batch_id", "busy_since_s", "conn", "id", "info", "owner", "process", "state", "variant")

    def __init__(self, rid: int, variant: Variant, owner: ReplicaOwner, spec: RunnerSpec) -> None:
        self.id = rid
        self.variant = variant
        self.owner = owner
        self.state = ReplicaState.STARTING
        self.info: dict[str, object] = {}
        self.batch_id = -1  # batch in service, -1 if none
        self.busy_since_s = 0.0
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
        self._loop.add_reader(self.conn.fileno(), self._on_readable)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send(self, batch_id: int, x: np.ndarray, now_s: float) -> None:
        assert self.state is ReplicaState.IDLE, self.state
        self.state = ReplicaState.BUSY
        self.batch_id = batch_id
        self.busy_since_s = now_s
        # if the worker is gone, EOF on the pipe reports the death with this batch in flight
        with contextlib.suppress(OSError):
            self._send_whole(ipc.encode_batch(batch_id, x))

    def _send_whole(self, msg: bytes) -> None:
        """Write one whole message. uvloop's ``add_reader`` leaves the pipe non-blocking, and a
        message larger than the pipe's buffer (an image batch: 0.6 MB per image) would then be
        cut short with BlockingIOError, leaving the worker waiting for the rest for ever; the
        write is made blocking for its duration (the worker is reading: a few milliseconds)."""
        fd = self.conn.fileno()
        nonblocking = not os.get_blocking(fd)
        if nonblocking:
            os.set_blocking(fd, True)
        try:
            self.conn.send_bytes(msg)
        finally:
            if nonblocking:
                os.set_blocking(fd, False)

    def stop(self) -> None:
        """Ask the worker to exit after its current batch (graceful)."""
        if self.state in (ReplicaState.DEAD, ReplicaState.STOPPING):
            return
        self.state = ReplicaState.STOPPING
        with contextlib.suppress(OSError):
            self._send_whole(ipc.encode_stop())

    def _on_readable(self) -> None:
        try:
            msg = self.conn.recv_bytes()
        except (EOFError, OSError):
            self._closed("worker process exited")
            return
        kind = ipc.kind_of(msg)
        if kind == ipc.RESULT:
            self.state = ReplicaState.IDLE if self.state is ReplicaState.BUSY else self.state
            self.batch_id = -1
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
            self.state = ReplicaState.IDLE if self.state is ReplicaState.BUSY else self.state
            self.batch_id = -1
            self.owner.on_failed(self, batch_id, reason)

    def _closed(self, reason: str) -> None:
        self._loop.remove_reader(self.conn.fileno())
        self.conn.close()
        self.process.join(timeout=1.0)
        graceful = self.state is ReplicaState.STOPPING and self.batch_id < 0
        self.state = ReplicaState.DEAD
        code = self.process.exitcode
        self.owner.on_exit(self, None if graceful else f"{reason} (exit code {code})")

    def kill(self) -> None:
        """Hard stop (server shutdown)."""
        if self.state is ReplicaState.DEAD:
            return
        self._loop.remove_reader(self.conn.fileno())
        self.state = ReplicaState.DEAD
        self.conn.close()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=1.0)
