"""The server's side of registration: requests in, jobs out, variants into the live catalog.

``POST /v2/infaas/models`` -> :meth:`Registrar.submit`:

1. the request is checked (:func:`~infaas_real.registration.spec.parse_request`: fields,
   accuracy in [0, 1], the name free, the input shape the task's) — nothing is written
   before this passes;
2. its files are staged in ``<registration.dir>/<name>-<job id>/`` and a job process is
   spawned (:mod:`~infaas_real.registration.job`) that checks them (ONNX graph, safe
   weights, data); the request is answered when the check ends: 202 with the job, or the
   check's refusal (422), after which the directory is deleted;
3. jobs profile one at a time, in order (parallel profiling would disturb every job's
   measurements); ``GET /v2/infaas/jobs/{id}`` shows state (``checking``, ``queued``,
   ``profiling``, ``done``, ``failed``), runners measured out of the total, errors and the
   last log lines;
4. at the end the job's profile table is read and all its variants go into the live
   catalog at once through the host's ``add_registered`` (one swap, in the event loop). If a
   runner failed, the process died, the job ran past ``registration.job_timeout_s``, or the
   swap is refused, nothing is added and the directory is deleted: a model is in the
   catalog whole or not at all.

A pipe connects the server to each job process; one thread per job reads it and hands each
message to the event loop (``call_soon_threadsafe``), where all job state lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import secrets
import shutil
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from infaas_core.catalog import load_catalog
from infaas_core.model import Variant
from infaas_real.registration.job import job_main
from infaas_real.registration.settings import RegistrationSettings
from infaas_real.registration.spec import (
    CALIBRATION_FILE,
    SUBMITTED_MODEL_FILE,
    VALIDATION_FILE,
    Manifest,
    RegistrationError,
    parse_request,
)
from infaas_real.server import jsonfast

_SPAWN = multiprocessing.get_context("spawn")
LOG_LINES = 20
"""Log lines of a job kept for ``GET /v2/infaas/jobs/{id}``."""


class RegistrationHost(Protocol):
    """What the registrar needs of the server."""

    def name_in_use(self, name: str) -> str | None: ...

    def task_shape(self, task: str) -> tuple[tuple[int, ...], int] | None: ...

    def add_registered(self, variants: list[Variant], manifest: Manifest, directory: Path) -> None: ...


@dataclass(slots=True)
class Job:
    """One registration, as ``GET /v2/infaas/jobs/{id}`` shows it."""

    id: str
    name: str
    directory: Path
    started_s: float
    state: str = "checking"
    done: int = 0
    total: int = 0
    errors: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    finished_s: float | None = None
    manifest: Manifest | None = None
    checked: asyncio.Future[tuple[int, str] | None] | None = None
    conn: Any = None
    process: Any = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")

    def to_json(self, now_s: float) -> dict[str, Any]:
        end = self.finished_s if self.finished_s is not None else now_s
        return {
            "id": self.id, "name": self.name, "state": self.state,
            "progress": {"done": self.done, "total": self.total},
            "errors": list(self.errors), "variants": list(self.variants), "log": list(self.log),
            "elapsed_s": round(end - self.started_s, 3),
        }  # fmt: skip


class Registrar:
    """Registration jobs of one server (all methods run in its event loop)."""

    def __init__(self, settings: RegistrationSettings, host: RegistrationHost,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.settings = settings
        self.host = host
        self.clock = clock
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: deque[Job] = deque()
        self._profiling: Job | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- requests ------------------------------------------------------------------------
    def _active(self) -> list[Job]:
        return [j for j in self.jobs.values() if not j.finished]

    def _name_in_use(self, name: str) -> str | None:
        for j in self._active():
            if j.name == name:
                return f"being registered (job {j.id})"
        return self.host.name_in_use(name)

    async def submit(self, body: bytes) -> Job:
        """Check a registration request, start its job and wait for the files' check; the
        job (checked, queued or profiling) or :class:`RegistrationError`."""
        self._loop = asyncio.get_running_loop()
        if len(self._active()) >= self.settings.max_pending_jobs:
            raise RegistrationError(503, f"{self.settings.max_pending_jobs} registrations are in progress; "
                                         "try again when one has finished")  # fmt: skip
        try:
            data = jsonfast.loads(body)
        except (jsonfast.DecodeError, ValueError):
            raise RegistrationError(400, "the body is not valid JSON") from None
        req = parse_request(data, allowed_frameworks=self.settings.frameworks, names_in_use=self._name_in_use,
                            task_shape=self.host.task_shape)  # fmt: skip
        jid = secrets.token_hex(6)
        directory = self.settings.directory / f"{req.name}-{jid}"
        names = {"model": SUBMITTED_MODEL_FILE[req.format], "validation": VALIDATION_FILE,
                 "calibration": CALIBRATION_FILE}  # fmt: skip
        try:
            directory.mkdir(parents=True)
            for key, blob in req.files.items():
                (directory / names[key]).write_bytes(blob)
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise RegistrationError(503, f"cannot stage the files in registration.dir: {exc.strerror}") from None
        s = self.settings
        spec = {"name": req.name, "task": req.task, "input_shape": list(req.input_shape), "classes": req.classes,
                "format": req.format, "architecture": req.architecture, "accuracy": req.accuracy,
                "frameworks": list(req.frameworks), "exporter": s.exporter, "agreement_samples": s.agreement_samples,
                "example_seed": s.example_seed}  # fmt: skip
        job = Job(jid, req.name, directory, self.clock())
        job.checked = self._loop.create_future()
        self.jobs[jid] = job
        self._trim()
        parent, child = _SPAWN.Pipe(duplex=True)
        job.conn = parent
        job.process = _SPAWN.Process(target=job_main, args=(child, str(directory), spec, s.plan()),
                                     name=f"infaas-register-{req.name}", daemon=True)  # fmt: skip
        job.process.start()
        child.close()
        threading.Thread(target=self._pump, args=(job,), name=f"register-{jid}", daemon=True).start()
        try:
            verdict = await asyncio.wait_for(asyncio.shield(job.checked), s.check_timeout_s)
        except TimeoutError:
            verdict = (422, f"the model's files were not checked within registration.check_timeout_s "
                            f"({s.check_timeout_s:g} s)")  # fmt: skip
        if verdict is not None:
            self._fail(job, verdict[1])
            self.jobs.pop(jid, None)  # a refused request leaves no job behind
            raise RegistrationError(*verdict)
        job.state = "queued"
        self._queue.append(job)
        self._next()
        return job

    def job(self, jid: str) -> Job | None:
        return self.jobs.get(jid)

    def _trim(self) -> None:
        done = [j for j in self.jobs.values() if j.finished]
        for j in done[: max(0, len(done) - self.settings.keep_finished_jobs)]:
            self.jobs.pop(j.id, None)

    # -- the job process -----------------------------------------------------------------
    def _pump(self, job: Job) -> None:
        """The job's reader thread: every message into the event loop, then EOF."""
        assert self._loop is not None
        loop = self._loop
        while True:
            try:
                msg = job.conn.recv()
            except (EOFError, OSError):
                break
            with contextlib.suppress(RuntimeError):  # the loop has closed: the server is exiting
                loop.call_soon_threadsafe(self._on_message, job, msg)
        job.process.join()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_message, job, ("eof", job.process.exitcode))

    def _on_message(self, job: Job, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        checked = job.checked
        if kind == "invalid":
            if checked is not None and not checked.done():
                checked.set_result((int(msg[1]), str(msg[2])))
        elif kind == "valid":
            job.manifest = Manifest.from_json(msg[1])
            job.total = int(msg[2])
            if checked is not None and not checked.done():
                checked.set_result(None)
        elif kind == "progress":
            job.done, job.total = int(msg[1]), int(msg[2])
        elif kind == "log":
            job.log.append(str(msg[1]))
        elif kind == "result":
            self._finish(job, Path(msg[1]), list(msg[2]))
        elif kind == "error":
            if checked is not None and not checked.done():
                checked.set_result((422, f"the model could not be checked: {msg[1]}"))
            else:
                self._fail(job, f"profiling failed: {msg[1]}")
        elif kind == "eof":
            if checked is not None and not checked.done():
                checked.set_result((422, f"the process checking the model exited (code {msg[1]}) without a verdict"))
            elif not job.finished:
                self._fail(job, f"the profiling process exited (code {msg[1]}) before it finished")

    def _next(self) -> None:
        """Start profiling the next queued job when none is profiling."""
        if self._profiling is not None or not self._queue:
            return
        job = self._queue.popleft()
        self._profiling = job
        job.state = "profiling"
        try:
            job.conn.send("go")
        except OSError:
            self._fail(job, "the job process has gone")
            return
        assert self._loop is not None
        self._loop.call_later(self.settings.job_timeout_s, self._timeout, job)

    def _timeout(self, job: Job) -> None:
        if not job.finished:
            self._fail(job, f"profiling ran past registration.job_timeout_s ({self.settings.job_timeout_s:g} s)")

    def _finish(self, job: Job, table: Path, failures: list[str]) -> None:
        if failures:
            self._fail(job, *(f"runner failed: {f}" for f in failures))
            return
        assert job.manifest is not None
        try:
            variants = list(load_catalog(table).variants)
            wrong = [v.name for v in variants if v.model != job.name or v.task != job.manifest.task]
            if not variants or wrong:
                raise RegistrationError(500, f"the profile table holds rows of another model: {wrong[:3]}")
            self.host.add_registered(variants, job.manifest, job.directory)
        except Exception as exc:  # nothing was added: the catalog stays as it was
            self._fail(job, f"not added to the catalog: {exc}")
            return
        job.variants = [v.name for v in variants]
        job.state = "done"
        job.finished_s = self.clock()
        self._release(job)

    def _fail(self, job: Job, *errors: str) -> None:
        if job.finished:
            return
        job.errors.extend(errors)
        job.state = "failed"
        job.finished_s = self.clock()
        self._kill(job)
        shutil.rmtree(job.directory, ignore_errors=True)
        with contextlib.suppress(ValueError):
            self._queue.remove(job)
        self._release(job)

    def _release(self, job: Job) -> None:
        if job.conn is not None:
            with contextlib.suppress(OSError):
                job.conn.send("stop")
        if self._profiling is job:
            self._profiling = None
            self._next()

    @staticmethod
    def _kill(job: Job) -> None:
        p = job.process
        if p is not None and p.is_alive():
            p.kill()

    def close(self) -> None:
        """Stop every job process (the server is exiting); unfinished jobs leave nothing."""
        for job in list(self.jobs.values()):
            if not job.finished:
                self._fail(job, "the server stopped")

