"""Offline jobs on the real server: many inputs, a task and a minimum accuracy, run on the CPU
capacity online queries leave unused (INFaaS's offline queries; the rule is the core's,
:mod:`infaas_core.policies.offline`, shared with the simulator).

Endpoints (docs/offline.md "Real server"): ``POST /v2/infaas/offline`` submits a job (202 with
its id), ``GET /v2/infaas/offline`` lists the jobs, ``GET /v2/infaas/offline/{id}`` is one
job's status, ``DELETE /v2/infaas/offline/{id}`` cancels it. Inputs and the output file are
:mod:`infaas_real.server.offline_inputs`'.

Execution, one job at a time in submission order:

- the variant is :func:`~infaas_core.policies.offline.offline_variant`'s, chosen at submission
  (422 when there is none);
- the worker is :func:`~infaas_core.policies.offline.offline_worker`'s when the job starts (and
  again whenever its instance has gone); if it holds no instance of the variant, one replica is
  loaded through the control layer (``LoadVariant``: it is in the decision trace, and the policy
  sees and may unload it like any other — the job then loads it again);
- batches of ``offline.batch`` inputs go through the instance's low-priority path
  (:meth:`infaas_real.executor.Instance.submit_background`): a batch is sent only to a replica
  with nothing in flight while no online query waits there, so online queries go first and a
  running offline batch finishes. One batch is outstanding at a time;
- before every batch the job asks :func:`~infaas_core.policies.offline.may_run_offline` of its
  worker, whose utilisation and flags change only when the control loop runs (each window):
  while it says no the job is *paused* (reason and time in its status) and its batch not yet
  sent is withdrawn; after each control run paused jobs check again;
- a batch whose replica died or whose runner failed is retried once; a second failure fails
  the job. The output is written when the last batch is in (``done``).

Offline work is kept out of the online queue length and the window's query statistics (rate,
latency, batch, SLO) and of the online request metrics; its replica-seconds are busy time, so
they count in the worker's CPU utilisation as in the simulator and the original
(``/proc/stat``): a job can push its worker over the bound and pause itself for a window. It is
counted on its own in ``/metrics`` (``infaas_offline_inputs_total``,
``infaas_offline_batches_total``, ``infaas_offline_jobs{state}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from prometheus_client.registry import Collector
from starlette.routing import Route

from infaas_core.actions import LoadVariant
from infaas_core.errors import BackendError
from infaas_core.model import Variant
from infaas_core.policies.offline import (
    OfflineConfig,
    flagged,
    may_run_offline,
    offline_variant,
    offline_worker,
)
from infaas_core.view import InstanceState, WorkerState
from infaas_real.executor import Overloaded, Served
from infaas_real.server.offline_inputs import (
    InputRefused,
    JobInput,
    check_output,
    open_input,
    write_output,
)
from infaas_real.server.tasks import TaskIO, task_io

if TYPE_CHECKING:
    from infaas_core.control.cluster import Instance as ViewInstance
    from infaas_core.control.cluster import Worker
    from infaas_real.server.state import LiveState

log = logging.getLogger("infaas_real.server.offline")
STATES = ("queued", "running", "paused", "done", "failed", "cancelled")
FINISHED = frozenset({"done", "failed", "cancelled"})
BATCH_ATTEMPTS = 2  # a batch is retried once (as an online query whose replica died)
_FIELDS = frozenset({"task", "min_accuracy", "input_path", "output_path"})


@dataclass(frozen=True, slots=True)
class OfflineSettings:
    """The ``offline:`` block (the shared rule) and the server's ``offline_*`` keys."""

    rule: OfflineConfig
    max_jobs: int  # jobs kept; beyond it the oldest finished is forgotten, or a submission gets 429
    max_input_bytes: int  # a tensor file larger than this is refused
    image_resize_ratio: float  # an image's shorter side is resized to input side x this, then centre-cropped
    max_request_bytes: int  # a submission body larger than this gets 413


class Refusal(Exception):
    """A request answered with an error: its HTTP status and one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True, eq=False)
class Job:
    id: str
    task: str
    min_accuracy: float
    variant: Variant
    inputs: JobInput = field(repr=False)
    output_path: Path
    submitted_s: float
    state: str = "queued"
    done: int = 0
    worker_id: int | None = None
    loads: int = 0  # instances loaded for it
    paused_reason: str | None = None
    paused_since_s: float | None = None
    paused_total_s: float = 0.0
    started_s: float | None = None
    finished_s: float | None = None
    error: str | None = None
    cancel: bool = False
    out: np.ndarray | None = field(default=None, repr=False)

    def describe(self, now_s: float) -> dict[str, Any]:
        paused_s = self.paused_total_s + (now_s - self.paused_since_s if self.paused_since_s is not None else 0.0)
        return {
            "id": self.id, "state": self.state, "task": self.task, "min_accuracy": self.min_accuracy,
            "variant": self.variant.name, "worker": self.worker_id, "inputs_done": self.done,
            "inputs_total": self.inputs.total, "output_path": str(self.output_path),
            "paused_reason": self.paused_reason, "paused_since_s": self.paused_since_s, "paused_s": paused_s,
            "submitted_s": self.submitted_s, "started_s": self.started_s, "finished_s": self.finished_s,
            "error": self.error, "instance_loads": self.loads, "cancel_requested": self.cancel, "now_s": now_s,
        }  # fmt: skip


class OfflineJobs:
    """The server's offline jobs: submission, the runner, status, cancellation, metrics."""

    def __init__(self, settings: OfflineSettings, ios: dict[str, TaskIO]) -> None:
        self.settings = settings
        self.ios = dict(ios)  # each task's input shape, from its zoo
        self.jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._next_id = 1
        self._state: LiveState | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._current: Job | None = None
        self.inputs_done = 0
        self.batches_done = 0

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, state: LiveState) -> None:
        self._state = state
        self._wake = asyncio.Event()
        state.after_control.append(self._after_control)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self.jobs.values():
            if job.state not in FINISHED:
                self._finish(job, "failed", "the server shut down")

    @property
    def now_s(self) -> float:
        """The server clock (as the decision trace's)."""
        return self._s().now_s

    def _s(self) -> LiveState:
        assert self._state is not None, "offline jobs used before start()"
        return self._state

    def _poke(self) -> None:
        """Wake the runner (a control run, a submission, a cancellation)."""
        if self._wake is not None:
            self._wake.set()

    def _after_control(self) -> None:
        job = self._current
        if job is not None and job.worker_id is not None:
            try:
                w = self._s().worker(job.worker_id)
            except KeyError:
                w = None
            if w is not None and not may_run_offline(w, self.settings.rule):
                self._pause(job, self._why_not(w))
                inst = w.holding(job.variant.name)
                if inst is not None:
                    inst.mech.cancel_background()
        self._poke()

    # -- submission ----------------------------------------------------------------------
    async def submit(self, body: Any) -> Job:
        """A new queued job from a parsed request body; :class:`Refusal` if it cannot be run
        (the files are checked in a thread: a large tensor file is scanned for non-finite values)."""
        if not isinstance(body, dict):
            raise Refusal(400, "the body must be a JSON object with task, min_accuracy, input_path, output_path")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise Refusal(400, f"unknown field '{unknown[0]}'; fields: {', '.join(sorted(_FIELDS))}")
        task = body.get("task")
        if not isinstance(task, str) or not task:
            raise Refusal(400, "task: must be a non-empty string")
        acc = body.get("min_accuracy", 0.0)
        if isinstance(acc, bool) or not isinstance(acc, int | float) or not 0.0 <= acc <= 1.0:
            raise Refusal(400, f"min_accuracy: must be a number in [0, 1], got {acc!r}")
        catalog = self._s().catalog  # the live one (registered models join it)
        if task not in catalog.tasks:
            raise Refusal(404, f"unknown task '{task}'; tasks: {', '.join(sorted(catalog.tasks))}")
        io = self.ios.get(task)
        if io is None:
            io = self.ios[task] = task_io(task)
        rule = self.settings.rule
        variant = offline_variant(catalog, task, float(acc), rule)
        if variant is None:
            best = max((v.accuracy for v in catalog.by_task(task)
                        if v.is_cpu and v.framework == rule.framework), default=None)  # fmt: skip
            have = f"the most accurate is {best:g}" if best is not None else "there is none"
            raise Refusal(422, f"no {rule.framework} CPU variant of {task} with max_batch >= {rule.batch} reaches "
                               f"accuracy {acc:g} ({have})")
        try:
            out = check_output(body.get("output_path"), body.get("input_path"))
            inputs = await asyncio.to_thread(open_input, body.get("input_path"), io,
                                             self.settings.max_input_bytes, self.settings.image_resize_ratio)
        except InputRefused as exc:
            raise Refusal(400, str(exc)) from None
        except OSError as exc:  # e.g. a name too long, a directory that cannot be listed
            raise Refusal(400, f"input_path or output_path cannot be used: {exc.strerror or type(exc).__name__}") from None
        out_bytes = inputs.total * io.classes * np.dtype(np.float32).itemsize
        if out_bytes > self.settings.max_input_bytes:
            raise Refusal(400, f"the outputs of {inputs.total} inputs would be {out_bytes} bytes, over "
                               f"server.offline_max_input_bytes ({self.settings.max_input_bytes})")
        self._make_room()
        job = Job(f"job-{self._next_id}", task, float(acc), variant, inputs, out, self._s().now_s)
        self._next_id += 1
        self.jobs[job.id] = job
        self._queue.append(job)
        self._poke()
        return job

    def _make_room(self) -> None:
        if len(self.jobs) < self.settings.max_jobs:
            return
        for jid, j in self.jobs.items():
            if j.state in FINISHED:
                del self.jobs[jid]
                return
        raise Refusal(429, f"{len(self.jobs)} offline jobs are queued or running (server.offline_max_jobs); "
                           "try again when one has finished")

    def cancel(self, job: Job) -> None:
        if job.state in FINISHED:
            raise Refusal(409, f"job {job.id} has already finished ({job.state})")
        job.cancel = True
        if job in self._queue:
            self._queue.remove(job)
            self._finish(job, "cancelled", None)
        elif job.worker_id is not None:
            with contextlib.suppress(KeyError):
                inst = self._s().worker(job.worker_id).holding(job.variant.name)
                if inst is not None:
                    inst.mech.cancel_background()
        self._poke()

    # -- the runner ----------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            job = self._queue.popleft()
            self._current = job
            try:
                await self._run_job(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the runner: the job fails with it
                log.exception("offline job %s failed", job.id)
                self._finish(job, "failed", f"internal error: {type(exc).__name__}")
            finally:
                self._current = None

    async def _run_job(self, job: Job) -> None:
        s = self._s()
        job.state, job.started_s = "running", s.now_s
        n, step = job.inputs.total, self.settings.rule.batch
        job.out = None
        attempts = 0
        while job.done < n:
            inst = await self._instance_for(job)
            if inst is None:
                self._finish(job, "cancelled", None)
                return
            lo, hi = job.done, min(job.done + step, n)
            try:
                x = job.inputs.rows(lo, hi)
            except InputRefused as exc:
                self._finish(job, "failed", str(exc))
                return
            try:
                fut = inst.mech.submit_background(x)
            except Overloaded:
                continue  # unloading: the next round finds or loads another instance
            await asyncio.wait([fut])
            if fut.cancelled():
                continue  # withdrawn by a pause or a cancellation before it was sent
            failure = fut.exception()
            if isinstance(failure, Overloaded):
                continue  # the instance went away before the batch was sent
            if failure is not None:
                attempts += 1
                if attempts >= BATCH_ATTEMPTS or not isinstance(failure, BackendError):
                    self._finish(job, "failed", f"inputs {lo}..{hi - 1}: {failure}")
                    return
                continue
            served: Served = fut.result()
            if job.out is None:
                job.out = np.empty((n, *served.y.shape[1:]), dtype=np.float32)
            job.out[lo:hi] = served.y
            job.done, attempts = hi, 0
            self.inputs_done += hi - lo
            self.batches_done += 1
        assert job.out is not None
        try:
            await asyncio.to_thread(write_output, job.output_path, job.out, job.id)
        except OSError as exc:
            self._finish(job, "failed", f"cannot write the output {job.output_path.name}: {exc.strerror}")
            return
        self._finish(job, "done", None)

    async def _instance_for(self, job: Job) -> ViewInstance | None:
        """The instance the job's next batch goes to once the rule lets it run (pausing the job
        while it waits); None when the job was cancelled."""
        s, rule = self._s(), self.settings.rule
        assert self._wake is not None
        while not job.cancel:
            why: str | None
            w: Worker | None = self._worker_of(job)
            inst = w.holding(job.variant.name) if w is not None else None
            if inst is None:
                w = cast("Worker | None", offline_worker(s, job.variant))  # the view's workers are these
                if w is None:
                    why = f"no running worker has room for {job.variant.name}"
                elif (inst := w.holding(job.variant.name)) is None:
                    refused = s.apply_one(LoadVariant(job.variant.name, w.id, 1))
                    why = f"loading {job.variant.name} on worker {w.id} was refused ({refused})" if refused else None
                    inst = None if refused else w.holding(job.variant.name)
                    job.loads += inst is not None
                else:
                    why = None
                if w is not None and inst is not None:
                    job.worker_id = w.id
            else:
                why = None
            if inst is not None and w is not None:
                if inst.state is not InstanceState.READY:
                    why = f"waiting for {job.variant.name} to load on worker {w.id}"
                elif not may_run_offline(w, rule):
                    why = self._why_not(w)
                else:
                    self._resume(job)
                    return inst
            assert why is not None
            self._pause(job, why)
            self._wake.clear()
            await self._wake.wait()  # the next control run (or a cancellation)
        return None

    def _worker_of(self, job: Job) -> Worker | None:
        if job.worker_id is None:
            return None
        try:
            w = self._s().worker(job.worker_id)
        except KeyError:
            return None
        return w if w.state is WorkerState.RUNNING else None

    def _why_not(self, w: Worker) -> str:
        if flagged(w):
            return f"a variant on worker {w.id} is blacklisted (overloaded or interfered)"
        u = w.utilization.get("cpu", 0.0)
        return f"worker {w.id} CPU utilisation {u:.0%} is over {self.settings.rule.max_cpu_utilisation:.0%}"

    def _pause(self, job: Job, why: str) -> None:
        if job.state in FINISHED:
            return
        if job.state != "paused":
            job.state, job.paused_since_s = "paused", self._s().now_s
        job.paused_reason = why

    def _resume(self, job: Job) -> None:
        if job.state == "paused":
            assert job.paused_since_s is not None
            job.paused_total_s += self._s().now_s - job.paused_since_s
            job.state, job.paused_since_s, job.paused_reason = "running", None, None

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        self._resume(job)
        job.state, job.error, job.finished_s = state, error, self._s().now_s if self._state else None
        if state != "done":
            job.out = None

    # -- HTTP and metrics (infaas_real.server.offline_http) ------------------------------
    def routes(self) -> list[Route]:
        from infaas_real.server.offline_http import OfflineEndpoints

        return OfflineEndpoints(self).routes()

    def collector(self) -> Collector:
        from infaas_real.server.offline_http import OfflineCollector

        return OfflineCollector(self)
