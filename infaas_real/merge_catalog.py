"""Merge profile tables: ``python -m infaas_real.merge_catalog BASE NEW [NEW...] [--out OUT]``.

Rows of NEW replace every row of BASE with the same (hardware class, framework, task) — so
measured GPU rows (``infaas-real profile zoo=imagenet device=cuda``) replace the modeled
rows of that class and framework, and rows with the same variant name are replaced too.
Without ``--out`` BASE is rewritten in place. The merged table is validated with
``load_catalog`` before it is written.

``python -m infaas_real.merge_catalog --modeled imagenet OUT`` writes the modeled
accelerator rows (``infaas_real/profiling/modeled.py``) for the imagenet zoo's published
accuracies; it refuses a model whose published accuracy was measured at another
resolution than the zoo's input (``check_accuracy_resolution``).

``python -m infaas_real.merge_catalog --cpu-threads BASE [--out OUT]`` replaces BASE's
modeled 4- and 8-core CPU rows by new ones fitted on its measured 1- and 2-thread rows
(``modeled.cpu_thread_rows``).

``--only-zoo ZOO`` (with a merge or ``--cpu-threads``) keeps only the rows of ZOO's current
models (e.g. to drop architectures removed from the zoo).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path
from typing import Any

from infaas_real.profiling.run import COLUMNS, write_table


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def merge(base: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``base`` minus what ``new`` covers (same hardware+framework+task, or same variant), then ``new``."""
    covered = {(r["hardware"], r["framework"], r["task"]) for r in new}
    names = {r["variant"] for r in new}
    kept = [r for r in base if (r["hardware"], r["framework"], r["task"]) not in covered and r["variant"] not in names]
    return kept + list(new)


def with_cpu_thread_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` without their modeled CPU-thread rows, plus new ones fitted on their measured rows."""
    from infaas_real.profiling.modeled import CPU_THREADS_SOURCE, cpu_thread_rows

    kept = [r for r in rows if not str(r["source"]).startswith(CPU_THREADS_SOURCE)]
    return kept + cpu_thread_rows(kept)


def merge_sidecars(sources: list[Path], out: Path, names: set[str] | None = None) -> None:
    """``<out>.meta.json``: the sources' per-variant records (later sources win) and failures,
    the sources' own provenance (``sources``, ``merged_from``) carried over; with ``names``,
    only the records of those variants (the ones the merged table has)."""
    import json

    merged: dict[str, Any] = {"merged_from": [], "variants": {}, "failed": {}}
    for src in sources:
        side = Path(str(src) + ".meta.json")
        if side.is_file():
            meta = json.loads(side.read_text())
            merged["variants"].update(meta.get("variants", {}))
            merged["failed"].update(meta.get("failed", {}))
            for prior in meta.get("merged_from", []):
                if prior not in merged["merged_from"]:
                    merged["merged_from"].append(prior)
            for key, val in meta.get("sources", {}).items():
                merged.setdefault("sources", {})[key] = val
            for key in ("machine", "hardware", "config", "zoo"):
                if key in meta:
                    merged.setdefault("sources", {}).setdefault(str(src), {})[key] = meta[key]
        if str(src) not in merged["merged_from"]:
            merged["merged_from"].append(str(src))
    if names is not None:
        merged["variants"] = {k: v for k, v in merged["variants"].items() if k in names}
    Path(str(out) + ".meta.json").write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")


def write_validated(rows: list[dict[str, Any]], out: Path) -> None:
    from infaas_core.catalog import load_catalog

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / out.name
        _write_csv(rows, probe)
        load_catalog(probe)  # raises InputError naming file, line and column
    _write_csv(rows, out)


def _write_csv(rows: list[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infaas_real.merge_catalog", description=__doc__.split("\n")[0])
    ap.add_argument("base", nargs="?")
    ap.add_argument("new", nargs="*", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--modeled", metavar="ZOO", help="write the modeled accelerator rows of ZOO to BASE")
    ap.add_argument("--cpu-threads", action="store_true", help="(re)model BASE's 4- and 8-core CPU rows")
    ap.add_argument("--only-zoo", metavar="ZOO", help="keep only the rows of ZOO's current models")
    args = ap.parse_args(argv)
    if args.modeled:
        from infaas_real.profiling.modeled import modeled_rows
        from infaas_real.zoo import get_zoo
        from infaas_real.zoo.base import check_accuracy_resolution

        zoo = get_zoo(args.modeled)
        for m in zoo.models():
            if m.accuracy is not None:
                check_accuracy_resolution(zoo, m)
        accs = {m.name: float(m.accuracy) for m in zoo.models() if m.accuracy is not None}
        rows = modeled_rows(accs, zoo.task)
        out = Path(args.base)
        write_table(rows, {"zoo": zoo.name, "modeled": True}, out)
        write_validated(rows, out)
        print(f"wrote {out}: {len(rows)} modeled rows")
        return 0
    if not args.base or not (args.new or args.cpu_threads):
        ap.error("give BASE and at least one NEW table (or --modeled ZOO OUT, or --cpu-threads BASE)")
    base_path = Path(args.base)
    rows = read_rows(base_path)
    for path in args.new:
        rows = merge(rows, read_rows(path))
    if args.only_zoo:
        from infaas_real.zoo import get_zoo

        keep = {m.name for m in get_zoo(args.only_zoo).models()}
        dropped = sorted({r["model"] for r in rows if r["model"] not in keep})
        rows = [r for r in rows if r["model"] in keep]
        print(f"--only-zoo {args.only_zoo}: dropped the rows of {', '.join(dropped) or 'no model'}")
    if args.cpu_threads:
        rows = with_cpu_thread_rows(rows)
    out = args.out or base_path
    write_validated(rows, out)
    merge_sidecars([base_path, *args.new], out, {r["variant"] for r in rows})
    print(f"wrote {out}: {len(rows)} rows, {len({r['variant'] for r in rows})} variants")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
