"""``infaas-real validate`` on a short bursty trace: the real server and the simulator (with its
front-end stage) run the same scenario, the decision traces of both are compared, the
comparison and the figure are written; a precondition that cannot hold exits 3 with its
reason. The measured runs (catalog imagenet_cpu_small, minutes each) are in
docs/real-backend.md; CI runs the pipeline on the digits catalog with a few seconds of
trace and asserts behaviour, not tolerances (a shared 2-core CI machine is too noisy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from infaas_core.metrics import SUMMARY_KEYS
from infaas_real.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
FRONTEND = ("cores: 1\nper_query_ms: 1.0\nper_item_ms: 0.05\nslot_start_ms: 500\ninfer_scale: 1.5\ninfer_extra_ms: 0.7\n"
            "busy_cores: 1.25\nservice_profile: digits.service.csv\nmeasured: {date: test}\n")
SERVICE = "variant,batch,latency_p50_ms,latency_p99_ms\n" + "".join(
    f"linear_pool4-torch-fp32-cpu1-b4,{b},{0.2 * b:.1f},{0.3 * b:.1f}\n" for b in range(1, 5))


def _digits(tmp_path: Path, *extra: str) -> list[str]:
    fe = tmp_path / "digits.frontend.yaml"
    fe.write_text(FRONTEND)
    (tmp_path / "digits.service.csv").write_text(SERVICE)
    return ["validate", "catalog=digits", "apps=digits", f"validate.frontend_file={fe}",
            "validate.trace.rate_qps=6", "validate.trace.duration_s=5", "validate.trace.first_spike_s=2",
            "validate.trace.spike_len_s=1.5", "validate.trace.spike_factor=3", "validate.preconditions.probe_s=0.5",
            "validate.preconditions.max_lateness_p99_ms=1000", "validate.warmup_s=1",
            "validate.preconditions.warm_artifacts=false",  # the server builds the few it loads
            "validate.preconditions.max_other_cores=null",  # CI machines are shared: behaviour, not tolerances
            *extra]  # fmt: skip


@pytest.mark.slow
def test_validate_runs_both_backends_and_compares_queries_and_actions(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli_main([*_digits(tmp_path), "policy=infaas", f"hydra.run.dir={out}"]) == 0
    real = json.loads((out / "real" / "summary.json").read_text())
    sim = json.loads((out / "sim" / "summary.json").read_text())
    assert real["backend"] == "real" and sim["backend"] == "sim"
    assert set(SUMMARY_KEYS) <= set(real) and set(SUMMARY_KEYS) <= set(sim)
    assert real["queries"] == sim["queries"]  # the simulator replayed the real run's arrivals
    assert {k: sim["sim"]["frontend"][k] for k in ("cores", "per_query_ms", "per_item_ms")} == {
        "cores": 1, "per_query_ms": 1.0, "per_item_ms": 0.05}
    # the server's admission, applied by the simulator as the server's config says
    assert sim["sim"]["admission"]["max_queue"] >= 1 and set(sim["shed"]) == {"queue_full", "deadline_admission",
                                                                              "deadline_queue"}
    # the simulator's data plane on this machine: loads + the slot start, inference + the slot's
    # fixed cost per call (infer_extra_ms; its policy reads the catalog as profiled, as the server's does)
    assert (sim["sim"]["load_extra_ms"], sim["sim"]["service_scale"], sim["sim"]["service_extra_ms"]) == (500.0, 1.0, 0.7)
    # ... and the calibration's service profile for the variants it measured, the front end's
    # busy periods in the CPU sharing (its busy_cores from the file)
    assert Path(sim["sim"]["service_profile"]) == tmp_path / "digits.service.csv"
    assert (sim["sim"]["frontend"]["sharing"], sim["sim"]["frontend"]["busy_cores"]) == ("event", 1.25)
    assert Path(sim["catalog"]).name == "digits.csv"
    # both decision traces: INFaaS loads its first variant on the first query in each backend
    for d in ("real", "sim"):
        acts = pd.read_csv(out / d / "actions.csv")
        assert list(acts.columns) == ["time_s", "kind", "variant", "worker", "replicas", "refused"]
        assert (acts["kind"] == "load_and_route").any(), d
    doc = json.loads((out / "comparison.json").read_text())
    metrics = [r["metric"] for r in doc["rows"]]
    assert {"latency p50 (ms)", "latency p99 (ms)", "violation rate"} <= set(metrics)
    action_rows = [r for r in doc["rows"] if "action" in r["metric"]]
    assert {"actions: count", "actions: positions whose (kind, variant) differ"} <= {r["metric"] for r in action_rows}
    assert all(set(r) >= {"metric", "sim", "real", "ok"} for r in doc["rows"])
    assert any(m.startswith("share ") for m in metrics)  # per-application variant shares
    assert (out / "comparison.png").stat().st_size > 10_000
    assert "| actions: count |" in (out / "comparison.md").read_text()
    assert any(m.startswith("refused at once, 429") for m in metrics)


def test_the_simulators_admission_is_the_servers_config() -> None:
    from infaas_real.validate import admission_overrides

    over, adm = admission_overrides(["server.max_queue_per_instance=7", "executor.shed_by_deadline=false",
                                     "executor.max_rows_in_flight=32"])  # fmt: skip
    assert adm == {"max_queue": 7, "shed_by_deadline": False, "service_estimate_answers": adm["service_estimate_answers"],
                   "max_rows_in_flight": 32}  # fmt: skip
    assert {"sim.admission.max_queue=7", "sim.admission.shed_by_deadline=false",
            "sim.admission.max_rows_in_flight=32"} <= set(over)
    from infaas_sim.admission import AdmissionSettings

    parsed = AdmissionSettings.from_mapping(adm)
    assert parsed.max_queue == 7 and not parsed.shed_by_deadline


def test_a_precondition_that_cannot_hold_exits_3_with_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main([*_digits(tmp_path), "validate.preconditions.min_cores=4096", f"hydra.run.dir={tmp_path / 'a'}"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "precondition failed" in err[0] and "cores" in err[0]
    # the trace's peak asks for more CPU than the machine has
    args = [*_digits(tmp_path), "validate.trace.rate_qps=100000", f"hydra.run.dir={tmp_path / 'b'}"]
    assert cli_main(args) == 3
    assert "needs" in capsys.readouterr().err
    # no calibration of the front end beside the digits catalog (catalogs/digits.frontend.yaml)
    assert cli_main(["validate", "catalog=digits", "apps=digits", "validate.calibrate=false",
                     f"hydra.run.dir={tmp_path / 'c'}"]) == 3  # fmt: skip
    assert "calibrate-frontend catalog=digits" in capsys.readouterr().err
    # a machine busy with other work (a limit no machine meets)
    args = [*_digits(tmp_path), "validate.preconditions.max_other_cores=-1", f"hydra.run.dir={tmp_path / 'e'}"]
    assert cli_main(args) == 3
    assert "other processes use" in capsys.readouterr().err
    # a calibration file named but absent is bad input
    args = ["validate", "catalog=digits", "apps=digits", f"validate.frontend_file={tmp_path / 'none.yaml'}",
            f"hydra.run.dir={tmp_path / 'd'}"]  # fmt: skip
    assert cli_main(args) == 2


def test_a_calibration_without_a_service_profile_is_refused_in_one_line(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    args = _digits(tmp_path, f"hydra.run.dir={tmp_path / 'a'}")
    (tmp_path / "digits.frontend.yaml").write_text(FRONTEND.replace("service_profile: digits.service.csv\n", ""))
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "validate.service_profile" in err[0] and "names no service profile" in err[0]


@pytest.mark.slow
def test_validate_calibrates_this_machine_first_by_default(tmp_path: Path) -> None:
    # no frontend_file: the run measures the machine (front end, slot start, service profile)
    # into <run dir>/calibration/ and the simulator uses what it measured
    out = tmp_path / "run"
    args = [a for a in _digits(tmp_path) if not a.startswith("validate.frontend_file=")]
    one = "linear_pool4-torch-fp32-cpu1-b4"
    assert cli_main([*args, "policy=clipper_plus", "calibrate_frontend.rate_qps=10", "calibrate_frontend.duration_s=1.5",
                     f"calibrate_frontend.service_variants=[{one}]", "calibrate_frontend.service_samples=6",
                     "calibrate_frontend.service_rate_qps=100", "calibrate_frontend.idle_probe_s=0.5",
                     f"hydra.run.dir={out}"]) == 0  # fmt: skip
    cal = out / "calibration"
    rec = yaml.safe_load((cal / "digits.frontend.yaml").read_text())
    sim = json.loads((out / "sim" / "summary.json").read_text())
    assert sim["sim"]["frontend"]["per_query_ms"] == rec["per_query_ms"]
    assert sim["sim"]["frontend"]["busy_cores"] == rec["busy_cores"]
    assert Path(sim["sim"]["service_profile"]) == cal / "digits.service.csv"
    assert not (REPO / "catalogs" / "digits.frontend.yaml").exists()  # the committed tree is left alone


def test_action_rows_check_kinds_variants_order_and_times() -> None:
    from infaas_real.validate_compare import compare_actions

    kinds = ["load", "load_and_route", "unload"]
    sim = [(0.0, "load", "a", 0, 1, ""), (5.0, "flag_overloaded", "a", 0, 0, ""), (10.0, "unload", "a", 0, 1, ""),
           (11.0, "load", "b", 0, 1, "load_no_free_cores")]  # fmt: skip
    same = [(0.1, "load", "a", 0, 1, ""), (11.5, "unload", "a", 0, 1, "")]
    rows = {r["metric"]: r for r in compare_actions(sim, same, kinds, 1.0, 2.0, True)}
    assert rows["actions: count"]["ok"] and rows["actions: positions whose (kind, variant) differ"]["ok"]
    assert rows["action 2 time (s): unload a"]["difference"] == pytest.approx(1.5) and rows["action 2 time (s): unload a"]["ok"]
    assert rows["actions after the trace started (autoscaling)"]["ok"]  # the unload, in both
    assert rows["actions refused"]["sim"] == 1 and rows["actions refused"]["real"] == 0
    late = [(0.1, "load", "a", 0, 1, ""), (14.5, "unload", "a", 0, 1, "")]
    assert not {r["metric"]: r for r in compare_actions(sim, late, kinds, 1.0, 2.0, True)}["action 2 time (s): unload a"]["ok"]
    other = [(0.1, "load", "b", 0, 1, ""), (10.0, "unload", "b", 0, 1, "")]
    rows = {r["metric"]: r for r in compare_actions(sim, other, kinds, 1.0, 2.0, True)}
    assert rows["actions: positions whose (kind, variant) differ"]["difference"] == 2
    assert not rows["actions: positions whose (kind, variant) differ"]["ok"]
    none_after = [(0.1, "load", "a", 0, 1, "")]
    rows = {r["metric"]: r for r in compare_actions(sim, none_after, kinds, 1.0, 2.0, True)}
    assert not rows["actions after the trace started (autoscaling)"]["ok"] and not rows["actions: count"]["ok"]


def test_the_simulator_writes_the_control_layers_decision_trace(tmp_path: Path) -> None:
    """Every load, on-demand load and unload the control layer applied, in time order, agrees
    with the run's cluster event counts."""
    from infaas_edge import compose_group
    from infaas_sim.config import inputs_from_config
    from infaas_sim.run import simulate

    cfg = {"policy": compose_group("policy", "infaas"), "catalog": {"path": "catalogs/imagenet_cpu_small.csv"},
           "apps": compose_group("apps", "validate_imagenet"), "cluster": compose_group("cluster", "local"),
           "trace": {"kind": "spike", "rate_qps": 6, "duration_s": 60, "spike_factor": 6, "spike_len_s": 15,
                     "spike_every_s": 1000, "first_spike_s": 20},
           "sim": {**compose_group("sim", "default"), "progress": "off"}, "seed": 0}  # fmt: skip
    res = simulate(inputs_from_config(cfg, REPO))
    res.write(tmp_path)
    acts = pd.read_csv(tmp_path / "actions.csv", dtype={"refused": str}, keep_default_na=False)
    assert acts["time_s"].is_monotonic_increasing
    ok = acts[acts["refused"] == ""]
    events = res.summary["cluster_events"]
    loads = ok[ok["kind"].isin(["load", "load_and_route"])]
    assert len(loads) == events["replica_loads"] >= 2  # each of these loads one replica here
    assert (ok["kind"] == "unload").sum() == events.get("instance_unloads", 0) + events.get("replica_unloads", 0) >= 1


def test_load_waits_measure_each_load_until_its_variants_first_batch() -> None:
    from infaas_real.validate_compare import load_wait_rows, load_waits

    acts = [(1.0, "load_and_route", "a", 0, 1, ""), (2.0, "load", "b", 0, 1, "load_no_free_cores"),
            (5.0, "load", "c", 0, 1, "")]  # fmt: skip
    # query table on a clock 0.5 s behind the actions': a's first batch at 3.5 + 0.5 = 4.0
    df = pd.DataFrame({"variant": ["a", "a", "c"], "start_s": [3.5, 3.7, float("nan")]})
    waits = load_waits(acts, df, 0.5)
    assert [(a[2], w) for a, w in waits[:1]] == [("a", 3.0)] and len(waits) == 2  # the refused load is not one
    assert np.isnan(waits[1][1])  # no batch of c ever started
    rows = load_wait_rows(waits, [(acts[0], 5.0), (acts[2], 1.0)])
    assert rows[0]["metric"] == "action load 1 first batch after (s): load_and_route a" and rows[0]["difference"] == 2.0
    assert all(r["ok"] is None for r in rows)  # reported, not checked
