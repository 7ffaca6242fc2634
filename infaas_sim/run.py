"""Programmatic entry point: :func:`simulate` runs one simulation and returns its results
in the shared results schema (:mod:`infaas_core.metrics`).

With a warm-up (``sim.warmup_s`` > 0) the summary measures the window ``[warmup_s, horizon)``:
``duration_s`` is its length, queries that arrived before it are not counted, and both
``cost_usd`` (VM-hours) and ``cost_instance_usd`` (the paper's per-instance cost, §6.2) are
what that window costs; ``warmup_s`` says where it starts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.control.startup import check_run
from infaas_core.errors import ConfigError
from infaas_core.metrics import QueryTable, summarize, write_results
from infaas_sim.admission import SHED_REASONS
from infaas_sim.config import Arrivals, SimInputs
from infaas_sim.engine import Simulation
from infaas_sim.frontend import pass_through
from infaas_sim.sharing import EventSharing


@dataclass(slots=True)
class RunResult:
    summary: dict[str, Any]
    queries: QueryTable | None  # None in streaming mode
    timeline: Any  # pandas.DataFrame
    actions: list[tuple[float, str, str, int, int, str | None]] = field(default_factory=list)
    """The control layer's decision trace (:attr:`Cluster.decision_trace`)."""

    def write(self, run_dir: str | Path) -> Path:
        """Write ``summary.json``, ``queries.parquet`` (unless streaming), ``timeline.parquet``
        and ``actions.csv`` (the decision trace: every action applied, refused ones too)."""
        out = write_results(run_dir, self.summary, self.queries, self.timeline)
        write_actions(Path(run_dir) / ACTIONS_FILE, self.actions)
        return out


ACTIONS_FILE = "actions.csv"
ACTION_COLUMNS = ("time_s", "kind", "variant", "worker", "replicas", "refused")


def write_actions(path: Path, actions: list[tuple[float, str, str, int, int, str | None]]) -> None:
    """The decision trace as CSV (``refused`` empty when the action was carried out)."""
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ACTION_COLUMNS)
        for t, kind, variant, worker, replicas, why in actions:
            w.writerow((f"{t:.6f}", kind, variant, worker, replicas, why or ""))


def simulate(inputs: SimInputs, trace_name: str | None = None) -> RunResult:
    """Run one simulation. Deterministic for ``inputs`` (``inputs.seed``), wall-clock aside.

    A run that cannot work (an unknown task, nothing placeable, a cluster that never runs a
    worker) raises ``ConfigError`` before it starts (:mod:`infaas_core.control.startup`)."""
    check_run(inputs.catalog, inputs.cluster, inputs.apps, {"name": inputs.policy, **inputs.policy_params})
    t0 = time.perf_counter()
    fe = inputs.sim.frontend
    passed = None
    if fe.enabled:  # the front-end stage: the policy sees each query when the front end is done with it
        if inputs.sim.stream:
            raise ConfigError("sim.frontend.enabled", "the front-end stage needs sim.stream=false")
        chunks = list(inputs.arrivals.chunks())
        passed = pass_through(np.concatenate(chunks) if chunks else np.zeros(0), fe)
        a = inputs.arrivals
        inputs = replace(inputs, arrivals=Arrivals.from_array(passed.policy_s, a.duration_s, a.name, inputs.sim.chunk_s))
    sim = Simulation(inputs)
    if passed is not None:
        sim.recorder.client_arrival_s = passed.client_s
        if fe.machine_cores is not None and fe.sharing == "event":  # infaas_sim/sharing.py
            sim.mechanism.event_share = EventSharing(fe.machine_cores, fe.busy_cores, fe.loading_cores,
                                                     fe.background_cores, passed.policy_s.tolist(),
                                                     fe.service_ms / 1000.0, fe.transfer_on_loop)  # fmt: skip
    warmup_s = float(inputs.sim.warmup_s)
    if warmup_s >= sim.horizon_s > 0:
        raise ConfigError("sim.warmup_s", f"{warmup_s} leaves nothing of the {sim.horizon_s} s run to measure")
    sim.recorder.warmup_s = warmup_s
    sim.cluster.instance_cost.since_s = warmup_s
    sim.run()
    wall_s = time.perf_counter() - t0
    rec = sim.recorder
    table = rec.table()
    exact = None
    counted = rec.counted()
    if table is not None and counted is not None:
        done = (table.batch_size > 0) & counted
        exact = (table.finish_s[done] - table.arrival_s[done]) * 1000.0
    per_app: dict[str, Any] = {}
    for i, name in enumerate(rec.app_names):
        acc = rec.per_app[i]
        lat = None
        if table is not None:
            m = (table.app == i) & (table.batch_size > 0) & counted
            lat = (table.finish_s[m] - table.arrival_s[m]) * 1000.0
        q = (np.quantile(lat, [0.5, 0.99]).tolist() if lat is not None and lat.size
             else [acc.sketch.quantile(0.5), acc.sketch.quantile(0.99)])  # fmt: skip
        admitted = acc.queries - acc.rejected
        per_app[name] = {
            "queries": acc.queries, "rejected": acc.rejected, "completed": acc.completed,
            "late": acc.late, "dropped": acc.dropped,
            "violation_rate": (acc.late + acc.dropped) / admitted if admitted else 0.0,
            "latency_ms": {"mean": acc.latency_sum_ms / acc.completed if acc.completed else float("nan"),
                           "p50": q[0], "p99": q[1]},
            "mean_accuracy": acc.accuracy_sum / acc.completed if acc.completed else float("nan"),
            "slo_ms": inputs.apps[i].requirements.latency_slo_ms,
        }  # fmt: skip
    st = sim.cluster
    s = inputs.sim
    extra = {
        "per_app": per_app,
        "refused_actions": dict(sorted(st.refused.items())),
        "reject_reasons": dict(sim.reject_reasons.most_common(10)),
        "peak_workers": dict(sorted(st.peak_workers.items())),
        "cluster_events": dict(sorted(st.counts.items())),
        "final_workers": _count(w.instance_type.name for w in st.workers),
        "final_replicas": _count_replicas(sim),
        "last_finish_s": rec.last_finish_s,
        "sim": {
            "latency_model": s.latency_model, "drop_late": s.drop_late,
            "batch_timeout_ms": s.batch_timeout_ms, "stream": s.stream,
            "route_period_s": s.route_period_s, "stats_period_s": sim.stats_period_s,
            "accelerator_sharing": s.accelerator_sharing, "warmup_s": s.warmup_s,
            **({"service_scale": s.service_scale, "service_extra_ms": s.service_extra_ms, "load_extra_ms": s.load_extra_ms}
               if (s.service_scale != 1.0 or s.service_extra_ms or s.load_extra_ms) else {}),
            **({"service_profile": s.service_profile} if s.service_profile is not None else {}),
            **({"frontend": {"cores": s.frontend.cores, "per_query_ms": s.frontend.per_query_ms,
                             "per_item_ms": s.frontend.per_item_ms,
                             **({"sharing": s.frontend.sharing, "busy_cores": s.frontend.busy_cores,
                                 "transfer_on_loop": s.frontend.transfer_on_loop}
                                if s.frontend.machine_cores is not None and s.frontend.sharing == "event" else {})}}
               if s.frontend.enabled else {}),
        },
        "warmup_s": warmup_s,
        "cost_instance_usd": st.cost_instance_usd(sim.horizon_s),
        "catalog": inputs.catalog.source_path,
    }  # fmt: skip
    if s.admission.enabled:  # only with sim.admission: other summaries are unchanged
        adm = s.admission
        sim_keys: dict[str, Any] = extra["sim"]  # type: ignore[assignment]
        sim_keys["admission"] = {"max_queue": adm.max_queue, "shed_by_deadline": adm.shed_by_deadline,
                                 "service_estimate_answers": adm.service_estimate_answers,
                                 "max_rows_in_flight": adm.max_rows_in_flight}  # fmt: skip
        extra["shed"] = {r: int(sim.shed[r]) for r in SHED_REASONS}
    if sim.offline is not None:  # only with sim.offline.jobs: other summaries are unchanged
        extra["offline"] = sim.offline.summary(st.cost_usd(sim.horizon_s))
    summary = summarize(
        rec.total,
        policy=inputs.policy,
        trace=trace_name or inputs.arrivals.name,
        seed=inputs.seed,
        backend="sim",
        duration_s=sim.horizon_s - warmup_s,  # the measured window: rates are per second of it
        cost_usd=st.cost_usd(sim.horizon_s) - st.cost_usd(warmup_s),  # VM-seconds inside the window
        wall_s=wall_s,
        exact_latency_ms=exact,
        extra=extra,
    )
    return RunResult(summary, table, sim.timeline.to_dataframe(), list(st.decision_trace))


def _count(names: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        out[n] = out.get(n, 0) + 1
    return dict(sorted(out.items()))


def _count_replicas(sim: Simulation) -> dict[str, int]:
    out: dict[str, int] = {}
    for inst in sim.cluster.instances.values():
        out[inst.variant.name] = out.get(inst.variant.name, 0) + inst.replicas
    return dict(sorted(out.items()))
