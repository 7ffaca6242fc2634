"""Check that a change leaves simulation results unchanged: the same scenarios run from a
baseline tree and from a new tree, and their results compared exactly.

Each scenario (a list of ``infaas-sim`` overrides) is run twice with the same interpreter,
once with ``PYTHONPATH=<base>`` and once with ``PYTHONPATH=<new>``, into temporary run
directories. ``summary.json`` must be equal in every key except wall-time ones
(:data:`TIMING_KEYS`; paths into a tree are compared relative to it); ``queries.parquet``
(every query's arrival, start, finish, status, variant, worker, batch) and
``timeline.parquet`` must be equal column by column (NaN equal to NaN). Exit status 0 when every scenario is identical, 1 otherwise (the differing keys
are printed), 2 for bad arguments.

A baseline tree is a checkout of the commit before the change, e.g.

    git worktree add /tmp/h5base <commit>
    python benchmarks/check_identical.py --base /tmp/h5base
    python benchmarks/check_identical.py --base /tmp/h5base --scenario "policy=clipper_plus"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TIMING_KEYS = frozenset({"wall_s", "queries_per_wall_s"})
"""Keys of ``summary.json`` (at any depth) that measure wall time, not the simulation."""

DEFAULT_SCENARIOS: tuple[tuple[str, ...], ...] = (
    (),
    ("experiment=infaas_paper", "trace=bursty", "trace.rate_qps=1000", "seed=0"),
    ("policy=clipper_plus",),
    ("policy=sagemaker_plus",),
)
"""The default scenario, an INFaaS-paper bursty run and the two baselines on the default."""

REPO = Path(__file__).resolve().parent.parent
CONFIG_PACKAGE = "infaas_configs"
"""The package name of ``configs/`` (``infaas_edge.CONFIG_PACKAGE``)."""


def run_tree(tree: Path, overrides: tuple[str, ...], out_dir: Path) -> None:
    """One ``infaas-sim`` run with the code *and* the configs of ``tree``: the configs are the
    package ``infaas_configs`` (an editable install maps it to the checkout's ``configs/``),
    so a link of that name to ``tree/configs`` goes on the path beside the tree."""
    shim = out_dir.parent / f"shim_{out_dir.name}"
    shim.mkdir()
    (shim / CONFIG_PACKAGE).symlink_to(tree / "configs", target_is_directory=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(tree), str(shim))))
    cmd = [sys.executable, "-m", "infaas_sim", *overrides, "sim.progress=off", f"hydra.run.dir={out_dir}"]
    done = subprocess.run(cmd, env=env, cwd=out_dir.parent, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({tree}: {' '.join(overrides)}): {done.stderr.strip()[-2000:]}")


def normalise(x: Any, tree: str) -> Any:
    """``x`` without its wall-time keys, and with paths into ``tree`` made relative to it
    (the catalog's path names the tree it was read from)."""
    if isinstance(x, dict):
        return {k: normalise(v, tree) for k, v in x.items() if k not in TIMING_KEYS}
    if isinstance(x, list):
        return [normalise(v, tree) for v in x]
    if isinstance(x, str) and x.startswith(tree + os.sep):
        return x[len(tree) + 1 :]
    return x


def json_diffs(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON values differ (exact comparison, NaN equal to NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'new' if k not in a else 'base'}")
            else:
                out.extend(json_diffs(a[k], b[k], f"{path}/{k}"))
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_diffs(x, y, f"{path}[{i}]")]
    if a != b and not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):
        return [f"{path}: {a!r} != {b!r}"]
    return []


def parquet_diffs(a: Path, b: Path) -> list[str]:
    import pyarrow.parquet as pq

    if a.exists() != b.exists():
        return [f"{a.name}: present in only one run"]
    if not a.exists():
        return []
    ta, tb = pq.read_table(a), pq.read_table(b)
    if ta.schema != tb.schema:
        return [f"{a.name}: schemas differ"]
    if ta.num_rows != tb.num_rows:
        return [f"{a.name}: {ta.num_rows} != {tb.num_rows} rows"]
    import numpy as np

    out = []
    for name in ta.column_names:
        x, y = ta.column(name).to_numpy(zero_copy_only=False), tb.column(name).to_numpy(zero_copy_only=False)
        same = np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else bool((x == y).all())
        if not same:
            out.append(f"{a.name}:{name}: differs")
    return out


def compare(base: Path, new: Path, overrides: tuple[str, ...]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="check_identical_") as tmp:
        runs = {}
        for label, tree in (("base", base), ("new", new)):
            d = Path(tmp) / label
            run_tree(tree, overrides, d)
            runs[label] = d
        sa = normalise(json.loads((runs["base"] / "summary.json").read_text()), str(base))
        sb = normalise(json.loads((runs["new"] / "summary.json").read_text()), str(new))
        diffs = json_diffs(sa, sb)
        for f in ("queries.parquet", "timeline.parquet"):
            diffs += parquet_diffs(runs["base"] / f, runs["new"] / f)
        return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the baseline tree (a checkout of the old commit)")
    ap.add_argument("--new", type=Path, default=REPO, help="the tree under test (default: this checkout)")
    ap.add_argument("--scenario", action="append", default=None,
                    help="space-separated overrides of one scenario (repeatable; default: the four standard ones)")
    a = ap.parse_args(argv)
    for t in (a.base, a.new):
        if not (t / "infaas_sim").is_dir():
            print(f"check_identical: {t} is not an INFaaS-py tree (no infaas_sim/)", file=sys.stderr)
            return 2
    scenarios = DEFAULT_SCENARIOS if a.scenario is None else tuple(tuple(s.split()) for s in a.scenario)
    failed = False
    for sc in scenarios:
        diffs = compare(a.base.resolve(), a.new.resolve(), sc)
        label = " ".join(sc) or "(default scenario)"
        if diffs:
            failed = True
            print(f"DIFFERENT  {label}: {len(diffs)} differences")
            for d in diffs[:20]:
                print(f"    {d}")
        else:
            print(f"identical  {label}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
