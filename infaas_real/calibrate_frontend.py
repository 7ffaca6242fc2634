"""``infaas-real calibrate-frontend catalog=<name>``: measure the server's front end and worker
slot start on this machine; write ``catalogs/<catalog>.frontend.yaml`` beside the catalog.

What the simulator's front-end stage (``sim.frontend``, :mod:`infaas_sim.frontend`) needs:

- ``per_query_ms`` and ``per_item_ms``: the front end's time per query, affine in the
  request's item count. A fresh server (policy ``infaas``) is driven open-loop at a light rate
  (``calibrate_frontend.rate_qps``, Poisson) with requests of 1 and of ``batch_items`` inputs
  sent to one variant by name; for each answer the front end's part is the client latency
  minus the replica's queue wait and the batch's inference time, both as the server reports
  them (its executor's timestamps). The medians at the two sizes give the line (its slope
  cut to [0, the 1-item time], so the 1-item time — a simulated query's — is exact). At that light
  load the front end's queue is empty, so this is its service time: HTTP, parsing, the
  policy, the pipe to the worker and back, the response, and the client's own share;
- ``cores``: servers of that queue (``calibrate_frontend.cores``; the server's front end is
  one asyncio thread);
- ``infer_scale``: the calibration variant's inference time inside its worker slot (the
  server's timestamps, 1-item requests) over its profiled batch-1 time — how much slower the
  catalog's numbers run on this machine as it is now (``validate.service_scale: calibrated``);
- ``infer_extra_ms``: the same two times' difference (at least 0): a worker slot's fixed cost
  per call — the request's way to the replica process and back — which a profile of the
  runner alone does not see (``validate.service_extra_ms: calibrated``, the default: the
  fixed cost does not grow with the model, so adding it transfers from the small
  calibration variant to larger ones, where a ratio does not);
- ``machine_cores``: this machine's cores, which the front end, the load generator and the
  worker slots share (the simulator's shared-cores model, ``sim.frontend.machine_cores``:
  with ``per_query_ms + per_item_ms`` as the front end's CPU per query, it stretches the CPU
  replicas' service when the machine is oversubscribed);
- ``slot_start_ms``: what loading a variant takes here beyond its profiled load latency (a
  worker process starting, its runtime importing): the first request to a not-yet-loaded
  variant waits for it. ``concurrent_slots`` variants are asked for at once (INFaaS's first
  queries of the validation scenario start two slots together); the mean of their waits.

The file also records where and when it was measured (CPU model, cores, load average, date,
commit), so a reader can tell a calibration from another machine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.configs import REPO_ROOT
from infaas_core.errors import BackendError, ConfigError
from infaas_core.model import App, Requirements, Variant
from infaas_core.workload import generate
from infaas_real.calibrate_load import Answers, open_loop
from infaas_real.server.config import build_apps, build_catalog, compose, default_run_dir, section


def calibration_variant(cfg: dict[str, Any], catalog: Catalog, apps: Sequence[App], items: int) -> Variant:
    """``calibrate_frontend.variant``; else the fastest 1-core CPU variant at batch 1 whose
    ``max_batch`` takes ``items`` (so a request of that many inputs is one batch)."""
    name = section(cfg, "calibrate_frontend").get("variant")
    if name:
        return catalog.get(str(name))
    cands = [v for v in catalog if v.is_cpu and v.cores == 1 and v.max_batch >= items]
    if not cands:
        raise ConfigError("calibrate_frontend.variant", f"no 1-core CPU variant with max_batch >= {items}; name one")
    return min(cands, key=lambda v: (v.batch1_latency_ms, v.name))


def slot_variants(catalog: Catalog, first: Variant, n: int) -> list[Variant]:
    """``first`` and the ``n - 1`` fastest other 1-core CPU variants (of other models first)."""
    if n < 1:
        raise ConfigError("calibrate_frontend.concurrent_slots", f"must be >= 1, got {n}")
    others = sorted((v for v in catalog if v.is_cpu and v.cores == 1 and v.name != first.name),
                    key=lambda v: (v.model == first.model, v.batch1_latency_ms, v.name))  # fmt: skip
    return [first, *others[: n - 1]]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _front_end_ms(ans: Answers, what: str) -> np.ndarray:
    o = ans.overhead_ms
    o = o[np.isfinite(o)]
    if o.size < 5:
        raise BackendError(f"front-end calibration ({what}): only {o.size} answers ({ans.errors or ans.http})")
    return o


def main(overrides: Sequence[str]) -> int:
    from infaas_real.server.tasks import task_io
    from infaas_real.validate import (
        await_server,
        free_port,
        start_server,
        stop_server,
        warm_artifacts,
    )

    composed = compose("validate", overrides)
    cfg = composed.cfg
    run_dir = (composed.run_dir or default_run_dir("calibrate-frontend")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    c = section(cfg, "calibrate_frontend")
    v_cfg = section(cfg, "validate")
    catalog, apps = build_catalog(cfg), build_apps(cfg)
    items = int(c["batch_items"])
    if items < 2:
        raise ConfigError("calibrate_frontend.batch_items", f"must be >= 2 (two sizes fit a line), got {items}")
    variant = calibration_variant(cfg, catalog, apps, items)
    pre = section(v_cfg, "preconditions")
    if pre["warm_artifacts"]:
        warm_artifacts(str(catalog.source_path), float(pre["artifact_timeout_s"]))
    groups = dict(v_cfg.get("groups") or {})
    user = [o for o in overrides if not o.startswith(("hydra.", "validate.", "calibrate_frontend."))]
    keep = [o for o in user if o.split("=", 1)[0].lstrip("+~").split(".")[0] in ("catalog", "cluster", "apps")]
    chosen = {o.split("=", 1)[0] for o in keep}
    scen = [*(f"{g}={groups[g]}" for g in ("catalog", "cluster", "apps") if groups.get(g) and g not in chosen), *keep]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server([*scen, "policy=infaas", *v_cfg.get("server_overrides", [])], port, run_dir / "server.log")
    shape = task_io(variant.task).input_shape
    # requests go to the variant by name with a loose SLO: the first one waits for the load
    apps = tuple(App(a.name, Requirements(variant=variant.name, latency_slo_ms=float(c["slo_ms"])), a.share) for a in apps)
    targets = [variant.name] * len(apps)
    rate, duration = float(c["rate_qps"]), float(c["duration_s"])
    dtype = str(v_cfg["input_datatype"])  # the same requests as the validation run's
    seed = int(cfg.get("seed", 0))
    load_avg = os.getloadavg()
    try:
        await_server(server, url, run_dir / "server.log", float(v_cfg["ready_timeout_s"]))
        slots = slot_variants(catalog, variant, int(c["concurrent_slots"]))

        async def first_requests() -> list[Answers]:
            return list(await asyncio.gather(*(
                open_loop(url, np.zeros(1), (App(x.name, Requirements(variant=x.name, latency_slo_ms=float(c["slo_ms"])), 1.0),),
                          seed, input_shape=shape, timeout_s=float(v_cfg["request_timeout_s"]), datatype=dtype) for x in slots)))

        firsts = asyncio.run(first_requests())
        for x, f in zip(slots, firsts):
            if not f.served.all():
                raise BackendError(f"the first request to {x.name} was not served: {f.errors or f.http}")
        runs: dict[int, Answers] = {}
        for k, n_items in enumerate((1, items)):
            arrivals = generate("poisson", rate_qps=rate, duration_s=duration, seed=seed + 1 + k).arrivals_s
            runs[n_items] = asyncio.run(open_loop(url, arrivals, apps, seed + 1 + k, input_shape=shape, items=n_items,
                                                  targets=targets, timeout_s=float(v_cfg["request_timeout_s"]), datatype=dtype))
    finally:
        stop_server(server)
    one, many = _front_end_ms(runs[1], "1 item"), _front_end_ms(runs[items], f"{items} items")
    m1, mk = float(np.median(one)), float(np.median(many))
    slope = (mk - m1) / (items - 1)
    # the 1-item time stays exact (a simulated query is one item): a slope above it (the
    # k-item requests cost more than k times one) is cut to it, a negative one to 0
    per_item = min(max(slope, 0.0), m1)
    per_query = m1 - per_item
    steady_infer = float(np.nanmedian(runs[1].infer_ms))
    waits = [float(f.latency_ms[0]) - m1 - float(f.infer_ms[0]) for f in firsts]
    waited = float(np.mean(waits))
    slot_start = max(float(np.mean([w - x.load_latency_ms for w, x in zip(waits, slots)])), 0.0)
    cat_path = Path(catalog.source_path)
    out = Path(str(c["out"])) if c.get("out") else cat_path.with_name(cat_path.name.removesuffix(".csv") + ".frontend.yaml")
    record = {
        "cores": int(c["cores"]),
        "per_query_ms": round(per_query, 4),
        "per_item_ms": round(per_item, 4),
        "slot_start_ms": round(slot_start, 1),
        "infer_scale": round(steady_infer / variant.batch1_latency_ms, 3),
        "infer_extra_ms": round(max(steady_infer - variant.batch1_latency_ms, 0.0), 4),
        "machine_cores": os.cpu_count() or 1,
        "measured": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%MZ"),
            "by": "infaas-real calibrate-frontend",
            "commit": _commit(),
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_avg],
            "catalog": str(cat_path.name),
            "variant": variant.name,
            "input_datatype": dtype,
            "rate_qps": rate,
            "duration_s_per_size": duration,
            "front_end_ms_1_item": {"p50": round(m1, 4), "p99": round(float(np.quantile(one, 0.99)), 4),
                                    "answers": int(one.size)},
            f"front_end_ms_{items}_items": {"p50": round(mk, 4), "p99": round(float(np.quantile(many, 0.99)), 4),
                                            "answers": int(many.size)},
            "slope_ms_per_item": round(slope, 4),
            "first_request_wait_ms": round(waited, 1),
            "slot_start_variants": [x.name for x in slots],
            "profiled_load_latency_ms": [x.load_latency_ms for x in slots],
            "steady_infer_ms_1_item": round(steady_infer, 4),
            "profiled_batch1_ms": variant.batch1_latency_ms,
        },
    }  # fmt: skip
    import yaml

    head = (f"# Front-end calibration of {cat_path.name} (infaas-real calibrate-frontend; infaas_real/calibrate_frontend.py).\n"
            "# cores / per_query_ms / per_item_ms: the simulator's front-end queue (sim.frontend.path);\n"
            "# slot_start_ms: added to every variant's load latency by infaas-real validate;\n"
            "# infer_scale: in-server / profiled batch-1 inference time (validate.service_scale: calibrated);\n"
            "# infer_extra_ms: in-server - profiled batch-1 inference time (validate.service_extra_ms: calibrated);\n"
            "# machine_cores: the cores the front end, the load generator and the replicas share here (shared cores).\n")  # fmt: skip
    out.write_text(head + yaml.safe_dump(record, sort_keys=False))
    (run_dir / out.name).write_text(out.read_text())
    print(out.read_text())
    print(f"calibrate-frontend: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
