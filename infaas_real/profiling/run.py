"""Generate and profile a zoo's variants; write the profile table and its sidecar.

For each (model, framework, threads) the runner is measured once at every batch size in
``batches`` (ascending; the sweep stops early once a single run exceeds ``max_run_s``), and
one variant is emitted per ``max_batch``, with a row for each measured batch <= max_batch.
Variants of one (model, framework, threads) therefore share their latencies: a runner's
latency at batch b does not depend on the largest batch it will be given.

Caching: artifacts by content hash (:mod:`.artifacts`); measurements by (artifact hash,
framework, threads, batches, measure config, host) under ``<cache>/measurements``. A re-run
builds and measures only what changed. One failing (model, framework) is reported and
skipped; it never aborts the run.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infaas_real.profiling import hostinfo
from infaas_real.profiling.artifacts import FRAMEWORK_KIND, ArtifactStore, content_hash
from infaas_real.profiling.measure import MeasureConfig, Measurement, measure_runner, predict
from infaas_real.zoo.base import Zoo, ZooModel, check_accuracy_resolution

COLUMNS = (
    "variant", "model", "task", "framework", "hardware", "cores", "max_batch", "batch",
    "latency_p50_ms", "latency_p99_ms", "load_latency_ms", "memory_mb", "accuracy", "source",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ProfilePlan:
    """What to generate and how to measure it (validated from the Hydra config)."""

    frameworks: tuple[str, ...]
    threads: tuple[int, ...]
    batches: tuple[int, ...]
    max_batches: tuple[int, ...]
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    max_run_s: float = 1.0
    device: str = "cpu"
    models: tuple[str, ...] | None = None
    noise_tolerance: float = 0.3
    noise_retries: int = 2
    remeasure_noisy: bool = False


def noise_violations(batches: Sequence[int], p50_ms: Sequence[float], tolerance: float,
                     convolutional: bool) -> int:  # fmt: skip
    """How many signs of interference a measured series shows: p50 falling by more than
    ``tolerance`` from one batch size to the next (latency cannot really fall with more
    work), and — for CNNs — per-item latency at the largest batch above batch 1's by more
    than ``tolerance`` (batching never makes a CNN slower per item)."""
    bad = sum(1 for a, b in itertools.pairwise(p50_ms) if b < a * (1 - tolerance))
    if convolutional and len(batches) > 1:
        # per-item latency may stay flat (a compute-bound CNN on one thread) but not rise
        bad += int(p50_ms[-1] / batches[-1] > (1 + tolerance) * p50_ms[0] / batches[0])
    return bad


@dataclass(slots=True)
class ProfileResult:
    rows: list[dict[str, Any]]
    meta: dict[str, Any]
    measured: int = 0
    cached: int = 0
    failures: list[str] = field(default_factory=list)


def variant_name(model: str, framework: str, hardware: str, cores: int, max_batch: int) -> str:
    """``<model>-<framework>-cpu<cores>-b<max_batch>`` on CPU, ``<model>-<framework>-<hw>-b<max_batch>`` else."""
    where = f"cpu{cores}" if hardware == "cpu" else hardware
    return f"{model}-{framework}-{where}-b{max_batch}"


class Profiler:
    """Runs a :class:`ProfilePlan` over a zoo with one artifact store."""

    def __init__(self, zoo: Zoo, plan: ProfilePlan, store: ArtifactStore, cache_root: Path,
                 log: Callable[[str], None] = print) -> None:  # fmt: skip
        self.zoo = zoo
        self.plan = plan
        self.store = store
        self.cache_root = cache_root
        self.log = log
        if plan.device.startswith("cuda"):
            self.machine = hostinfo.gpu_name(plan.device)
            self.hardware = hostinfo.gpu_class(self.machine)
        else:
            self.machine = hostinfo.cpu_model()
            self.hardware = "cpu"
        self.source = hostinfo.measured_source(self.machine.replace(" ", "-"))

    def tasks(self) -> list[tuple[ZooModel, str, int]]:
        models = self.zoo.models()
        if self.plan.models is not None:
            models = tuple(self.zoo.model(m) for m in self.plan.models)
        for m in models:  # refuse before minutes of measuring, not only at _emit
            if m.accuracy is not None:
                check_accuracy_resolution(self.zoo, m)
        threads = self.plan.threads if self.hardware == "cpu" else (1,)
        return [(m, fw, t) for m in models for fw in self.plan.frameworks for t in threads]

    def run(self, progress: Any = None) -> ProfileResult:
        result = ProfileResult(rows=[], meta={"zoo": self.zoo.name, "machine": self.machine,
                                              "hardware": self.hardware, "variants": {}, "failed": {}})  # fmt: skip
        for model, fw, threads in self.tasks():
            t0 = time.perf_counter()
            try:
                m, art_hash, exporter, cached = self._measure(model, fw, threads)
            except Exception as exc:  # one bad variant never aborts the run
                msg = f"{model.name} {fw} threads={threads}: {type(exc).__name__}: {str(exc)[:400]}"
                result.failures.append(msg)
                result.meta["failed"][f"{model.name}-{fw}-t{threads}"] = msg
                self.log(f"SKIPPED {msg}")
            else:
                result.cached += cached
                result.measured += not cached
                self._emit(result, model, fw, threads, m, art_hash, exporter)
                self.log(f"{'cached  ' if cached else 'measured'} {model.name:<20} {fw:<10} t={threads} "
                         f"b1 p50={m.p50_ms[0]:.3f}ms ({time.perf_counter() - t0:.1f}s)")  # fmt: skip
            if progress is not None:
                progress.update(1)
        return result

    # -- one (model, framework, threads) ---------------------------------------------------
    def _measure(self, model: ZooModel, fw: str, threads: int) -> tuple[Measurement, str, str, bool]:

        if fw == "tensorrt-fp16":
            from infaas_real.profiling.tensorrt import tensorrt_available

            reason = tensorrt_available()
            if reason:
                raise RuntimeError(f"tensorrt-fp16 skipped: {reason}")
        art = self.store.get(model, FRAMEWORK_KIND[fw])
        key = {"artifact": art.hash, "framework": fw, "threads": threads, "hardware": self.hardware,
               "batches": list(self.plan.batches), "max_run_s": self.plan.max_run_s,
               "measure": self.plan.measure.key(), "machine": self.machine,
               "cpus": hostinfo.usable_cpus()}  # fmt: skip
        path = self.cache_root / "measurements" / self.zoo.name / f"{content_hash(key)}.json"
        exporter = str(art.meta.get("exporter", ""))
        if path.is_file():
            hit = Measurement.from_json(json.loads(path.read_text()))
            if not (self.plan.remeasure_noisy and self._violations(model, hit)):
                return hit, art.hash, exporter, True
        best: Measurement | None = None
        for attempt in range(1 + max(0, self.plan.noise_retries)):
            m = self._measure_once(model, fw, threads, art.size_mb)
            if best is None or self._violations(model, m) < self._violations(model, best):
                best = m
            if not self._violations(model, best):
                break
            self.log(f"noisy    {model.name} {fw} t={threads}: p50 {[round(x, 3) for x in m.p50_ms]} "
                     f"(attempt {attempt + 1}); measuring again")  # fmt: skip
        assert best is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(best.to_json()))
        return best, art.hash, exporter, False

    def _violations(self, model: ZooModel, m: Measurement) -> int:
        # a sweep cut short after one batch size (one slow first run) counts as disturbed too
        short = int(len(m.batches) < min(2, len(self.plan.batches)))
        return short + noise_violations(m.batches, m.p50_ms, self.plan.noise_tolerance, model.convolutional)

    def _measure_once(self, model: ZooModel, fw: str, threads: int, artifact_mb: float) -> Measurement:
        from infaas_real.runtime import open_runner

        batches = self._batches_within_budget(model, fw, threads)
        reference = self._reference_top1(model)
        from infaas_core.model import make_variant

        max_b = max(batches)
        probe = make_variant(name=variant_name(model.name, fw, self.hardware, threads, max_b), model=model.name,
                             task=self.zoo.task, framework=fw, hardware=self.hardware, cores=threads,
                             max_batch=max(max_b, len(self.zoo.agreement_inputs())), load_latency_ms=0.0,
                             memory_mb=0.0, accuracy=0.0, source="probe", points={1: (0.0, 0.0)})  # fmt: skip
        return measure_runner(lambda: open_runner(self.store, self.zoo, probe, self.plan.device), self.zoo,
                              batches, self.plan.measure, reference_top1=reference,
                              artifact_mb=artifact_mb, sync=self._sync(),
                              device_peak_mb=self._device_peak())  # fmt: skip

    def _device_peak(self) -> Callable[[], float] | None:
        """GPU: the CUDA allocator's peak since the previous call (MB)."""
        if self.hardware == "cpu":
            return None
        import torch

        device = torch.device(self.plan.device)

        def peak() -> float:
            torch.cuda.synchronize(device)
            value = torch.cuda.max_memory_allocated(device) / 2**20
            torch.cuda.reset_peak_memory_stats(device)
            return float(value)

        return peak

    def _sync(self) -> Callable[[], None] | None:
        if self.hardware == "cpu":
            return None
        import torch

        return torch.cuda.synchronize

    def _batches_within_budget(self, model: ZooModel, fw: str, threads: int) -> tuple[int, ...]:
        """All planned batches; :meth:`_measure` trims with ``max_run_s`` via a quick probe."""
        from infaas_core.model import make_variant
        from infaas_real.runtime import open_runner

        batches = sorted(self.plan.batches)
        if self.plan.max_run_s <= 0:
            return tuple(batches)
        v = make_variant(name="probe", model=model.name, task=self.zoo.task, framework=fw,
                         hardware=self.hardware, cores=threads, max_batch=batches[-1], load_latency_ms=0.0,
                         memory_mb=0.0, accuracy=0.0, source="probe", points={1: (0.0, 0.0)})  # fmt: skip
        runner = open_runner(self.store, self.zoo, v, self.plan.device)
        keep: list[int] = []
        try:
            for b in batches:
                keep.append(b)
                x = self.zoo.example_input(b)
                runner.run(x)
                t0 = time.perf_counter()
                runner.run(x)
                if time.perf_counter() - t0 > self.plan.max_run_s:
                    break
        finally:
            runner.close()
        return tuple(keep)

    def _reference_top1(self, model: ZooModel) -> np.ndarray:
        """Top-1 of the torch fp32 model on the agreement inputs (cached by weights hash)."""
        import torch

        from infaas_real.profiling.artifacts import KIND_WEIGHTS

        weights = self.store.get(model, KIND_WEIGHTS)
        path = self.cache_root / "reference" / self.zoo.name / f"{weights.hash}.npy"
        if path.is_file():
            return np.load(path)
        module = self.store.load_module(model)
        with torch.inference_mode():
            top1 = predict(lambda x: module(torch.from_numpy(x)).numpy(), self.zoo.agreement_inputs(), 16)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, top1)
        return top1

    def _emit(self, result: ProfileResult, model: ZooModel, fw: str, threads: int, m: Measurement,
              art_hash: str, exporter: str) -> None:  # fmt: skip
        accuracy = m.accuracy if m.accuracy is not None else model.accuracy
        if m.accuracy is None:
            check_accuracy_resolution(self.zoo, model)
        if accuracy is None:
            raise RuntimeError(f"{model.name}: no accuracy (zoo gives none and has no labels)")
        for mb in self.plan.max_batches:
            points = [(b, p50, p99) for b, p50, p99 in zip(m.batches, m.p50_ms, m.p99_ms) if b <= mb]
            if not points:
                continue
            name = variant_name(model.name, fw, self.hardware, threads, mb)
            for b, p50, p99 in points:
                result.rows.append({
                    "variant": name, "model": model.name, "task": self.zoo.task, "framework": fw,
                    "hardware": self.hardware, "cores": threads, "max_batch": mb, "batch": b,
                    "latency_p50_ms": round(p50, 4), "latency_p99_ms": round(max(p99, p50), 4),
                    "load_latency_ms": round(m.load_latency_ms, 2), "memory_mb": round(m.memory_mb, 2),
                    "accuracy": round(accuracy, 5), "source": self.source,
                })  # fmt: skip
            result.meta["variants"][name] = {
                "agreement_top1": m.agreement_top1, "artifact_hash": art_hash, "exporter": exporter,
                "reps": dict(zip(map(str, m.batches), m.reps)), "measured_batches": list(m.batches),
                "accuracy_source": "measured" if m.accuracy is not None else model.accuracy_source,
            }  # fmt: skip


def write_table(rows: Sequence[dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    """The CSV in the DESIGN.md profile schema and ``<out>.meta.json`` beside it."""
    import csv

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    Path(str(out) + ".meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def plan_dict(plan: ProfilePlan) -> dict[str, Any]:
    return asdict(plan)
