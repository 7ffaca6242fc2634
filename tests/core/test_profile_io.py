"""Profile-table loading: every broken cell is an InputError naming file, line, column and reason."""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infaas_core.errors import InputError
from infaas_core.profile_io import (
    INFAAS_COLUMNS,
    PROTEUS_FALLBACK_P90_OVER_P50,
    PROTEUS_SOURCE,
    proteus_source,
    read_profile_table,
)

HEADER = ",".join(INFAAS_COLUMNS)
GOOD_ROWS = [
    # variant,model,task,framework,hardware,cores,max_batch,batch,p50,p99,load,mem,acc,source
    "r50-cpu,resnet50,cls,onnx,cpu,2,8,1,10.0,12.0,500,100,0.76,measured:box:2026-11-28",
    "r50-cpu,resnet50,cls,onnx,cpu,2,8,4,30.0,36.0,500,100,0.76,measured:box:2026-11-28",
    "r50-cpu,resnet50,cls,onnx,cpu,2,8,8,55.0,70.0,500,100,0.76,measured:box:2026-11-28",
    "r18-gpu,resnet18,cls,trt,gpu-t4,1,16,1,2.0,3.0,900,300,0.70,modeled:test",
]


def _write(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    p = tmp_path / "profile.csv"
    p.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return p


def _shared() -> Path:
    env = os.environ.get("INFAAS_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared"


def test_good_table_builds_variants_in_order_with_interpolation(tmp_path: Path) -> None:
    vs = read_profile_table(_write(tmp_path, GOOD_ROWS))
    assert [v.name for v in vs] == ["r50-cpu", "r18-gpu"]
    r50 = vs[0]
    assert r50.batches == (1, 4, 8) and r50.max_batch == 8 and r50.cores == 2
    assert r50.latency_ms(1) == 10.0 and r50.latency_ms(4, "p99") == 36.0
    assert r50.latency_ms(2) == pytest.approx(10.0 + (30.0 - 10.0) / 3)
    assert r50.source == "measured:box:2026-11-28"
    with pytest.raises(ValueError):
        r50.latency_ms(9)


def test_comments_blank_lines_and_identical_duplicates_are_tolerated(tmp_path: Path) -> None:
    rows = ["# a comment line", GOOD_ROWS[0], "", GOOD_ROWS[0], *GOOD_ROWS[1:]]
    vs = read_profile_table(_write(tmp_path, rows))
    assert len(vs) == 2 and vs[0].batches == (1, 4, 8)


def _replace_cell(row: str, column: str, value: str) -> str:
    cells = row.split(",")
    cells[INFAAS_COLUMNS.index(column)] = value
    return ",".join(cells)


BROKEN = [
    ("latency_p50_ms", "abc", "not a number"),
    ("latency_p50_ms", "", "empty cell"),
    ("latency_p99_ms", "5.0", "p99 5.0 < p50"),
    ("batch", "16", "batch 16 > max_batch 8"),
    ("batch", "0", "must be >= 1"),
    ("batch", "2.5", "not an integer"),
    ("cores", "-1", "must be >= 0"),
    ("max_batch", "x", "not a number"),
    ("accuracy", "76", "must be a fraction in [0, 1]"),
    ("accuracy", "-0.1", "must be a fraction in [0, 1]"),
    ("memory_mb", "-5", "must be >= 0"),
    ("load_latency_ms", "nan", "not a finite number"),
    ("latency_p50_ms", "-1", "must be > 0"),
    ("source", "somewhere", "must start with 'measured:' or 'modeled:'"),
    ("model", "", "empty cell"),
]


@pytest.mark.parametrize(("column", "value", "reason"), BROKEN)
def test_one_broken_cell_names_file_line_column_and_reason(
    tmp_path: Path, column: str, value: str, reason: str
) -> None:
    rows = list(GOOD_ROWS)
    rows[1] = _replace_cell(rows[1], column, value)  # line 3 of the file
    p = _write(tmp_path, rows)
    with pytest.raises(InputError) as ei:
        read_profile_table(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:3:"), msg
    assert f"'{column}'" in msg and reason in msg, msg
    assert ei.value.line == 3 and ei.value.column == column


@pytest.mark.parametrize(
    ("column", "value"),
    [("model", "resnet101"), ("hardware", "gpu-v100"), ("max_batch", "16"), ("accuracy", "0.8"), ("memory_mb", "7")],
)
def test_variant_rows_disagreeing_on_a_static_field_are_rejected(tmp_path: Path, column: str, value: str) -> None:
    rows = list(GOOD_ROWS)
    rows[2] = _replace_cell(rows[2], column, value)  # line 4
    p = _write(tmp_path, rows)
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:4: column '{column}': variant 'r50-cpu' has .* on line 2"):
        read_profile_table(p)


def test_conflicting_duplicate_rows_are_rejected(tmp_path: Path) -> None:
    dup = _replace_cell(GOOD_ROWS[0], "latency_p99_ms", "13.0")
    p = _write(tmp_path, [*GOOD_ROWS, dup])
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:6: column 'latency_p99_ms': conflicting duplicate row .*line 2"):
        read_profile_table(p)


def test_header_problems_are_line_1_errors(tmp_path: Path) -> None:
    missing = HEADER.replace(",memory_mb", "")
    p = _write(tmp_path, [], header=missing)
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:1: column 'memory_mb': missing column"):
        read_profile_table(p, format="infaas")
    p = _write(tmp_path, [], header=HEADER + ",colour")
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:1: column 'colour': unknown column"):
        read_profile_table(p, format="infaas")
    p = _write(tmp_path, [], header="a,b,c")
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:1: cannot detect the profile format"):
        read_profile_table(p)
    p = _write(tmp_path, [])
    with pytest.raises(InputError, match="no rows after the header"):
        read_profile_table(p)
    p = _write(tmp_path, ["r,m,t,f,cpu,1,1,1,1,1,0,0,0.5"])
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:2: expected 14 cells, got 13"):
        read_profile_table(p)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read file"):
        read_profile_table(tmp_path / "nope.csv")


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)


@st.composite
def _tables(draw: st.DrawFn) -> list[dict[str, object]]:
    """Random valid variants: measured batches and monotone p50 <= p99 at each."""
    out = []
    for i in range(draw(st.integers(1, 4))):
        max_batch = draw(st.integers(1, 32))
        batches = sorted(draw(st.sets(st.integers(1, max_batch), min_size=1, max_size=5)))
        p50s = sorted(draw(st.lists(st.floats(0.01, 1e4), min_size=len(batches), max_size=len(batches))))
        extra = draw(st.lists(st.floats(0.0, 1e3), min_size=len(batches), max_size=len(batches)))
        out.append(
            {
                "variant": f"v{i}-{draw(_names)}",
                "model": draw(_names),
                "cores": draw(st.integers(0, 64)),
                "max_batch": max_batch,
                "acc": draw(st.floats(0.0, 1.0)),
                "points": {b: (p, p + e) for b, p, e in zip(batches, p50s, extra)},
            }
        )
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=_tables())
def test_property_written_table_reads_back_exactly(tmp_path: Path, table: list[dict[str, object]]) -> None:
    rows = []
    for v in table:
        pts = v["points"]
        assert isinstance(pts, dict)
        for b, (p50, p99) in pts.items():
            rows.append(
                f"{v['variant']},{v['model']},cls,onnx,cpu,{v['cores']},{v['max_batch']},{b},"
                f"{p50!r},{p99!r},0,0,{v['acc']!r},modeled:hypothesis"
            )
    got = read_profile_table(_write(tmp_path, rows))
    assert [g.name for g in got] == [v["variant"] for v in table]
    for g, v in zip(got, table):
        pts = v["points"]
        assert isinstance(pts, dict)
        assert g.accuracy == v["acc"] and g.max_batch == v["max_batch"]
        for b, (p50, p99) in pts.items():
            assert g.latency_ms(b) == p50 and g.latency_ms(b, "p99") == p99


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    row=st.integers(0, len(GOOD_ROWS) - 1),
    column=st.sampled_from([c for c in INFAAS_COLUMNS if c not in ("variant", "source")]),
    junk=st.sampled_from(["", "x", "1e", "--3", "nan", "inf"]),
)
def test_property_any_corrupted_cell_is_located(tmp_path: Path, row: int, column: str, junk: str) -> None:
    text_cols = ("model", "task", "framework", "hardware")
    if column in text_cols and junk:
        return  # any non-empty text is a valid name
    rows = list(GOOD_ROWS)
    rows[row] = _replace_cell(rows[row], column, junk)
    p = _write(tmp_path, rows)
    with pytest.raises(InputError) as ei:
        read_profile_table(p)
    assert ei.value.line == row + 2
    if column not in text_cols:
        assert ei.value.column == column
    assert str(ei.value).startswith(f"{p}:{row + 2}:")


def test_ten_thousand_row_table_loads(tmp_path: Path) -> None:
    """Scale check: 2,000 variants x 5 batches (the wall time is printed, not asserted)."""
    rows = []
    for i in range(2000):
        for b in (1, 2, 4, 8, 16):
            rows.append(f"v{i},m{i % 50},cls,onnx,cpu,2,16,{b},{b * 1.5},{b * 2.0},10,100,0.5,modeled:bench")
    p = _write(tmp_path, rows)
    t0 = time.perf_counter()
    vs = read_profile_table(p)
    print(f"10,000-row profile table read in {time.perf_counter() - t0:.3f} s")
    assert len(vs) == 2000 and vs[-1].latency_ms(3) == pytest.approx(4.5)


PROTEUS_HEADER = "Model,Accel,Trials,batchsize,50th_pct,90th_pct,avg_latency(ms),Min,Max,Accuracy,Normalized_Accuracy"


def test_proteus_format_maps_columns_and_skips_missing_measurements(tmp_path: Path) -> None:
    rows = [
        "resnet50_v1,onnxruntime_cpu,100,1,96.9,97.4,97,90,120,77.36,97.6",
        "resnet50_v1,onnxruntime_cpu,100,2,150.0,160.0,155,140,200,77.36,97.6",
        "resnet50_v1,onnxruntime_cpu,100,2,151.0,161.0,155,140,200,77.36,97.6",  # duplicate: first kept
        "resnet50_v1,onnxruntime_cpu,100,4,,,,,,77.36,97.6",  # no p50 -> skipped
        "resnet50_v1,onnxruntime_gpu_ampere,,1,32.6,,32.6,26,67,77.36,97.6",  # no p90 -> p99 estimated
        "prajjwal1/bert-tiny,onnxruntime_gpu_pascal,1000,1,1.7,1.8,1.7,1.6,3,83.2,86",
        "mobilenet1.0,onnxruntime_gpu_pascal,,1,2.0,,2.0,1.9,3,73.3,90",  # no p90 -> p99 estimated
    ]
    p = _write(tmp_path, rows, header=PROTEUS_HEADER)
    with pytest.warns(UserWarning, match=r"2 rows with a p50 but no p90 kept .* 1 rows with an empty latency cell .* 1 duplicate .* 0 variants with no measured batch left out"):
        vs = read_profile_table(p)
    assert [v.name for v in vs] == [
        "resnet50_v1-onnxruntime_cpu",
        "resnet50_v1-onnxruntime_gpu_ampere",
        "prajjwal1--bert-tiny-onnxruntime_gpu_pascal",
        "mobilenet1.0-onnxruntime_gpu_pascal",
    ]
    r = vs[0]
    assert (r.framework, r.hardware, r.task, r.max_batch) == ("onnxruntime", "cpu", "classification-imagenet-224", 2)
    assert r.accuracy == pytest.approx(0.7736) and r.latency_ms(2, "p99") == 160.0
    assert r.source == PROTEUS_SOURCE and r.load_latency_ms == 0.0 and r.memory_mb == 0.0
    assert vs[2].hardware == "gpu-pascal" and vs[2].task == "text-classification"
    # no complete gpu_ampere row: the documented fallback factor
    ampere = vs[1]
    assert ampere.latency_ms(1, "p99") == pytest.approx(32.6 * PROTEUS_FALLBACK_P90_OVER_P50)
    assert ampere.source == proteus_source(PROTEUS_FALLBACK_P90_OVER_P50) and "p99-estimated" in ampere.source
    # gpu_pascal has one complete row (bert-tiny, p90/p50 = 1.8/1.7): its median is the factor
    mob = vs[3]
    assert mob.latency_ms(1, "p99") == pytest.approx(2.0 * 1.8 / 1.7)
    assert mob.source.startswith("modeled:") and "p50-only-rows-p99-estimated-as-p50x1.0588" in mob.source


def test_proteus_broken_cell_is_located(tmp_path: Path) -> None:
    rows = ["resnet50_v1,onnxruntime_cpu,100,1,96.9,97.4,97,90,120,77.36,97.6",
            "resnet50_v1,onnxruntime_tpu,100,2,150.0,160.0,155,140,200,77.36,97.6"]  # fmt: skip
    p = _write(tmp_path, rows, header=PROTEUS_HEADER)
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:3: column 'Accel': unknown accelerator 'onnxruntime_tpu'"):
        read_profile_table(p)
    rows[1] = "resnet50_v1,onnxruntime_cpu,100,2,abc,160.0,155,140,200,77.36,97.6"
    p = _write(tmp_path, rows, header=PROTEUS_HEADER)
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:3: column '50th_pct': not a number"):
        read_profile_table(p)


@pytest.mark.shared
def test_proteus_reference_table_loads() -> None:
    path = _shared() / "reference" / "proteus_profiles" / "aggregate_profiled.csv"
    if not path.exists():
        pytest.skip(f"{path} absent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vs = read_profile_table(path)
    assert len(caught) == 1 and "160 rows with a p50 but no p90 kept" in str(caught[0].message)
    assert "0 variants with no measured batch left out" in str(caught[0].message)
    assert len(vs) == 138
    assert {v.hardware for v in vs} == {"cpu", "gpu-pascal", "gpu-ampere"}
    for v in vs:
        assert all(lo <= hi for lo, hi in zip(v.latency_p50_ms, v.latency_p99_ms))
        assert 0.0 <= v.accuracy <= 1.0
    # the 40 GPU vision variants (p50 only in the table) are kept, their p99 estimated and labelled
    vision_gpu = [v for v in vs if v.task == "classification-imagenet-224" and v.hardware != "cpu"]
    estimated = [v for v in vision_gpu if "p99-estimated" in v.source]
    assert len(vision_gpu) == 44 and len(estimated) == 40  # + the 4 resnest on pascal, p90 measured
    assert {v.hardware for v in estimated} == {"gpu-pascal", "gpu-ampere"}
    for v in estimated:
        assert v.source.startswith("modeled:")
        assert all(1.0 <= hi / lo < 1.1 for lo, hi in zip(v.latency_p50_ms, v.latency_p99_ms))
    assert {"resnet50_v1-onnxruntime_gpu_pascal", "efficientnet-b0-onnxruntime_gpu_ampere"} <= {v.name for v in vs}
