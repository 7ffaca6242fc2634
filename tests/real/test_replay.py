"""``infaas-real replay`` writes the shared results schema (backend "real") with every query
in exactly one final state, and checks labels (``accuracy_measured``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from server_harness import catalog_overrides, running_server

from infaas_core.metrics import QUERY_COLUMNS, SUMMARY_KEYS
from infaas_real.cli import main as cli_main


def test_replay_writes_the_results_schema(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with running_server(["policy=infaas"], tmp_path) as srv:
        rc = cli_main(
            ["replay", *catalog_overrides(), "trace=poisson", "trace.rate_qps=100", "trace.duration_s=2",
             "apps=digits", f"server.url={srv.url}", f"hydra.run.dir={out}"]
        )  # fmt: skip
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["backend"] == "real" and s["policy"] == "infaas" and s["trace"] == "poisson"
    assert s["queries"] == s["rejected"] + s["dropped"] + s["completed"] > 100
    assert s["admitted"] == s["queries"] - s["rejected"]
    assert s["violations"] == s["late"] + s["dropped"]
    assert s["completed"] > 0 and s["latency_ms"]["p50"] > 0
    assert s["accuracy_measured"] >= 0.85  # the labels the answers predicted, checked
    assert s["generator_lateness_ms"]["p50"] < 50
    assert isinstance(s["refused_actions"], dict)  # the simulator's key, by reason (control layer)
    q = pd.read_parquet(out / "queries.parquet")
    assert tuple(q.columns) == QUERY_COLUMNS
    assert len(q) == s["queries"] and q["query_id"].is_unique
    assert set(q["status"].astype(str)) <= {"completed", "late", "dropped", "rejected"}
    done = q["status"].astype(str).isin(["completed", "late"])
    assert q.loc[done, "variant"].notna().all() and q.loc[~done, "finish_s"].isna().all()
    assert (q.loc[done, "latency_ms"] > 0).all()


def test_an_unreachable_server_is_one_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = cli_main(
        ["replay", *catalog_overrides(), "trace=poisson", "trace.rate_qps=10", "trace.duration_s=1", "apps=digits",
         "server.url=http://127.0.0.1:9", "replay.ready_timeout_s=0.5", f"hydra.run.dir={tmp_path}"]
    )  # fmt: skip
    assert rc == 2
    assert "not ready" in capsys.readouterr().err
