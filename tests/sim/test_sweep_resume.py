"""Resume rules of infaas_sim.sweep: a run is skipped only when its directory holds a
complete summary.json and a .done marker for the same resolved config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from infaas_core.metrics import SUMMARY_KEYS
from infaas_sim.sweep import DONE_MARKER, config_hash, mark_done, should_skip

CFG = {"policy": {"name": "infaas"}, "trace": {"name": "flat", "rate_qps": 100}, "seed": 0}


def _write_summary(run_dir: Path, keys: tuple[str, ...] = SUMMARY_KEYS) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps({k: 0 for k in keys}))


def test_finished_run_with_same_config_is_skipped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_summary(tmp_path)
    mark_done(tmp_path, CFG)
    with caplog.at_level(logging.INFO, logger="infaas_sim.sweep"):
        assert should_skip(tmp_path, dict(CFG))
    assert "resume: skipping finished run" in caplog.text


def test_run_without_marker_is_redone(tmp_path: Path) -> None:
    """A summary alone (e.g. the job died before marking) is not trusted."""
    _write_summary(tmp_path)
    assert not should_skip(tmp_path, CFG)


def test_empty_dir_is_run(tmp_path: Path) -> None:
    assert not should_skip(tmp_path / "never-created", CFG)


def test_changed_config_is_redone(tmp_path: Path) -> None:
    _write_summary(tmp_path)
    mark_done(tmp_path, CFG)
    changed = {**CFG, "trace": {"name": "flat", "rate_qps": 200}}
    assert not should_skip(tmp_path, changed)


def test_incomplete_summary_is_redone(tmp_path: Path) -> None:
    _write_summary(tmp_path, SUMMARY_KEYS[:-1])
    mark_done(tmp_path, CFG)
    assert not should_skip(tmp_path, CFG)


def test_corrupt_marker_or_summary_is_redone(tmp_path: Path) -> None:
    _write_summary(tmp_path)
    (tmp_path / DONE_MARKER).write_text("{not json")
    assert not should_skip(tmp_path, CFG)
    mark_done(tmp_path, CFG)
    (tmp_path / "summary.json").write_text("{truncated")
    assert not should_skip(tmp_path, CFG)


def test_hash_ignores_key_order_hydra_sweep_and_progress() -> None:
    """The resume switch, the progress bar and Hydra's own settings do not change what a run computes."""
    reordered = {"seed": 0, "trace": {"rate_qps": 100, "name": "flat"}, "policy": {"name": "infaas"}}
    assert config_hash(CFG) == config_hash(reordered)
    assert config_hash(CFG) == config_hash({**CFG, "sweep": {"resume": True}, "hydra": {"x": 1}})
    sim = {"stream": False}
    assert config_hash({**CFG, "sim": {**sim, "progress": "on"}}) == config_hash({**CFG, "sim": sim})
    assert config_hash(CFG) != config_hash({**CFG, "seed": 1})
