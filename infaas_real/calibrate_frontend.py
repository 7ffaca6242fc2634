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
- ``busy_cores``: the cores the front end uses while it serves a query — the server
  process's CPU (its own threads, less its idle rate measured for
  ``calibrate_frontend.idle_probe_s`` before) and the load generator's, per 1-item query,
  over the front end's time per query (``sim.frontend.busy_cores`` for
  ``sim.frontend.sharing: event``);
- ``machine_cores``: this machine's cores, which the front end, the load generator and the
  worker slots share (the simulator's shared-cores model, ``sim.frontend.machine_cores``:
  with ``per_query_ms + per_item_ms`` as the front end's CPU per query, it stretches the CPU
  replicas' service when the machine is oversubscribed);
- ``slot_start_ms``: what loading a variant takes here beyond its profiled load latency (a
  worker process starting, its runtime importing): the first request to a not-yet-loaded
  variant waits for it. ``concurrent_slots`` variants are asked for at once (INFaaS's first
  queries of the validation scenario start two slots together); the mean of their waits.

- a **service profile** (``<catalog>.service.csv`` beside the file, named by its
  ``service_profile`` key): for each variant a policy could pick for the scenario's
  applications (``calibrate_frontend.service_variants``), its batch inference time inside its
  worker slot at every batch size 1..``max_batch``, p50 and p99 of
  ``calibrate_frontend.service_samples`` requests sent one at a time, at most
  ``service_rate_qps`` a second so the replica idles between them as in a light load (the server's executor
  timestamps: the trip to the replica process and back included) — what ``infaas-real
  validate`` gives the simulator's data plane (``sim.service_profile``), so every variant runs
  at this machine's speed, not the profiling machine's. The first calls of each freshly
  loaded variant are recorded beside it (``measured.service.first_calls_ms``).

The file also records where and when it was measured (CPU model, cores, load average, date,
commit), so a reader can tell a calibration from another machine.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

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


def service_variants(cfg: dict[str, Any], catalog: Catalog, apps: Sequence[App]) -> list[Variant]:
    """``calibrate_frontend.service_variants``: ``feasible`` = the CPU variants on at most this
    machine's cores that serve some application (its task, model or variant, and accuracy
    floor), in catalog order; a list names them; ``[]`` none."""
    want = section(cfg, "calibrate_frontend").get("service_variants", "feasible")
    if isinstance(want, list | tuple):
        return [catalog.get(str(n)) for n in want]
    if want != "feasible":
        raise ConfigError("calibrate_frontend.service_variants", f"must be 'feasible' or a list of variants, got {want!r}")
    cores = os.cpu_count() or 1

    def serves(v: Variant, a: App) -> bool:
        r = a.requirements
        return (v.task == r.task if r.task else v.model == r.model if r.model else v.name == r.variant) \
            and v.accuracy >= r.min_accuracy

    return [v for v in catalog if v.is_cpu and v.cores <= cores and any(serves(v, a) for a in apps)]


async def _one_at_a_time(url: str, name: str, x: np.ndarray, n: int, timeout_s: float,
                         period_s: float = 0.0) -> list[tuple[float, int]]:
    """``n`` requests of ``x`` to variant ``name``, each sent when the last is answered and at
    least ``period_s`` after the last was sent: ``(infer_ms, queries in its batch)`` of each
    answer as the server reports them."""
    from infaas_real.calibrate_load import infer
    from infaas_real.server.client import V2Client

    client = V2Client(url, 1, timeout_s)
    out: list[tuple[float, int]] = []
    loop = asyncio.get_running_loop()
    try:
        for _ in range(n):
            t_next = loop.time() + period_s
            r = await infer(client, name, x, {"app": "calibration"})
            if (wait := t_next - loop.time()) > 0:
                await asyncio.sleep(wait)
            if r.status != 200:
                raise BackendError(f"service profile of {name}: HTTP {r.status} ({r.error})")
            out.append((float(r.parameters.get("infer_ms", math.nan)), int(r.parameters.get("batch", 0))))
    finally:
        await client.close()
    return out


def measure_service(url: str, v: Variant, shape: Sequence[int], dtype: str, samples: int, first_calls: int,
                    timeout_s: float, seed: int, period_s: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Variant ``v``'s in-slot batch time at every batch size (one request at a time, so no
    queue and no other work of this run overlaps it; at most one per ``period_s``, so the
    replica idles between calls as under a light load, not back to back): its CSV rows and
    what the file records."""
    from infaas_real.calibrate_load import synthetic_inputs

    xs = synthetic_inputs(shape, 2 * v.max_batch, seed, dtype)
    stamp = f"measured:in-slot:{_cpu_model().replace(',', ' ')}:{dt.datetime.now(dt.UTC):%Y-%m-%d}"
    # the first request loads the variant (its time is the load's, not a call's); the next
    # ones are its first calls as a fresh replica
    asyncio.run(_one_at_a_time(url, v.name, xs[:1], 1, timeout_s))
    first = asyncio.run(_one_at_a_time(url, v.name, xs[1:2], first_calls, timeout_s)) if first_calls else []
    rows: list[dict[str, Any]] = []
    for b in range(1, v.max_batch + 1):
        got = asyncio.run(_one_at_a_time(url, v.name, xs[b : 2 * b], samples, timeout_s, period_s))
        # (``batch`` counts the queries in the answer's batch: 1 = the request's b rows ran alone)
        t = np.array([ms for ms, nq in got if nq == 1 and math.isfinite(ms)])
        if t.size < max(samples // 2, 1):
            raise BackendError(f"service profile of {v.name}: {t.size} of {samples} requests of {b} rows ran alone")
        p50, p99 = float(np.median(t)), float(np.quantile(t, 0.99))
        rows.append({"variant": v.name, "batch": b, "latency_p50_ms": round(p50, 4),
                     "latency_p99_ms": round(max(p99, p50), 4), "samples": int(t.size), "source": stamp})
    record = {"first_calls_ms": [round(t, 3) for t, _ in first], "batch1_p50_ms": rows[0]["latency_p50_ms"],
              "profiled_batch1_ms": v.batch1_latency_ms}
    return rows, record


def _process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``'s threads so far; 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    composed = compose("validate", overrides)
    run_dir = (composed.run_dir or default_run_dir("calibrate-frontend")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    out = calibrate(composed.cfg, overrides, run_dir)
    print(out.read_text())
    print(f"calibrate-frontend: wrote {out} and {service_file(out)}")
    return 0


def service_file(frontend_yaml: Path) -> Path:
    """The service profile written beside a front-end file: ``<x>.frontend.yaml`` -> ``<x>.service.csv``."""
    return frontend_yaml.with_name(frontend_yaml.name.removesuffix(".yaml").removesuffix(".frontend") + ".service.csv")


def calibrate(cfg: dict[str, Any], overrides: Sequence[str], run_dir: Path, out: Path | None = None) -> Path:
    """Measure this machine (a server of its own, stopped before it returns); write the
    front-end file (``out``, else ``calibrate_frontend.out``, else beside the catalog) and its
    service profile beside it, with copies in ``run_dir``; the front-end file's path."""
    from infaas_real.server.tasks import task_io
    from infaas_real.validate import (
        await_server,
        free_port,
        start_server,
        stop_server,
        warm_artifacts,
    )

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
    server_args = [*scen, "policy=infaas", *v_cfg.get("server_overrides", [])]
    server = start_server(server_args, port, run_dir / "server.log")
    shape = task_io(variant.task).input_shape
    scenario_apps = apps
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
        # the front end's CPU while it serves (sim.frontend.busy_cores): the server process's
        # CPU (its threads, not its worker processes) less its idle rate, and this process's
        # (the load generator's), per 1-item query
        idle_s = float(c["idle_probe_s"])
        cpu0, w0 = _process_cpu_s(server.pid), time.perf_counter()
        time.sleep(idle_s)
        idle_cores = (_process_cpu_s(server.pid) - cpu0) / max(time.perf_counter() - w0, 1e-9)
        for k, n_items in enumerate((1, items)):
            arrivals = generate("poisson", rate_qps=rate, duration_s=duration, seed=seed + 1 + k).arrivals_s
            cpu0, own0, w0 = _process_cpu_s(server.pid), time.process_time(), time.perf_counter()
            runs[n_items] = asyncio.run(open_loop(url, arrivals, apps, seed + 1 + k, input_shape=shape, items=n_items,
                                                  targets=targets, timeout_s=float(v_cfg["request_timeout_s"]), datatype=dtype))
            if n_items == 1:
                wall = time.perf_counter() - w0
                fe_cpu_s = (_process_cpu_s(server.pid) - cpu0 - idle_cores * wall) + (time.process_time() - own0)
                fe_cpu_n = int(runs[1].served.sum())
    finally:
        stop_server(server)
    # the service profile: a fresh server per variant, so each runs as the only one loaded
    svc_rows: list[dict[str, Any]] = []
    svc_record: dict[str, Any] = {}
    svc_vars = service_variants(cfg, catalog, scenario_apps)
    for i, sv in enumerate(tqdm(svc_vars, desc="service profile", unit="variant", disable=not sys.stderr.isatty())):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(server_args, port, run_dir / f"server-service-{i}.log")
        try:
            await_server(server, url, run_dir / f"server-service-{i}.log", float(v_cfg["ready_timeout_s"]))
            rows, rec = measure_service(url, sv, shape, dtype, int(c["service_samples"]), int(c["first_calls"]),
                                        float(v_cfg["request_timeout_s"]), seed, 1.0 / float(c["service_rate_qps"]))  # fmt: skip
        finally:
            stop_server(server)
        svc_rows += rows
        svc_record[sv.name] = rec
    one, many = _front_end_ms(runs[1], "1 item"), _front_end_ms(runs[items], f"{items} items")
    m1, mk = float(np.median(one)), float(np.median(many))
    slope = (mk - m1) / (items - 1)
    # the 1-item time stays exact (a simulated query is one item): a slope above it (the
    # k-item requests cost more than k times one) is cut to it, a negative one to 0
    per_item = min(max(slope, 0.0), m1)
    per_query = m1 - per_item
    steady_infer = float(np.nanmedian(runs[1].infer_ms))
    cpu_per_query_ms = max(fe_cpu_s, 0.0) / max(fe_cpu_n, 1) * 1000.0
    busy_cores = cpu_per_query_ms / m1 if m1 > 0 else 1.0
    waits = [float(f.latency_ms[0]) - m1 - float(f.infer_ms[0]) for f in firsts]
    waited = float(np.mean(waits))
    slot_start = max(float(np.mean([w - x.load_latency_ms for w, x in zip(waits, slots)])), 0.0)
    cat_path = Path(catalog.source_path)
    if out is None:
        out = Path(str(c["out"])) if c.get("out") else cat_path.with_name(cat_path.name.removesuffix(".csv") + ".frontend.yaml")
    svc_path = service_file(out)
    record = {
        "cores": int(c["cores"]),
        "per_query_ms": round(per_query, 4),
        "per_item_ms": round(per_item, 4),
        "slot_start_ms": round(slot_start, 1),
        "infer_scale": round(steady_infer / variant.batch1_latency_ms, 3),
        "infer_extra_ms": round(max(steady_infer - variant.batch1_latency_ms, 0.0), 4),
        "machine_cores": os.cpu_count() or 1,
        "busy_cores": round(busy_cores, 3),
        "service_profile": svc_path.name if svc_rows else None,
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
            "front_end_cpu_ms_per_query": round(cpu_per_query_ms, 4),
            "server_idle_cores": round(idle_cores, 4),
            "profiled_batch1_ms": variant.batch1_latency_ms,
            "service_samples_per_batch": int(c["service_samples"]),
            "service": svc_record,
        },
    }  # fmt: skip
    import yaml

    head = (f"# Front-end calibration of {cat_path.name} (infaas-real calibrate-frontend; infaas_real/calibrate_frontend.py).\n"
            "# cores / per_query_ms / per_item_ms: the simulator's front-end queue (sim.frontend.path);\n"
            "# slot_start_ms: added to every variant's load latency by infaas-real validate;\n"
            "# infer_scale: in-server / profiled batch-1 inference time (validate.service_scale: calibrated);\n"
            "# infer_extra_ms: in-server - profiled batch-1 inference time (validate.service_extra_ms: calibrated);\n"
            "# machine_cores: the cores the front end, the load generator and the replicas share here (shared cores);\n"
            "# busy_cores: the server's and the load generator's CPU per 1-item query over its front-end time (sim.frontend.busy_cores);\n"
            "# service_profile: each feasible variant's in-slot batch time here, per batch size (sim.service_profile).\n")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    if svc_rows:
        with svc_path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(svc_rows[0]))
            w.writeheader()
            w.writerows(svc_rows)
    out.write_text(head + yaml.safe_dump(record, sort_keys=False))
    if run_dir.resolve() != out.parent.resolve():
        (run_dir / out.name).write_text(out.read_text())
        if svc_rows:
            (run_dir / svc_path.name).write_text(svc_path.read_text())
    return out


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
