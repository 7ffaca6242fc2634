"""Measure one (model, framework, threads) runner: load latency, per-batch latency, memory,
agreement with the fp32 reference, accuracy.

- load latency: wall time from "artifact on disk" to the first answer of a batch of 1;
- latency: after ``warmup`` runs, repeat each batch until ``reps`` runs or the per-point
  time budget is spent (never fewer than ``min_reps``); p50 and p99 of those runs;
- memory: peak RSS growth of this process over load + all runs (sampled every few ms by a
  thread), floored at the artifact size — a shared process reuses freed pages, so the
  growth alone can under-count a model whose weights land in recycled memory;
- agreement: top-1 agreement with the torch fp32 model on the zoo's agreement inputs;
- accuracy: top-1 on the zoo's labelled split when it has one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import psutil

from infaas_real.zoo.base import Zoo


@dataclass(frozen=True, slots=True)
class MeasureConfig:
    """How hard to measure one point (all of it goes into the measurement cache key)."""

    reps: int = 50
    min_reps: int = 20
    warmup: int = 3
    time_budget_s_per_point: float = 1.0
    rounds: int = 1
    """Timed runs are split into this many round-robin passes over the batch sizes, so a
    change in background load hits every batch size alike instead of one."""

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        if self.rounds == 1:  # keys from before rounds existed stay valid
            del d["rounds"]
        return d

    def per_round(self) -> MeasureConfig:
        r = max(1, self.rounds)
        return MeasureConfig(reps=-(-self.reps // r), min_reps=-(-self.min_reps // r), warmup=0,
                             time_budget_s_per_point=self.time_budget_s_per_point / r)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one runner measured, per batch size."""

    load_latency_ms: float
    memory_mb: float
    batches: tuple[int, ...]
    p50_ms: tuple[float, ...]
    p99_ms: tuple[float, ...]
    reps: tuple[int, ...]
    agreement_top1: float | None
    accuracy: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> Measurement:
        return Measurement(
            load_latency_ms=float(d["load_latency_ms"]), memory_mb=float(d["memory_mb"]),
            batches=tuple(d["batches"]), p50_ms=tuple(d["p50_ms"]), p99_ms=tuple(d["p99_ms"]),
            reps=tuple(d["reps"]), agreement_top1=d["agreement_top1"], accuracy=d["accuracy"],
        )  # fmt: skip


class _PeakRss:
    """Samples this process's RSS in a thread and keeps the maximum."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self._proc = psutil.Process()
        self.start_bytes = self._proc.memory_info().rss
        self.peak_bytes = self.start_bytes
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)
            self._stop.wait(self._interval_s)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak_bytes - self.start_bytes) / 2**20


def predict(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, chunk: int) -> np.ndarray:
    """Top-1 class of every row of ``x``, in chunks of at most ``chunk``."""
    return np.concatenate([run(x[i : i + chunk]).argmax(axis=1) for i in range(0, len(x), chunk)])


def time_point(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, cfg: MeasureConfig,
               sync: Callable[[], None] | None = None) -> list[float]:  # fmt: skip
    """Latencies (ms) of repeated runs of one batch, after warm-up."""
    for _ in range(cfg.warmup):
        run(x)
    out: list[float] = []
    deadline = time.perf_counter() + cfg.time_budget_s_per_point
    while len(out) < cfg.reps and (len(out) < cfg.min_reps or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        run(x)
        if sync is not None:
            sync()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def measure_runner(
    open_runner: Callable[[], Any],
    zoo: Zoo,
    batches: Sequence[int],
    cfg: MeasureConfig,
    *,
    reference_top1: np.ndarray | None,
    artifact_mb: float,
    sync: Callable[[], None] | None = None,
    device_peak_mb: Callable[[], float] | None = None,
) -> Measurement:
    """Open a runner (artifact already on disk) and measure it at each batch size.

    ``device_peak_mb`` (GPU): called once before loading (to reset the allocator's peak) and
    once at the end; its result replaces the RSS growth as ``memory_mb``.
    """
    one = zoo.example_input(1)
    if device_peak_mb is not None:
        device_peak_mb()
    with _PeakRss() as rss:
        t0 = time.perf_counter()
        runner = open_runner()
        runner.run(one)
        if sync is not None:
            sync()
        load_ms = (time.perf_counter() - t0) * 1000.0
        inputs = {b: zoo.example_input(b) for b in batches}
        for b in batches:
            for _ in range(cfg.warmup):
                runner.run(inputs[b])
        lat: dict[int, list[float]] = {b: [] for b in batches}
        step = cfg.per_round()
        for _ in range(max(1, cfg.rounds)):
            for b in batches:
                lat[b] += time_point(runner.run, inputs[b], step, sync)
        p50 = [float(np.percentile(lat[b], 50)) for b in batches]
        p99 = [float(np.percentile(lat[b], 99)) for b in batches]
        reps = [len(lat[b]) for b in batches]
        chunk = max(batches)
        agreement = None
        if reference_top1 is not None:
            top1 = predict(runner.run, zoo.agreement_inputs(), chunk)
            agreement = float(np.mean(top1 == reference_top1))
        accuracy = None
        data = zoo.eval_data()
        if data is not None:
            x, y = data
            accuracy = float(np.mean(predict(runner.run, x, chunk) == y))
        device_mb = device_peak_mb() if device_peak_mb is not None else None
        runner.close()
    return Measurement(
        load_latency_ms=load_ms,
        memory_mb=device_mb if device_mb is not None else max(rss.growth_mb, artifact_mb),
        batches=tuple(batches),
        p50_ms=tuple(p50),
        p99_ms=tuple(p99),
        reps=tuple(reps),
        agreement_top1=agreement,
        accuracy=accuracy,
    )
