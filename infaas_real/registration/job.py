"""The registration job: one process per registered model (``spawn``ed by the server, or run
in-process by the CLI's offline mode).

1. **Check** the staged files (:func:`~infaas_real.registration.model.inspect_model`) and
   say ``("valid", manifest, runners)`` or ``("invalid", status, reason)``;
2. wait for ``"go"`` (the server profiles one model at a time, so jobs do not disturb each
   other's measurements);
3. **profile** with the zoo profiler (:class:`~infaas_real.profiling.run.Profiler`): every
   (framework, core count) runner of the model measured at each batch size, one variant
   per max batch, artifacts and measurements cached in the model's directory, saying
   ``("progress", done, total)`` after each runner and ``("log", line)`` for each line;
4. write the profile table ``profile.csv`` (the DESIGN.md schema, ``source``
   ``measured:<cpu>:<date>``) and say ``("result", path, failures)``.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from infaas_real.profiling.measure import MeasureConfig, predict
from infaas_real.profiling.run import ProfilePlan, Profiler, write_table
from infaas_real.registration.model import RegisteredStore, RegisteredZoo, inspect_model
from infaas_real.registration.spec import Manifest, RegistrationError
from infaas_real.zoo.base import ZooModel

PROFILE_TABLE = "profile.csv"

Send = Callable[[tuple[Any, ...]], None]


class RegisteredProfiler(Profiler):
    """The zoo profiler on a registered model: an ONNX model's fp32 reference is its graph
    (there is no torch module to compare with)."""

    zoo: RegisteredZoo

    def _reference_top1(self, model: ZooModel) -> np.ndarray:
        if self.zoo.manifest.format != "onnx":
            out: np.ndarray = super()._reference_top1(model)
            return out
        from infaas_real.profiling.artifacts import KIND_ONNX_FP32
        from infaas_real.runtime import OrtRunner

        art = self.store.get(model, KIND_ONNX_FP32)
        x = self.zoo.agreement_inputs()
        runner = OrtRunner(art.path, name=model.name, input_shape=self.zoo.input_shape, max_batch=len(x), threads=1)
        try:
            return predict(runner.run, x, len(x))
        finally:
            runner.close()


def build_plan(manifest: Manifest, plan: Mapping[str, Any], usable_cpus: int) -> ProfilePlan:
    """The profiler's plan for ``manifest`` from ``RegistrationSettings.plan()``; core counts
    above this machine's usable CPUs are dropped (1 is always kept)."""
    threads = tuple(t for t in plan["threads"] if t <= usable_cpus) or (1,)
    return ProfilePlan(frameworks=tuple(manifest.frameworks), threads=threads, batches=tuple(plan["batches"]),
                       max_batches=tuple(plan["max_batches"]), measure=MeasureConfig(**plan["measure"]),
                       max_run_s=float(plan["max_run_s"]), device="cpu",
                       noise_tolerance=float(plan["noise_tolerance"]), noise_retries=int(plan["noise_retries"]))  # fmt: skip


class _Progress:
    def __init__(self, send: Send, total: int) -> None:
        self.send = send
        self.total = total
        self.done = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        self.send(("progress", self.done, self.total))


def check(directory: Path, spec: Mapping[str, Any], plan: Mapping[str, Any]) -> tuple[Manifest, RegisteredProfiler,
                                                                                      list[str]]:  # fmt: skip
    """Step 1: the manifest and the profiler that step 3 runs (raises RegistrationError)."""
    from infaas_real.profiling import hostinfo

    manifest = inspect_model(directory, spec)
    zoo = RegisteredZoo(manifest, directory)
    lines: list[str] = []
    profiler = RegisteredProfiler(zoo, build_plan(manifest, plan, hostinfo.usable_cpus()), RegisteredStore(zoo),
                                  directory, log=lines.append)  # fmt: skip
    return manifest, profiler, lines


def profile(profiler: RegisteredProfiler, send: Send) -> tuple[Path, list[str]]:
    """Step 3 and 4: measure every runner, write the profile table; (its path, failures)."""
    total = len(profiler.tasks())
    profiler.log = lambda line: send(("log", line))
    result = profiler.run(progress=_Progress(send, total))
    out = profiler.zoo.directory / PROFILE_TABLE
    result.meta["registered"] = profiler.zoo.manifest.to_json()
    if result.rows:
        write_table(result.rows, result.meta, out)
    elif not result.failures:
        result.failures.append("nothing was measured")
    return out, list(result.failures)


def job_main(conn: Any, directory: str, spec: dict[str, Any], plan: dict[str, Any]) -> None:
    """The job process's entry point (``conn``: its end of a duplex pipe to the server)."""
    d = Path(directory)
    try:
        try:
            manifest, profiler, _ = check(d, spec, plan)
        except RegistrationError as exc:
            conn.send(("invalid", exc.status, exc.message))
            return
        conn.send(("valid", manifest.to_json(), len(profiler.tasks())))
        try:
            go = conn.recv()
        except EOFError:  # the server went away
            return
        if go != "go":
            return
        path, failures = profile(profiler, conn.send)
        conn.send(("result", str(path), failures))
    except Exception as exc:  # reported as the job's error; the server cleans up
        tb = traceback.format_exc(limit=3).strip().splitlines()
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}", tb[-3:]))
