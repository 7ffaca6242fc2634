"""``infaas-real validate policy=<name>``: one scenario through the real server and through the
simulator, compared query by query and action by action (issue 12).

The scenario (``configs/validate.yaml``): a small ImageNet CPU catalog measured on this machine
(``catalog=imagenet_cpu_small``), the ``local`` one-worker cluster, two applications
(``apps=validate_imagenet``), a policy (``infaas`` by default; ``clipper_plus``,
``sagemaker_plus``, ``static``) and a bursty trace (a base rate with a spike, so the model-level
autoscaler acts: INFaaS loads on demand, swaps variants and unloads idle ones). Steps:

1. preconditions, each a one-line reason and exit status 3 when it cannot hold: the machine's
   cores, a front-end calibration of this catalog (``catalogs/<catalog>.frontend.yaml``, from
   ``infaas-real calibrate-frontend``), the offered CPU at the trace's peak (front end +
   the fastest feasible variant per query) within ``max_cpu_demand`` of the cores, every
   variant's artifact built (so no export runs on the request path), and — once the server is
   up — a probe: the generator keeps the peak rate against the server's liveness endpoint with
   its lateness p99 under ``max_lateness_p99_ms`` (and the validation run itself too);
2. start ``infaas-real serve`` (a subprocess) with the scenario, wait until ready, probe, then
   replay the trace open-loop with synthetic images (:mod:`infaas_real.calibrate_load`); read
   the server's decision trace (``GET /v2/infaas/actions``); stop the server;
3. run the simulator (a subprocess) on the same catalog — its load latencies plus the
   calibrated worker-slot start — cluster, apps, policy and the same arrivals on the server's
   clock (the trace starts where it started on the server), with the front-end stage on
   (``sim.frontend``: the calibrated per-query cost on its cores, a FCFS queue before the
   policy), so every simulated latency is the simulator's prediction: nothing is added
   afterwards;
4. compare: p50, p99, violation rate (with tolerances; queries arriving ``warmup_s`` or more
   into the trace), per-application latency and variant
   shares, and the decision traces (same kinds on the same variants in the same order, each
   time within ``action_time_periods`` monitor periods; with autoscaling actions after the
   trace starts for the policies in ``require_autoscaling``); write ``comparison.{json,csv,md}``
   and ``comparison.png`` (both latency CDFs and both action timelines).

How the two cores are shared (nothing is pinned by default): the load generator (this
process, one asyncio thread), the server's front end (one asyncio thread: HTTP, policy, IPC)
and the worker slots (one process per replica, one core each for this catalog) all run on the
machine's cores under the OS scheduler; the front-end calibration measures the front end's
per-query cost under that sharing, at light load.

Dependency rule: ``infaas_real`` never imports ``infaas_sim``; the simulator runs as a
separate process and is read back through its run directory (``summary.json``,
``queries.parquet``, ``actions.csv``).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.catalog import Catalog
from infaas_core.configs import REPO_ROOT
from infaas_core.control.startup import check_run
from infaas_core.errors import BackendError, ConfigError
from infaas_core.metrics import write_results
from infaas_core.model import App
from infaas_core.workload import Trace, generate
from infaas_real.calibrate_load import open_loop, to_results
from infaas_real.server.config import (
    build_apps,
    build_catalog,
    build_cluster,
    compose,
    default_run_dir,
    section,
)
from infaas_real.validate_compare import (
    ActionRow,
    applied,
    compare,
    compare_actions,
    figure,
    frame_stats,
    load_wait_rows,
    load_waits,
    read_actions_csv,
    sim_trace,
    write_actions_csv,
    write_comparison,
)

EXIT_PRECONDITION = 3


class PreconditionFailed(Exception):
    """The run cannot measure what it is meant to on this machine (one-line reason)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(overrides: list[str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "infaas_real", "serve", *overrides, f"server.port={port}", "server.host=127.0.0.1"]
    log = log_path.open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)


def await_server(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float) -> None:
    """Wait until the server answers ready; fail at once (with its log) if it exits."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise BackendError(f"server exited with code {proc.returncode}: {' | '.join(tail)}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise BackendError(f"server at {url} not ready within {timeout_s} s (log: {log_path})")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def machine_busy_s() -> float | None:
    """CPU seconds every process on this machine has used (``/proc/stat``; ``None`` where absent)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (the server and, through it, its
    worker slots once it has exited)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


CpuMark = tuple[float | None, float, float]
"""(the machine's CPU seconds, this run's own, wall clock) at one moment: :func:`cpu_mark`."""


def cpu_mark() -> CpuMark:
    return machine_busy_s(), own_cpu_s(), time.perf_counter()


def other_cores_since(mark: CpuMark) -> float | None:
    """The cores other processes used since ``mark``: the machine's CPU time less this run's
    own (this process and its waited-for children), over the wall time (``None`` where
    ``/proc/stat`` is absent)."""
    (busy0, own0, wall0), (busy1, own1, wall1) = mark, cpu_mark()
    if busy0 is None or busy1 is None:
        return None
    return max((busy1 - busy0) - (own1 - own0), 0.0) / max(wall1 - wall0, 1e-9)


def other_cores_now(probe_s: float) -> float | None:
    """The cores other processes use now: over ``probe_s`` while this process sleeps."""
    mark = cpu_mark()
    time.sleep(probe_s)
    return other_cores_since(mark)


def background_cores(v: dict[str, Any], measured: float | None) -> float:
    """``validate.background_cores``: ``measured`` = the cores other processes used during the
    real run (the machine's CPU time less this run's own, over its wall time), or a number."""
    x = v["background_cores"]
    if x == "measured":
        return 0.0 if measured is None else measured
    if isinstance(x, bool) or not isinstance(x, int | float) or not x >= 0:
        raise ConfigError("validate.background_cores", f"'measured' or a number >= 0, got {x!r}")
    return float(x)


def get_json(url: str, path: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(f"{url}{path}", timeout=10) as r:
        return json.loads(r.read())


def server_t0_perf_s(url: str) -> float:
    """The server clock's origin as this process's ``time.perf_counter()`` (CLOCK_MONOTONIC is
    one clock for every process): the client's time at the middle of a state request minus
    the server's ``now_s`` in its answer (error: half the request's round trip)."""
    t0 = time.perf_counter()
    now_s = float(get_json(url, "/v2/infaas/state")["now_s"])
    t1 = time.perf_counter()
    return (t0 + t1) / 2 - now_s


def server_actions(url: str) -> list[ActionRow]:
    body = get_json(url, "/v2/infaas/actions")
    return [(float(t), str(k), str(v), int(w), int(n), str(why or "")) for t, k, v, w, n, why in body["actions"]]


def run_simulator(overrides: list[str], run_dir: Path, timeout_s: float) -> None:
    cmd = [sys.executable, "-m", "infaas_sim", *overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BackendError(f"simulator failed (exit {proc.returncode}): {' | '.join(tail)}")


def frontend_file(cfg: dict[str, Any], v: dict[str, Any]) -> Path:
    """``validate.frontend_file``, else the catalog's: ``<catalog csv without .csv>.frontend.yaml``."""
    from infaas_core.configs import resolve_path

    if v.get("frontend_file"):
        return Path(resolve_path(str(v["frontend_file"]), key="validate.frontend_file"))
    cat = Path(resolve_path(str(section(cfg, "catalog")["path"]), key="catalog.path"))
    return cat.with_name(cat.name.removesuffix(".csv") + ".frontend.yaml")


def read_frontend(path: Path, catalog_name: str) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise PreconditionFailed(f"no front-end calibration for this catalog ({path}): run "
                                 f"`infaas-real calibrate-frontend catalog={catalog_name}` on this machine first")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not {"cores", "per_query_ms", "per_item_ms", "slot_start_ms"} <= set(data):
        raise ConfigError("validate.frontend_file", f"{path}: needs cores, per_query_ms, per_item_ms, slot_start_ms")
    return data


def build_trace(v: dict[str, Any], seed: int) -> tuple[Trace, float]:
    """The validation trace (``validate.trace``) and its peak rate (qps)."""
    t = dict(v["trace"])
    kind = str(t.pop("kind"))
    rate, duration = float(t.pop("rate_qps")), float(t.pop("duration_s"))
    trace = generate(kind, rate_qps=rate, duration_s=duration, seed=seed, **t)
    peak = rate * float(t.get("spike_factor", 1.0))
    return trace, peak


def check_demand(catalog: Catalog, apps: Sequence[App], fe: dict[str, Any], peak_qps: float, cores: int,
                 limit: float) -> str:
    """CPU the peak rate asks for: front end per query plus, per application, the fastest
    variant meeting its requirements at batch 1. Raises when above ``limit`` of ``cores``."""
    fe_ms = float(fe["per_query_ms"]) + float(fe["per_item_ms"])
    shares = np.array([a.share for a in apps], dtype=np.float64)
    shares = shares / shares.sum()
    infer_ms = 0.0
    for a, share in zip(apps, shares):
        req = a.requirements
        cands = [x for x in catalog if x.is_cpu and x.accuracy >= req.min_accuracy and x.task == req.task
                 and x.batch1_latency_ms <= req.latency_slo_ms]  # fmt: skip
        if not cands:
            raise PreconditionFailed(f"no CPU variant of the catalog meets application {a.name}")
        best = min(cands, key=lambda x: x.batch1_latency_ms * x.cores)
        infer_ms += share * best.batch1_latency_ms * best.cores
    demand = peak_qps * (fe_ms + infer_ms) / 1000.0
    if demand > limit * cores:
        raise PreconditionFailed(f"the trace's peak {peak_qps:.0f} qps needs {demand:.2f} cores (front end "
                                 f"{fe_ms:.2f} ms + inference {infer_ms:.2f} ms per query), above "
                                 f"{limit:.0%} of this machine's {cores}")
    return f"{demand:.2f} of {cores} cores at the peak {peak_qps:.0f} qps (front end {fe_ms:.2f} ms + inference {infer_ms:.2f} ms per query)"


def warm_artifacts(catalog_path: str, timeout_s: float) -> None:
    """Build (or find in the cache) every variant's artifact in a child process, so no export
    or quantisation runs on the request path of the measured run."""
    code = ("import sys\nfrom infaas_core.catalog import load_catalog\nfrom infaas_real.runtime import load_runner\n"
            "seen = set()\nfor v in load_catalog(sys.argv[1]):\n"
            "    if (v.model, v.framework, v.hardware) not in seen:  # one artifact per model and framework\n"
            "        seen.add((v.model, v.framework, v.hardware))\n        load_runner(v)\n")  # fmt: skip
    try:
        proc = subprocess.run([sys.executable, "-c", code, catalog_path], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise PreconditionFailed(f"building the catalog's artifacts took over {timeout_s:g} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        raise PreconditionFailed(f"a catalog variant's artifact does not build here: {' | '.join(tail)}")


async def probe_liveness(url: str, rate_qps: float, duration_s: float) -> tuple[float, int, int]:
    """Open-loop GETs of the liveness endpoint at ``rate_qps``: (lateness p99 ms, sent, answered)."""
    from infaas_real.server.client import V2Client

    client = V2Client(url, 64, 10.0)
    n = max(int(rate_qps * duration_s), 1)
    late = np.zeros(n)
    ok = [0]
    perf = time.perf_counter

    async def one() -> None:
        status, _ = await client.get_json("/v2/health/live")
        ok[0] += status == 200

    tasks = []
    start = perf() + 0.1
    for i in range(n):
        t = start + i / rate_qps
        if (d := t - perf()) > 0:
            await asyncio.sleep(d)
        late[i] = (perf() - t) * 1000.0
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    return float(np.quantile(late, 0.99)), n, ok[0]


def scenario_overrides(cfg: dict[str, Any], user: Sequence[str]) -> list[str]:
    """Group choices (``validate.groups``) and the user's overrides both backends understand."""
    v = section(cfg, "validate")
    choices = v.get("groups") or {}
    keep = [o for o in user if o.split("=", 1)[0].lstrip("+~").split(".")[0] in ("catalog", "cluster", "apps", "policy")]
    chosen = {o.split("=", 1)[0] for o in keep}  # a group the user chose is not chosen twice
    out = [f"{g}={choices[g]}" for g in ("catalog", "cluster", "apps", "policy") if choices.get(g) and g not in chosen]
    # the scenario's settings of the chosen policy (validate.policy_overrides), before the user's
    name = str(section(cfg, "policy").get("name", ""))
    tuned = [str(o) for o in (v.get("policy_overrides") or {}).get(name, [])]
    return [*out, *tuned, *keep, f"seed={int(cfg.get('seed', 0))}"]


def service_scale(v: dict[str, Any], fe: dict[str, Any]) -> float:
    """``validate.service_scale``: a number, or ``calibrated`` = the front-end file's
    ``infer_scale`` (the calibration variant's inference time in its worker slot over its
    profiled batch-1 time, measured at light load just as the front end was)."""
    x = v["service_scale"]
    if x == "calibrated":
        if "infer_scale" not in fe:
            raise ConfigError("validate.service_scale", "the front-end file has no infer_scale; calibrate again or give a number")
        return float(fe["infer_scale"])
    if isinstance(x, bool) or not isinstance(x, int | float) or not x > 0:
        raise ConfigError("validate.service_scale", f"'calibrated' or a number > 0, got {x!r}")
    return float(x)


def service_extra_ms(v: dict[str, Any], fe: dict[str, Any]) -> float:
    """``validate.service_extra_ms``: a number, or ``calibrated`` = the front-end file's
    ``infer_extra_ms`` (the calibration variant's inference time in its worker slot less its
    profiled batch-1 time: the slot's fixed cost per call, measured at light load)."""
    x = v["service_extra_ms"]
    if x == "calibrated":
        if "infer_extra_ms" not in fe:
            raise ConfigError("validate.service_extra_ms",
                              "the front-end file has no infer_extra_ms; calibrate again or give a number")
        return float(fe["infer_extra_ms"])
    if isinstance(x, bool) or not isinstance(x, int | float) or not x >= 0:
        raise ConfigError("validate.service_extra_ms", f"'calibrated' or a number >= 0, got {x!r}")
    return float(x)


def service_profile(v: dict[str, Any], fe: dict[str, Any], fe_path: Path) -> Path | None:
    """``validate.service_profile``: ``calibrated`` = the front-end file's ``service_profile``
    (beside it: each feasible variant's in-slot batch times on the machine calibrated), or
    null = none (the catalog's times x the service scale + the per-call cost)."""
    x = v["service_profile"]
    if x is None:
        return None
    if x != "calibrated":
        raise ConfigError("validate.service_profile", f"'calibrated' or null, got {x!r}")
    name = fe.get("service_profile")
    if not name:
        raise ConfigError("validate.service_profile", f"{fe_path.name} names no service profile; calibrate again "
                                                      "(infaas-real calibrate-frontend) or set it to null")  # fmt: skip
    path = fe_path.parent / str(name)
    if not path.is_file():
        raise ConfigError("validate.service_profile", f"{path} (named by {fe_path.name}) does not exist")
    return path


def admission_overrides(server_overrides: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """``sim.admission`` as the server about to run applies it: its composed ``configs/serve.yaml``
    with the same overrides gives the per-instance queue cap and the executor's deadline
    shedding (and the two quantities the shedding's estimate uses), so the simulator applies
    the same caps (:mod:`infaas_sim.admission`)."""
    from infaas_edge import compose as edge_compose

    srv = edge_compose("serve", list(server_overrides))
    server, ex = section(srv, "server"), section(srv, "executor")
    adm = {"max_queue": int(server["max_queue_per_instance"]), "shed_by_deadline": bool(ex["shed_by_deadline"]),
           "service_estimate_answers": int(ex["service_estimate_answers"]),
           "max_rows_in_flight": int(ex["max_rows_in_flight"])}  # fmt: skip
    over = [f"sim.admission.{k}={str(x).lower() if isinstance(x, bool) else x}" for k, x in adm.items()]
    return over, adm


def shed_rows(sim_summary: dict[str, Any], real_summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Reported rows (no tolerance), over the whole trace: queries refused at once (the
    server's 429: queue full or deadline admission) and failed waiting (503: expired)."""
    shed = sim_summary.get("shed") or {}
    http = real_summary.get("http_status") or {}
    pairs = (("refused at once, 429 (queue full + deadline admission)",
              shed.get("queue_full", 0) + shed.get("deadline_admission", 0), http.get("429", 0)),
             ("failed waiting, 503 (deadline expired in the queue)", shed.get("deadline_queue", 0), http.get("503", 0)))
    return [{"metric": m, "sim": float(a), "real": float(b), "difference": float(abs(b - a)), "kind": "abs",
             "tolerance": None, "ok": None} for m, a, b in pairs]  # fmt: skip


def monitor_period_s(policy: dict[str, Any]) -> float:
    for k in ("monitor_period_s", "model_autoscale_period_s"):
        if policy.get(k):
            return float(policy[k])
    return 1.0


def main(overrides: Sequence[str]) -> int:
    try:
        return _main(overrides)
    except PreconditionFailed as exc:
        print(f"infaas-real validate: precondition failed: {exc}", file=sys.stderr)
        return EXIT_PRECONDITION


def _main(overrides: Sequence[str]) -> int:
    composed = compose("validate", overrides)
    cfg = composed.cfg
    run_dir = (composed.run_dir or default_run_dir("validate")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    v = section(cfg, "validate")
    pre = dict(v["preconditions"])
    seed = int(cfg.get("seed", 0))
    catalog, apps, cluster = build_catalog(cfg), build_apps(cfg), build_cluster(cfg)
    policy = section(cfg, "policy")
    check_run(catalog, cluster, apps, policy)  # every application placeable, before anything starts
    cores = os.cpu_count() or 1
    if cores < int(pre["min_cores"]):
        raise PreconditionFailed(f"this machine has {cores} cores; the scenario needs {pre['min_cores']}")
    if pre["warm_artifacts"]:
        warm_artifacts(str(catalog.source_path), float(pre["artifact_timeout_s"]))
    stored = bool(v.get("frontend_file") or not v["calibrate"])
    if stored:  # the named file, else the catalog's: checked before anything is measured
        fe_path = frontend_file(cfg, v)
        fe = read_frontend(fe_path, str(section(cfg, "catalog").get("name", "")))
    limit = pre.get("max_other_cores")
    if limit is not None:  # a machine busy with other work: its share would be measured, not the scenario
        other = other_cores_now(float(pre["quiet_probe_s"]))
        if other is not None and other > float(limit):
            raise PreconditionFailed(f"other processes use {other:.2f} cores of this machine (limit {float(limit):g}; "
                                     f"load average {os.getloadavg()[0]:.1f}): run on a quiet machine")  # fmt: skip
    if not stored:  # this machine as it is now, before the run (infaas_real/calibrate_frontend.py)
        from infaas_real.calibrate_frontend import calibrate

        cat_name = Path(str(catalog.source_path)).name.removesuffix(".csv")
        print(f"validate: calibrating this machine first ({run_dir / 'calibration'})", file=sys.stderr)
        fe_path = calibrate(cfg, overrides, run_dir / "calibration", run_dir / "calibration" / f"{cat_name}.frontend.yaml")
        fe = read_frontend(fe_path, str(section(cfg, "catalog").get("name", "")))
    svc_profile = service_profile(v, fe, fe_path)
    trace, peak_qps = build_trace(v, seed)
    demand = check_demand(catalog, apps, fe, peak_qps, cores, float(pre["max_cpu_demand"]))

    user = [o for o in overrides if not o.startswith(("hydra.", "validate."))]
    scen = scenario_overrides(cfg, user)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_over = [*scen, *v.get("server_overrides", [])]
    adm_over, adm = admission_overrides(server_over)  # before the server starts: a bad key fails at once
    mark = cpu_mark()
    server = start_server(server_over, port, run_dir / "server.log")
    load_avg = os.getloadavg()
    task = catalog.variants[0].task
    from infaas_real.server.tasks import task_io

    shape = task_io(task).input_shape
    try:
        await_server(server, url, run_dir / "server.log", float(v["ready_timeout_s"]))
        t0_perf = server_t0_perf_s(url)
        lateness_p99, sent, answered = asyncio.run(probe_liveness(url, peak_qps, float(pre["probe_s"])))
        if lateness_p99 > float(pre["max_lateness_p99_ms"]) or answered < sent:
            raise PreconditionFailed(f"the generator cannot keep {peak_qps:.0f} qps here: probe lateness p99 "
                                     f"{lateness_p99:.1f} ms (limit {pre['max_lateness_p99_ms']} ms), "
                                     f"{answered}/{sent} answered; load average {load_avg[0]:.1f}")
        ans = asyncio.run(open_loop(url, trace.arrivals_s, apps, seed, input_shape=shape,
                                    timeout_s=float(v["request_timeout_s"]), datatype=str(v["input_datatype"])))  # fmt: skip
        real_actions = server_actions(url)
    finally:
        stop_server(server)
    others = other_cores_since(mark)  # (the server has exited: its CPU is this run's own)
    start_s = ans.start_perf_s - t0_perf  # the trace's start on the server clock
    table, summary = to_results(ans, apps, catalog, policy=str(policy["name"]), trace=trace.name, seed=seed,
                                duration_s=trace.duration_s)  # fmt: skip
    real_dir = run_dir / "real"
    write_results(real_dir, summary, table)
    write_actions_csv(real_dir / "actions.csv", real_actions)
    run_lateness = summary["generator_lateness_ms"]["p99"]
    if run_lateness > float(pre["max_lateness_p99_ms"]):
        raise PreconditionFailed(f"the generator fell behind during the run: lateness p99 {run_lateness:.1f} ms "
                                 f"(limit {pre['max_lateness_p99_ms']} ms); load average {os.getloadavg()[0]:.1f}")

    if limit is not None and others is not None and others > float(limit):
        raise PreconditionFailed(f"other processes used {others:.2f} cores during the real run (limit {float(limit):g}): "
                                 "its latencies measure them too; run on a quiet machine")  # fmt: skip
    scale = service_scale(v, fe)
    extra_ms = service_extra_ms(v, fe)
    # shared cores: the machine's (the calibration's record of it, else this machine's)
    shared = int(fe.get("machine_cores") or cores) if v["shared_cores"] else None
    background = background_cores(v, others)
    # the policy reads the catalog as profiled in both backends; the simulator's data plane
    # runs it on this machine: inference x the service scale + the slot's fixed cost per call,
    # loads + the worker-slot start
    sim_over = [*scen, f"sim.service_scale={scale}", f"sim.service_extra_ms={extra_ms}",
                *([f"sim.service_profile={svc_profile}"] if svc_profile else []),
                f"sim.load_extra_ms={float(fe['slot_start_ms'])}",
                *sim_trace(trace.arrivals_s, start_s, run_dir / "trace_arrivals.csv"),
                "sim.frontend.enabled=true", f"sim.frontend.path={fe_path}", "sim.progress=off",
                # the server's admission (queue cap, deadline shedding) instead of dropping late queries
                "sim.drop_late=false", *adm_over,
                *([f"sim.frontend.machine_cores={shared}", f"sim.frontend.background_cores={background:.3f}",
                   f"sim.frontend.sharing={v['sharing']}",
                   *([f"sim.frontend.transfer_on_loop={str(bool(v['transfer_on_loop'])).lower()}"]
                     if v["sharing"] == "event" else [])] if shared else []),
                *v.get("sim_overrides", [])]  # fmt: skip
    sim_dir = run_dir / "sim"
    run_simulator(sim_over, sim_dir, float(v["sim_timeout_s"]))

    import pandas as pd

    names = [a.name for a in apps]
    warm_s = float(v["warmup_s"])  # latency rows measure the arrivals after it (both on their own clock)
    sim_q, real_q = pd.read_parquet(sim_dir / "queries.parquet"), table.to_dataframe()
    sim_stats = frame_stats(sim_q[sim_q["arrival_s"] >= start_s + warm_s], names)
    real_stats = frame_stats(real_q[real_q["arrival_s"] >= warm_s], names)
    tol = {k: float(x) for k, x in dict(v["tolerances"]).items()}
    kinds = list(v["action_kinds"])
    period = monitor_period_s(policy)
    end_s = start_s + float(trace.duration_s)  # compared inside the trace's window (the sim stops at its end)
    sim_actions = [a for a in read_actions_csv(sim_dir / "actions.csv") if a[0] <= end_s]
    real_actions = [a for a in real_actions if a[0] <= end_s]
    rows = compare(sim_stats, real_stats, tol)
    rows += compare_actions(sim_actions, real_actions, kinds, start_s, tol["action_time_periods"] * period,
                            str(policy["name"]) in list(v["require_autoscaling"]))
    rows += load_wait_rows(load_waits(applied(sim_actions, kinds), sim_q, 0.0),
                           load_waits(applied(real_actions, kinds), real_q, start_s))
    rows += shed_rows(json.loads((sim_dir / "summary.json").read_text()), summary)
    title = (f"{policy['name']}: {trace.name} trace, {len(trace)} queries, seed {seed} "
             f"(load average {load_avg[0]:.1f} at start)")
    figure(run_dir / "comparison.png", sim_stats, real_stats, sim_actions, real_actions, kinds, start_s, title)
    facts = {
        "policy": str(policy["name"]),
        "trace": f"{trace.name} ({', '.join(f'{k}={x}' for k, x in dict(v['trace']).items())}), {len(trace)} queries, seed {seed}",
        "trace start on the server clock": f"{start_s:.3f} s",
        "measured window": f"arrivals from {warm_s:g} s into the trace on (the first on-demand loads before it); "
                           f"{sim_stats['all']['queries']} sim / {real_stats['all']['queries']} real queries",
        "CPU demand at the peak": demand,
        "front end (simulated)": f"{fe['cores']} core(s), {fe['per_query_ms']:.3f} ms per query + "
                                 f"{fe['per_item_ms']:.3f} ms per item; worker-slot start {fe['slot_start_ms']:.0f} ms "
                                 f"({fe_path.name}, measured {fe.get('measured', {}).get('date', '?')})",
        "admission (both backends)": f"queue cap {adm['max_queue']} waiting per instance, deadline shedding "
                                     f"{'on' if adm['shed_by_deadline'] else 'off'} (estimate over "
                                     f"{adm['service_estimate_answers']} answers, {adm['max_rows_in_flight']} rows "
                                     "in flight per replica): the server's configuration, applied by the simulator",
        "shared cores (simulated)": (f"{shared} cores shared by the front end's CPU, the CPU replicas, the loading "
                                     f"ones and {background:.2f} cores of other work ("
                                     + ("each batch stretched by the demand while it runs, the front end using "
                                        f"{float(fe.get('busy_cores', 1.0)):.2f} cores while it serves"
                                        + ("; a batch starts once the front end's loop is free, later queries joining it"
                                           if v["transfer_on_loop"] else "")
                                        if v["sharing"] == "event" else "window-scale processor sharing")
                                     + ")" if shared else "off: the front end on a core of its own"),
        "other processes' CPU during the real run": ("unknown (no /proc/stat)" if others is None
                                                     else f"{others:.2f} cores (the machine's CPU time less this run's)"),
        "service times (simulated)": (f"the calibration's service profile ({svc_profile.name}: each listed variant's "
                                      "in-slot batch times on this machine, p50/p99 per batch size); other variants: "
                                      if svc_profile else "")
                                     + f"the catalog's x {scale:.3f} ({v['service_scale']}"
                                     + (": the calibration's in-server / profiled inference time" if v["service_scale"] == "calibrated" else "")
                                     + f") + {extra_ms:.3f} ms per batch ({v['service_extra_ms']}"
                                     + (": the calibration's in-server - profiled inference time" if v["service_extra_ms"] == "calibrated" else "")
                                     + ")",
        "requests": f"one {v['input_datatype']} input of shape {list(shape)} each (binary tensor extension)",
        "probe": f"liveness at {peak_qps:.0f} qps: lateness p99 {lateness_p99:.2f} ms",
        "generator lateness (real run)": f"p50 {summary['generator_lateness_ms']['p50']:.2f} ms, p99 {run_lateness:.2f} ms",
        "load average (1, 5, 15 min) at start": " ".join(f"{x:.2f}" for x in load_avg),
        "machine": f"{cores} cores; client, server front end and worker slots share them (no pinning)",
        "monitor period": f"{period:g} s (action times within {tol['action_time_periods']:g} periods)",
        "real errors": summary.get("errors") or "none",
        "simulator overrides": " ".join(sim_over),
    }
    write_comparison(run_dir, rows, facts)
    (run_dir / "comparison.json").write_text(json.dumps({"facts": facts, "rows": rows}, indent=2, default=str) + "\n")
    verdict = all(r["ok"] is not False for r in rows)
    print((run_dir / "comparison.md").read_text())
    print(f"validate: {'PASS' if verdict else 'FAIL'} — {run_dir}")
    return 0 if verdict or not v.get("strict", False) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
