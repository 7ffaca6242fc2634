"""``infaas-real calibrate-frontend``: a fresh server is driven at a light rate with 1- and
k-item requests; the front end's time per query (client latency minus the server's queue and
inference times) and the worker-slot start are written beside the catalog, with where and
when they were measured — and the simulator reads the file back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infaas_real.cli import main as cli_main
from infaas_sim.frontend import FrontendSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_calibration_writes_a_frontend_file_the_simulator_reads(tmp_path: Path) -> None:
    out = tmp_path / "digits.frontend.yaml"
    two = ["linear_pool4-torch-fp32-cpu1-b4", "linear_pool4-torch-fp32-cpu1-b1"]
    rc = cli_main(["calibrate-frontend", "catalog=digits", "apps=digits", "calibrate_frontend.rate_qps=10",
                   "calibrate_frontend.duration_s=1.5", f"calibrate_frontend.out={out}",
                   "validate.preconditions.warm_artifacts=false", f"calibrate_frontend.service_variants=[{','.join(two)}]",
                   "calibrate_frontend.service_samples=6", "calibrate_frontend.service_rate_qps=100",
                   "calibrate_frontend.idle_probe_s=0.5",
                   f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    assert rc == 0
    rec = yaml.safe_load(out.read_text())
    # the front end's CPU while it serves: the server's and the generator's, per query, over its time
    assert rec["busy_cores"] > 0 and rec["measured"]["front_end_cpu_ms_per_query"] > 0
    # the service profile: each named variant at every batch size 1..max_batch, in-slot times
    # measured here, which the simulator loads against the catalog
    svc = out.with_name("digits.service.csv")
    assert rec["service_profile"] == svc.name and (tmp_path / "run" / svc.name).is_file()
    from infaas_core.catalog import load_catalog
    from infaas_sim.service_profile import load_service_profile

    prof = load_service_profile(svc, load_catalog(REPO / "catalogs" / "digits.csv"))
    assert set(prof) == set(two) and [len(prof[n][0]) for n in two] == [4, 1]
    assert all(0 < p50 <= p99 for n in two for p50, p99 in zip(*prof[n]))
    assert set(rec["measured"]["service"]) == set(two)
    assert len(rec["measured"]["service"][two[0]]["first_calls_ms"]) == 8
    assert rec["cores"] == 1 and rec["per_query_ms"] >= 0 and rec["per_item_ms"] >= 0
    assert rec["per_query_ms"] + rec["per_item_ms"] > 0  # an HTTP round trip costs something
    assert rec["slot_start_ms"] >= 0 and rec["infer_scale"] > 0 and rec["infer_extra_ms"] >= 0
    m = rec["measured"]
    assert m["cores"] >= 1 and len(m["load_average_at_start"]) == 3 and m["catalog"] == "digits.csv"
    assert m["front_end_ms_1_item"]["answers"] >= 5
    assert rec["machine_cores"] == m["cores"]  # the cores the front end and the replicas share here
    fe = FrontendSettings.from_mapping({"enabled": True, "path": str(out), "cores": 9, "per_query_ms": 99.0,
                                        "per_item_ms": 99.0, "machine_cores": None, "loading_cores": 1.0,
                                        "background_cores": 0.0, "sharing": "window", "busy_cores": 1.0, "transfer_on_loop": False})  # fmt: skip
    assert (fe.cores, fe.per_query_ms, fe.per_item_ms) == (1, rec["per_query_ms"], rec["per_item_ms"])
    assert fe.busy_cores == rec["busy_cores"]  # the file's measurement replaces the config's


def test_one_request_size_cannot_fit_a_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(["calibrate-frontend", "catalog=digits", "apps=digits", "calibrate_frontend.batch_items=1",
                   f"hydra.run.dir={tmp_path}"])  # fmt: skip
    assert rc == 2
    assert "calibrate_frontend.batch_items" in capsys.readouterr().err
