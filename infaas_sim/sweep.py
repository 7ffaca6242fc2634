"""Resumable sweeps: skip a run whose directory already holds its finished results.

An interrupted Hydra multirun is resumed by running the same command again. Each job
calls :func:`should_skip` first; it returns ``True`` only when the job's run directory
holds a complete ``summary.json`` (every key of the results schema) *and* a ``.done``
marker written by :func:`mark_done` for the same resolved configuration. The marker holds
the SHA-256 of the configuration, so a job whose config changed (a different rate, a
different policy parameter, a job number that now maps to other overrides) is run again
rather than silently reusing stale results.

What is hashed: the job's resolved config minus the keys in :data:`UNHASHED_KEYS`
(``hydra``: where and how the job runs; ``sweep``: the resume switch itself;
``sim.progress``: whether a progress bar is drawn), serialised as canonical JSON (sorted keys). The marker is written only after the results are on disk,
so a job killed while writing leaves no marker and is redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infaas_core.metrics import SUMMARY_KEYS

log = logging.getLogger(__name__)

DONE_MARKER = ".done"
SUMMARY_FILE = "summary.json"
# config keys (dotted paths) that do not change a run's results
UNHASHED_KEYS: frozenset[str] = frozenset({"hydra", "sweep", "sim.progress"})


def _without(m: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in m.items():
        path = f"{prefix}{k}"
        if path in UNHASHED_KEYS:
            continue
        out[str(k)] = _without(v, f"{path}.") if isinstance(v, Mapping) else v
    return out


def config_hash(cfg_container: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the resolved config, minus :data:`UNHASHED_KEYS`, as canonical JSON."""
    text = json.dumps(_without(cfg_container), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _summary_complete(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(k in data for k in SUMMARY_KEYS)


def read_marker(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``.done`` marker's content, or ``None`` when absent or unreadable."""
    try:
        data = json.loads((Path(run_dir) / DONE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def should_skip(run_dir: str | Path, cfg_container: Mapping[str, Any]) -> bool:
    """True when ``run_dir`` already holds finished results for this same config.

    Logs one line saying why a run is skipped (or why finished-looking results are redone).
    """
    run_dir = Path(run_dir)
    marker = read_marker(run_dir)
    if marker is None:
        return False
    digest = config_hash(cfg_container)
    if marker.get("config_sha256") != digest:
        log.info("resume: redoing %s: its results were made with another config", run_dir)
        return False
    if not _summary_complete(run_dir / SUMMARY_FILE):
        log.info("resume: redoing %s: summary.json is missing or incomplete", run_dir)
        return False
    log.info("resume: skipping finished run %s (config sha256 %s)", run_dir, digest[:12])
    return True


def mark_done(run_dir: str | Path, cfg_container: Mapping[str, Any]) -> Path:
    """Write the ``.done`` marker (config hash, time) after the run's results are written.

    Written to a temporary file then renamed, so a reader never sees half a marker.
    """
    run_dir = Path(run_dir)
    path = run_dir / DONE_MARKER
    tmp = run_dir / f"{DONE_MARKER}.tmp"
    body = {
        "config_sha256": config_hash(cfg_container),
        "finished_unix_s": time.time(),
        "summary": SUMMARY_FILE,
    }
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)
    return path
