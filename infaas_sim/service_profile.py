"""A measured service profile of the data plane (``sim.service_profile``): per variant and
batch size, how long one batch takes on the machine being modelled, where the catalog says
how long it took where it was profiled.

The policy reads the catalog as profiled in both backends (a real server's does too); the
simulator's data plane draws a variant's service times from this profile when it lists the
variant (lognormal fitted to its p50 / p99, as for the catalog under ``sim.latency_model:
profile``), else from the catalog x ``sim.service_scale`` + ``sim.service_extra_ms``.

``infaas-real calibrate-frontend`` writes one (``<catalog>.service.csv``): each variant's
batch inference time inside its worker slot as the server's executor timestamps it (the trip
to the replica process and back included), at light load, on this machine. The file is a
CSV with the columns ``variant, batch, latency_p50_ms, latency_p99_ms`` (others, such as
``source`` and ``samples``, are kept for the reader); every batch size 1..``max_batch`` of a
listed variant must be there.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from infaas_core.catalog import Catalog
from infaas_core.errors import ConfigError

KEY = "sim.service_profile"
COLUMNS = ("variant", "batch", "latency_p50_ms", "latency_p99_ms")

ServiceProfile = dict[str, tuple[list[float], list[float]]]
"""variant name -> (p50 ms by batch, p99 ms by batch), batch 1 first."""


def load_service_profile(path: str | Path, catalog: Catalog) -> ServiceProfile:
    """Read and check a service profile against ``catalog``; a bad file fails with one line."""
    p = Path(path)
    try:
        with p.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(KEY, f"{p}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except OSError as exc:
        raise ConfigError(KEY, f"cannot read {p}: {exc.strerror or exc}") from None
    names = {v.name for v in catalog}
    points: dict[str, dict[int, tuple[float, float]]] = {}
    for i, r in enumerate(rows, start=2):
        name = r["variant"]
        if name not in names:
            raise ConfigError(KEY, f"{p} line {i}: variant {name!r} is not in the catalog")
        try:
            b, p50, p99 = int(r["batch"]), float(r["latency_p50_ms"]), float(r["latency_p99_ms"])
        except ValueError:
            raise ConfigError(
                KEY, f"{p} line {i}: batch must be an integer and latencies numbers"
            ) from None
        if not (b >= 1 and math.isfinite(p50) and math.isfinite(p99) and 0 < p50 <= p99):
            raise ConfigError(KEY, f"{p} line {i}: needs batch >= 1 and 0 < p50 <= p99 (finite), got "
                                   f"batch {b}, p50 {p50}, p99 {p99}")  # fmt: skip
        if b in points.setdefault(name, {}):
            raise ConfigError(KEY, f"{p} line {i}: {name} batch {b} appears twice")
        points[name][b] = (p50, p99)
    out: ServiceProfile = {}
    for name, by_batch in points.items():
        mb = catalog.get(name).max_batch
        gaps = [b for b in range(1, mb + 1) if b not in by_batch]
        if gaps:
            raise ConfigError(KEY, f"{p}: {name} lacks batch size(s) {', '.join(map(str, gaps))} "
                                   f"(every size 1..{mb} is needed)")  # fmt: skip
        out[name] = (
            [by_batch[b][0] for b in range(1, mb + 1)],
            [by_batch[b][1] for b in range(1, mb + 1)],
        )
    return out
