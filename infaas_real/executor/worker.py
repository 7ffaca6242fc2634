"""The worker process: one replica of one variant.

It builds the variant's runner (``runner_factory``, by default
:func:`infaas_real.runtime.load_runner`, which uses ``variant.cores`` threads), runs one
warm-up batch, says ``READY``, then answers ``BATCH`` messages until ``STOP`` or until the
pipe closes (the server went away — a worker never outlives it). A ``PING`` (the
supervisor's heartbeat while the replica is idle) is answered with ``PONG`` as soon as it is
read. Batches that are waiting
in the pipe when the runner frees are joined, in order, into one run of up to
``variant.max_batch`` rows (so batching grows with load even when the parent has several
batches in flight); each gets its own ``RESULT``. A runner exception fails the batches of
that run only (``FAILED``); the process keeps serving.
"""

from __future__ import annotations

import importlib
import os
import time
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.model import Variant
from infaas_real.executor import ipc

DEFAULT_RUNNER_FACTORY = "infaas_real.runtime:load_runner"

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def import_factory(spec: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    module, _, attr = spec.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), attr or "load_runner")
    return fn


def _item_shape(runner: Any, variant: Variant) -> tuple[int, ...]:
    """One item's input shape, as the runner says it (``(64,)``, ``(3, 224, 224)``)."""
    shape = tuple(int(d) if isinstance(d, int | np.integer) else -1 for d in getattr(runner, "input_shape", ()))
    if not shape or min(shape) <= 0:
        raise RuntimeError(f"runner of {variant.name} does not say its input shape: {shape}")
    return shape


def _take(conn: Connection, msg: bytes, pending: deque[bytes]) -> None:
    """A message from the parent: a heartbeat is answered at once, anything else waits its turn."""
    if ipc.kind_of(msg) == ipc.PING:
        conn.send_bytes(ipc.encode_pong())
    else:
        pending.append(msg)


def worker_main(
    conn: Connection,
    variant: Variant,
    runner_factory: str,
    cache_dir: str | None,
    device: str,
    cpus: tuple[int, ...] = (),
) -> None:
    """Entry point of a replica process (started with the ``spawn`` method)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    for key in _THREAD_ENV:
        os.environ[key] = str(max(1, variant.cores))
    try:
        runner = import_factory(runner_factory)(
            variant, cache_dir=Path(cache_dir) if cache_dir else None, device=device
        )
        item = _item_shape(runner, variant)
        runner.run(np.zeros((1, *item), dtype=np.float32))  # warm-up
    except Exception:
        conn.send_bytes(ipc.encode_failed(0, traceback.format_exc(limit=3)))
        return
    conn.send_bytes(
        ipc.encode_ready(
            {"pid": os.getpid(), "input_shape": list(item), "max_batch": int(getattr(runner, "max_batch", variant.max_batch))}
        )
    )
    perf = time.perf_counter
    pending: deque[bytes] = deque()
    stopping = False
    while not stopping or pending:
        try:
            while not pending:
                _take(conn, conn.recv_bytes(), pending)
            while conn.poll(0):  # whatever else the parent has sent joins this turn
                _take(conn, conn.recv_bytes(), pending)
        except (EOFError, OSError):
            break
        ids: list[int] = []
        parts: list[np.ndarray] = []
        rows = 0
        while pending:
            if ipc.kind_of(pending[0]) == ipc.STOP:
                pending.clear()
                stopping = True
                break
            batch_id, flat = ipc.decode_batch(pending[0])
            if parts and rows + flat.shape[0] > variant.max_batch:
                break
            pending.popleft()
            ids.append(batch_id)
            parts.append(flat)
            rows += flat.shape[0]
        if not parts:
            continue
        flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
        t0 = perf()
        try:
            y = np.asarray(runner.run(flat.reshape(flat.shape[0], *item)))
        except Exception as exc:  # the runner's failure is these batches' answer
            try:
                for batch_id in ids:
                    conn.send_bytes(ipc.encode_failed(batch_id, f"{type(exc).__name__}: {exc}"))
            except (BrokenPipeError, OSError):
                break
            continue
        infer_ms = (perf() - t0) * 1000.0
        try:
            lo = 0
            for batch_id, part in zip(ids, parts, strict=True):
                conn.send_bytes(ipc.encode_result(batch_id, y[lo : lo + part.shape[0]], infer_ms, rows))
                lo += part.shape[0]
        except (BrokenPipeError, OSError):
            break
    close = getattr(runner, "close", None)
    if close is not None:
        close()
