"""Service-time models by name (``sim.latency_model``): how long one batch takes.

Each model turns a variant's profile into per-batch-size tables and a stream of
pre-drawn unit noise, so the data plane computes a service time with one table lookup and
at most one ``exp`` per batch:

- ``profile`` (default): lognormal fitted to the profile's p50/p99 at that batch size —
  ``mu = ln p50``, ``sigma = (ln p99 - ln p50) / z_0.99`` with ``z_0.99 = 2.326``;
  service = ``p50 * exp(sigma * Z)``, ``Z`` standard normal.
- ``deterministic``: always the p50 (M/D/c validation).
- ``exponential``: exponential with mean p50 (M/M/c validation); service = ``p50 * E``,
  ``E`` ~ Exp(1).

Noise is drawn in blocks from the run's latency generator (``numpy.random.Generator``), so
a run is reproducible for a seed and the hot loop never calls numpy per batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infaas_core.errors import UnknownNameError
from infaas_core.model import Variant

Z_P99 = 2.3263478740408408
"""Standard-normal 0.99 quantile: p99 = p50 * exp(sigma * Z_P99) for a lognormal."""

# Noise kinds: the data plane branches on these small ints in its inner loop.
NOISE_NONE, NOISE_EXPONENTIAL, NOISE_NORMAL = 0, 1, 2


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """A named service-time model: which noise it draws and whether it uses the p99."""

    name: str
    noise: int
    description: str

    def tables(self, variant: Variant) -> tuple[list[float], list[float]]:
        """``(p50_s, sigma)`` indexed by batch size (index 0 unused): seconds, log-sd."""
        return self.tables_ms(variant.p50_ms_by_batch, variant.p99_ms_by_batch)

    def tables_ms(self, p50_ms: Sequence[float], p99_ms: Sequence[float]) -> tuple[list[float], list[float]]:
        """The same from per-batch p50 / p99 lists in ms (batch 1 first): a variant's profile,
        or a measured service profile of the data plane (``sim.service_profile``)."""
        p50 = [0.0] + [ms / 1000.0 for ms in p50_ms]
        if self.noise != NOISE_NORMAL:
            return p50, [0.0] * len(p50)
        sig = [0.0]
        for lo, hi in zip(p50_ms, p99_ms):
            sig.append(max(math.log(hi) - math.log(lo), 0.0) / Z_P99 if lo > 0 and hi > 0 else 0.0)
        return p50, sig


LATENCY_MODELS: dict[str, LatencyModel] = {
    m.name: m
    for m in (
        LatencyModel("profile", NOISE_NORMAL, "lognormal fitted to the profile's p50/p99 per batch"),
        LatencyModel("deterministic", NOISE_NONE, "always the profile's p50"),
        LatencyModel("exponential", NOISE_EXPONENTIAL, "exponential with mean p50"),
    )
}


def latency_model(name: str) -> LatencyModel:
    try:
        return LATENCY_MODELS[name]
    except KeyError:
        raise UnknownNameError("sim.latency_model", name, list(LATENCY_MODELS)) from None


class NoiseStream:
    """Unit noise pre-drawn in blocks as a Python list (fast scalar indexing in the loop).

    The data plane reads ``buf[pos]`` and advances ``pos`` itself; :meth:`ensure` refills
    before a loop that may consume up to ``n`` values.
    """

    __slots__ = ("block", "buf", "kind", "pos", "rng")

    def __init__(self, kind: int, rng: np.random.Generator, block: int = 1 << 16) -> None:
        self.kind = kind
        self.rng = rng
        self.block = block
        self.buf: list[float] = []
        self.pos = 0

    def ensure(self, n: int) -> list[float]:
        if self.kind == NOISE_NONE or len(self.buf) - self.pos >= n:
            return self.buf
        size = max(self.block, n)
        draw = (
            self.rng.standard_exponential(size)
            if self.kind == NOISE_EXPONENTIAL
            else self.rng.standard_normal(size)
        )
        self.buf = self.buf[self.pos :] + draw.tolist()
        self.pos = 0
        return self.buf
