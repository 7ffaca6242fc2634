"""Profile-table reading: the project's own CSV schema and Proteus's ``aggregate_profiled.csv``.

Every cell is checked and a bad one raises :class:`~infaas_core.errors.InputError` naming
file, line (the header is line 1), column and reason. The csv module is used rather than
pandas so that line numbers are exact and no error escapes from inside a library.

``infaas`` format (DESIGN.md, one row per variant x measured batch size)::

    variant,model,task,framework,hardware,cores,max_batch,batch,latency_p50_ms,
    latency_p99_ms,load_latency_ms,memory_mb,accuracy,source

Lines whose first cell starts with ``#`` are comments. Two rows for the same variant and
batch are tolerated only when identical. All rows of one variant must agree on its static
fields (everything except ``batch`` and the two latencies).

``proteus`` format (UMass-LIDS/Proteus ``profiling/aggregate_profiled.csv``)::

    Model,Accel,Trials,batchsize,50th_pct,90th_pct,avg_latency(ms),Min,Max,Accuracy,Normalized_Accuracy

Mapping to variants (documented in docs/workloads.md):

- variant name ``<model>-<Accel>``; a ``/`` in a model name (``prajjwal1/bert-tiny``) becomes
  ``--`` so that names stay usable in URLs;
- ``Accel`` -> framework / hardware: ``onnxruntime_cpu`` -> onnxruntime / ``cpu``,
  ``onnxruntime_gpu_pascal`` -> onnxruntime / ``gpu-pascal``, ``onnxruntime_gpu_ampere`` ->
  onnxruntime / ``gpu-ampere``;
- task from the model family (``PROTEUS_TASKS``);
- accuracy = ``Accuracy`` / 100; p50 = ``50th_pct``; the table has no p99, so the 90th
  percentile stands in for it; ``max_batch`` = the largest batch with a measurement;
  cores = 1; load latency and memory are unknown and set to 0. The source string says all
  of this (``PROTEUS_SOURCE``);
- a row with a ``50th_pct`` but an empty ``90th_pct`` (all 40 GPU vision variants of the
  reference table: 160 rows) is kept with its p99 **estimated** as p50 × the median
  ``90th_pct / 50th_pct`` of the rows of the same ``Accel`` that have both (the same
  p90-as-p99 convention; ``PROTEUS_FALLBACK_P90_OVER_P50`` = 1.15 if that ``Accel`` has no
  complete row); such a variant's source says so (``proteus_source``);
- a row with an empty ``50th_pct`` is a missing measurement and is skipped; a variant left
  with no measured batch is left out; a second row for the same variant and batch is
  ignored (the first is kept). Each of these, and the estimated rows, is counted in one
  ``warnings.warn``.
"""

from __future__ import annotations

import csv
import math
import statistics
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infaas_core.errors import InputError
from infaas_core.model import Variant, make_variant

INFAAS_COLUMNS: tuple[str, ...] = (
    "variant", "model", "task", "framework", "hardware", "cores", "max_batch", "batch",
    "latency_p50_ms", "latency_p99_ms", "load_latency_ms", "memory_mb", "accuracy", "source",
)  # fmt: skip
"""The DESIGN.md profile-table columns, in order."""

STATIC_COLUMNS: tuple[str, ...] = (
    "model", "task", "framework", "hardware", "cores", "max_batch",
    "load_latency_ms", "memory_mb", "accuracy", "source",
)  # fmt: skip
"""Columns every row of one variant must agree on."""

_INT_COLUMNS = ("cores", "max_batch", "batch")
_FLOAT_COLUMNS = ("latency_p50_ms", "latency_p99_ms", "load_latency_ms", "memory_mb", "accuracy")
_TEXT_COLUMNS = ("variant", "model", "task", "framework", "hardware", "source")
_SOURCE_PREFIXES = ("measured:", "modeled:")

PROTEUS_REQUIRED: tuple[str, ...] = (
    "Model",
    "Accel",
    "batchsize",
    "50th_pct",
    "90th_pct",
    "Accuracy",
)
PROTEUS_ACCEL: dict[str, tuple[str, str]] = {
    "onnxruntime_cpu": ("onnxruntime", "cpu"),
    "onnxruntime_gpu_pascal": ("onnxruntime", "gpu-pascal"),
    "onnxruntime_gpu_ampere": ("onnxruntime", "gpu-ampere"),
}
"""Proteus ``Accel`` value -> (framework, hardware device class)."""

PROTEUS_TASKS: tuple[tuple[str, str], ...] = (
    # (model-name prefix, task); first match wins. Accuracy figures in the table are
    # ImageNet top-1 (vision classifiers), COCO mAP (YOLOv5), SST-2-like sentiment accuracy
    # (BERT family), a language-model score (GPT-2) and BLEU (T5, translation).
    ("resnest", "classification-imagenet-224"),
    ("resnet", "classification-imagenet-224"),
    ("densenet", "classification-imagenet-224"),
    ("efficientnet", "classification-imagenet-224"),
    ("mobilenet", "classification-imagenet-224"),
    ("yolov5", "object-detection-coco"),
    ("bert", "text-classification"),
    ("albert", "text-classification"),
    ("roberta", "text-classification"),
    ("prajjwal1/bert", "text-classification"),
    ("gpt2", "text-generation"),
    ("t5", "translation"),
)
PROTEUS_CORES = 1
PROTEUS_SOURCE = "modeled:proteus-p90-as-p99;load-latency-and-memory-unknown-set-0;cores-assumed-1"
PROTEUS_FALLBACK_P90_OVER_P50 = 1.15
"""p90/p50 used for a p50-only row when its ``Accel`` has no row with both (the accelerator
model's documented GPU jitter, ``catalogs/accelerators.yaml`` ``p99_over_p50``)."""


def proteus_source(estimated_ratio: float | None = None) -> str:
    """The ``source`` of a Proteus variant; ``estimated_ratio`` when some p99s were estimated."""
    if estimated_ratio is None:
        return PROTEUS_SOURCE
    return (
        "modeled:proteus-p90-as-p99;p50-only-rows-p99-estimated-as-p50"
        f"x{estimated_ratio:.4f}-median-p90/p50-of-accel;"
        "load-latency-and-memory-unknown-set-0;cores-assumed-1"
    )



def read_profile_table(path: Path, format: str = "auto") -> list[Variant]:
    """Read a profile table into variants (in order of first appearance).

    ``format``: ``auto`` (from the header), ``infaas`` or ``proteus``.
    """
    path = Path(path)
    if format not in ("auto", "infaas", "proteus"):
        raise InputError(
            str(path),
            None,
            None,
            f"unknown profile format '{format}'; known: auto, infaas, proteus",
        )
    text = read_text_file(path)
    rows = _rows(str(path), text)
    first = next(rows, None)
    if first is None:
        raise InputError(str(path), 1, None, "empty file: no header")
    header_line, header = first
    header = [h.strip() for h in header]
    if format == "auto":
        format = _detect(str(path), header_line, header)
    if format == "infaas":
        return _read_infaas(str(path), header_line, header, rows)
    return _read_proteus(str(path), header_line, header, rows)


def _rows(path: str, text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, cells) for every non-blank, non-comment record."""
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise InputError(path, reader.line_num, None, f"malformed CSV: {e}") from None
        if not cells or all(not c.strip() for c in cells):
            continue
        if cells[0].lstrip().startswith("#"):
            continue
        yield reader.line_num, cells


def _detect(path: str, line: int, header: list[str]) -> str:
    if set(header) == set(INFAAS_COLUMNS):
        return "infaas"
    if {"Model", "Accel", "batchsize"} <= set(header):
        return "proteus"
    if "variant" in header or "latency_p50_ms" in header:
        return "infaas"  # an infaas table with a column problem: let its checks name it
    raise InputError(
        path, line, None,
        f"cannot detect the profile format from the header {header[:6]}...; expected the "
        f"infaas columns ({','.join(INFAAS_COLUMNS)}) or Proteus's (Model,Accel,batchsize,...)",
    )  # fmt: skip


def _check_header(
    path: str, line: int, header: list[str], required: tuple[str, ...], exact: bool
) -> dict[str, int]:
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in seen:
            raise InputError(path, line, name, "duplicate column")
        if exact and name not in required:
            raise InputError(path, line, name, f"unknown column; expected: {','.join(required)}")
        seen[name] = i
    for name in required:
        if name not in seen:
            raise InputError(path, line, name, "missing column")
    return seen


# -- infaas format ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    text: dict[str, str]
    ints: dict[str, int]
    floats: dict[str, float]

    def static(self, col: str) -> object:
        if col in self.ints:
            return self.ints[col]
        if col in self.floats:
            return self.floats[col]
        return self.text[col]


def _parse_int(path: str, line: int, col: str, raw: str) -> int:
    s = raw.strip()
    if not s:
        raise InputError(path, line, col, "empty cell")
    try:
        return int(s)
    except ValueError:
        pass
    try:
        float(s)
    except ValueError:
        raise InputError(path, line, col, f"not a number: '{raw}'") from None
    raise InputError(path, line, col, f"not an integer: '{raw}'")


def read_text_file(path: Path) -> str:
    """A whole UTF-8 input file, or an InputError saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(str(path), None, None, f"cannot read file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputError(str(path), None, None, f"not UTF-8 text: {e.reason}") from None


def parse_float_cell(path: str, line: int, col: str, raw: str) -> float:
    """A finite number from a CSV cell, or an InputError naming file, line, column and reason."""
    s = raw.strip()
    if not s:
        raise InputError(path, line, col, "empty cell")
    try:
        x = float(s)
    except ValueError:
        raise InputError(path, line, col, f"not a number: '{raw}'") from None
    if not math.isfinite(x):
        raise InputError(path, line, col, f"not a finite number: '{raw}'")
    return x


def _parse_infaas_row(path: str, line: int, cells: list[str], idx: dict[str, int]) -> _Row:
    if len(cells) != len(idx):
        raise InputError(path, line, None, f"expected {len(idx)} cells, got {len(cells)}")
    text: dict[str, str] = {}
    for col in _TEXT_COLUMNS:
        s = cells[idx[col]].strip()
        if not s:
            raise InputError(path, line, col, "empty cell")
        text[col] = s
    if not text["source"].startswith(_SOURCE_PREFIXES):
        raise InputError(
            path,
            line,
            "source",
            f"must start with 'measured:' or 'modeled:', got '{text['source']}'",
        )
    ints = {col: _parse_int(path, line, col, cells[idx[col]]) for col in _INT_COLUMNS}
    floats = {col: parse_float_cell(path, line, col, cells[idx[col]]) for col in _FLOAT_COLUMNS}
    if ints["cores"] < 0:
        raise InputError(path, line, "cores", f"must be >= 0, got {ints['cores']}")
    if ints["max_batch"] < 1:
        raise InputError(path, line, "max_batch", f"must be >= 1, got {ints['max_batch']}")
    if ints["batch"] < 1:
        raise InputError(path, line, "batch", f"must be >= 1, got {ints['batch']}")
    if ints["batch"] > ints["max_batch"]:
        raise InputError(
            path, line, "batch", f"batch {ints['batch']} > max_batch {ints['max_batch']}"
        )
    for col in ("latency_p50_ms", "latency_p99_ms"):
        if floats[col] <= 0:
            raise InputError(path, line, col, f"must be > 0, got {floats[col]}")
    for col in ("load_latency_ms", "memory_mb"):
        if floats[col] < 0:
            raise InputError(path, line, col, f"must be >= 0, got {floats[col]}")
    if floats["latency_p99_ms"] < floats["latency_p50_ms"]:
        raise InputError(
            path, line, "latency_p99_ms",
            f"p99 {floats['latency_p99_ms']} < p50 {floats['latency_p50_ms']}",
        )  # fmt: skip
    if not 0.0 <= floats["accuracy"] <= 1.0:
        raise InputError(
            path, line, "accuracy", f"must be a fraction in [0, 1], got {floats['accuracy']}"
        )
    return _Row(line, text, ints, floats)


def _read_infaas(
    path: str, header_line: int, header: list[str], rows: Iterator[tuple[int, list[str]]]
) -> list[Variant]:
    idx = _check_header(path, header_line, header, INFAAS_COLUMNS, exact=True)
    first_row: dict[str, _Row] = {}
    points: dict[str, dict[int, tuple[float, float, int]]] = {}
    for line, cells in rows:
        row = _parse_infaas_row(path, line, cells, idx)
        name = row.text["variant"]
        ref = first_row.get(name)
        if ref is None:
            first_row[name] = row
            points[name] = {}
        else:
            for col in STATIC_COLUMNS:
                if row.static(col) != ref.static(col):
                    raise InputError(
                        path, line, col,
                        f"variant '{name}' has {col}={row.static(col)!r} here but "
                        f"{ref.static(col)!r} on line {ref.line}",
                    )  # fmt: skip
        b = row.ints["batch"]
        p50, p99 = row.floats["latency_p50_ms"], row.floats["latency_p99_ms"]
        prev = points[name].get(b)
        if prev is not None:
            if (prev[0], prev[1]) != (p50, p99):
                col = "latency_p50_ms" if prev[0] != p50 else "latency_p99_ms"
                raise InputError(
                    path, line, col,
                    f"conflicting duplicate row for variant '{name}' batch {b} (line {prev[2]} says "
                    f"p50={prev[0]}, p99={prev[1]})",
                )  # fmt: skip
            continue
        points[name][b] = (p50, p99, line)
    if not first_row:
        raise InputError(path, header_line, None, "no rows after the header")
    out: list[Variant] = []
    for name, row in first_row.items():
        out.append(
            make_variant(
                name=name,
                model=row.text["model"],
                task=row.text["task"],
                framework=row.text["framework"],
                hardware=row.text["hardware"],
                cores=row.ints["cores"],
                max_batch=row.ints["max_batch"],
                load_latency_ms=row.floats["load_latency_ms"],
                memory_mb=row.floats["memory_mb"],
                accuracy=row.floats["accuracy"],
                source=row.text["source"],
                points={b: (p[0], p[1]) for b, p in points[name].items()},
            )
        )
    return out


# -- proteus format -----------------------------------------------------------------------


def proteus_task(model: str) -> str | None:
    """The task a Proteus model belongs to, from its family name (``None`` if unknown)."""
    for prefix, task in PROTEUS_TASKS:
        if model.startswith(prefix):
            return task
    return None


def _read_proteus(
    path: str, header_line: int, header: list[str], rows: Iterator[tuple[int, list[str]]]
) -> list[Variant]:
    idx = _check_header(path, header_line, header, PROTEUS_REQUIRED, exact=False)
    # variant -> (model, accel, accuracy, first line); points: variant -> {batch: (p50, p90)}
    meta: dict[str, tuple[str, str, float, int]] = {}
    points: dict[str, dict[int, tuple[float, float | None]]] = {}
    ratios: dict[str, list[float]] = {}  # Accel -> p90/p50 of its rows with both
    skipped_rows = 0
    duplicate_rows = 0
    for line, cells in rows:
        if len(cells) != len(header):
            raise InputError(path, line, None, f"expected {len(header)} cells, got {len(cells)}")
        model = cells[idx["Model"]].strip()
        accel = cells[idx["Accel"]].strip()
        if not model:
            raise InputError(path, line, "Model", "empty cell")
        if accel not in PROTEUS_ACCEL:
            raise InputError(
                path,
                line,
                "Accel",
                f"unknown accelerator '{accel}'; known: {', '.join(PROTEUS_ACCEL)}",
            )
        task = proteus_task(model)
        if task is None:
            families = ", ".join(p for p, _ in PROTEUS_TASKS)
            raise InputError(
                path, line, "Model", f"unknown model family '{model}'; known prefixes: {families}"
            )
        batch = _parse_int(path, line, "batchsize", cells[idx["batchsize"]])
        if batch < 1:
            raise InputError(path, line, "batchsize", f"must be >= 1, got {batch}")
        accuracy = parse_float_cell(path, line, "Accuracy", cells[idx["Accuracy"]]) / 100.0
        if not 0.0 <= accuracy <= 1.0:
            raise InputError(
                path, line, "Accuracy", f"must be a percentage in [0, 100], got {accuracy * 100}"
            )
        raw50, raw90 = cells[idx["50th_pct"]].strip(), cells[idx["90th_pct"]].strip()
        name = f"{model.replace('/', '--')}-{accel}"
        ref = meta.get(name)
        if ref is None:
            meta[name] = (model, accel, accuracy, line)
            points[name] = {}
        elif ref[2] != accuracy:
            raise InputError(
                path,
                line,
                "Accuracy",
                f"variant '{name}' has accuracy {accuracy * 100} here but {ref[2] * 100} on line {ref[3]}",
            )
        if not raw50:
            skipped_rows += 1
            continue
        p50 = parse_float_cell(path, line, "50th_pct", raw50)
        p90 = parse_float_cell(path, line, "90th_pct", raw90) if raw90 else None
        for col, val in (("50th_pct", p50), ("90th_pct", p90)):
            if val is not None and val <= 0:
                raise InputError(path, line, col, f"must be > 0, got {val}")
        if p90 is not None and p90 < p50:
            raise InputError(path, line, "90th_pct", f"p90 {p90} < p50 {p50}")
        if batch in points[name]:
            duplicate_rows += 1
            continue
        points[name][batch] = (p50, p90)
        if p90 is not None:
            ratios.setdefault(accel, []).append(p90 / p50)
    if not meta:
        raise InputError(path, header_line, None, "no rows after the header")
    accel_ratio = {a: statistics.median(r) for a, r in ratios.items()}
    out: list[Variant] = []
    left_out: list[str] = []
    estimated_rows = 0
    for name, (model, accel, accuracy, _line) in meta.items():
        raw_pts = points[name]
        if not raw_pts:
            left_out.append(name)
            continue
        ratio = accel_ratio.get(accel, PROTEUS_FALLBACK_P90_OVER_P50)
        pts = {b: (p50, p90 if p90 is not None else p50 * ratio) for b, (p50, p90) in raw_pts.items()}
        n_est = sum(1 for _, p90 in raw_pts.values() if p90 is None)
        estimated_rows += n_est
        framework, hardware = PROTEUS_ACCEL[accel]
        out.append(
            make_variant(
                name=name,
                model=model.replace("/", "--"),
                task=proteus_task(model) or "",
                framework=framework,
                hardware=hardware,
                cores=PROTEUS_CORES,
                max_batch=max(pts),
                load_latency_ms=0.0,
                memory_mb=0.0,
                accuracy=accuracy,
                source=proteus_source(ratio if n_est else None),
                points=pts,
            )
        )
    if skipped_rows or duplicate_rows or left_out or estimated_rows:
        warnings.warn(
            f"{path}: {estimated_rows} rows with a p50 but no p90 kept with p99 estimated as "
            "p50 x the median p90/p50 of their Accel; "
            f"{skipped_rows} rows with an empty latency cell skipped as missing "
            f"measurements; {duplicate_rows} duplicate (variant, batch) rows ignored (first kept); "
            f"{len(left_out)} variants with no measured batch left out"
            + (f": {', '.join(left_out)}" if left_out else ""),
            stacklevel=3,
        )
    return out
