"""Workloads: generators, loaders of every format, scaling and cutting."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infaas_core.errors import ConfigError, InputError, UnknownNameError
from infaas_core.workload import Trace, generate, generate_chunks, load_trace, trace_from_config

REPO = Path(__file__).resolve().parents[2]


def _shared() -> Path:
    env = os.environ.get("INFAAS_SHARED")
    return Path(env) if env else REPO / ".." / "shared"


def _shared_file(rel: str) -> Path:
    p = _shared() / "traces" / rel
    if not p.exists():
        pytest.skip(f"{p} absent")
    return p


def _sorted_nonneg(a: np.ndarray) -> bool:
    return a.dtype == np.float64 and bool(np.all(a >= 0)) and bool(np.all(np.diff(a) >= 0))


# -- acceptance numbers -------------------------------------------------------------------


def test_poisson_count_within_2_percent_and_seed_determinism() -> None:
    t = generate("poisson", rate_qps=1000, duration_s=60, seed=1)
    assert abs(len(t) - 60_000) <= 0.02 * 60_000
    assert np.array_equal(t.arrivals_s, generate("poisson", rate_qps=1000, duration_s=60, seed=1).arrivals_s)
    assert not np.array_equal(t.arrivals_s[:100], generate("poisson", rate_qps=1000, duration_s=60, seed=2).arrivals_s[:100])
    assert _sorted_nonneg(t.arrivals_s) and t.arrivals_s[-1] < 60.0 and t.duration_s == 60.0
    assert t.cv() == pytest.approx(1.0, rel=0.05)


def test_gamma_cv4_measures_cv_within_10_percent() -> None:
    t = generate("gamma", rate_qps=1000, duration_s=60, seed=1, cv=4)
    assert t.cv() == pytest.approx(4.0, rel=0.10)
    assert t.mean_rate_qps() == pytest.approx(1000, rel=0.10)


@pytest.mark.shared
def test_azure_llm_code_trace_loads_8819_arrivals_over_an_hour() -> None:
    t = load_trace(_shared_file("azure_llm_2023/AzureLLMInferenceTrace_code.csv"))
    assert len(t) == 8819 and _sorted_nonneg(t.arrivals_s) and t.arrivals_s[0] == 0.0
    assert 3300 < t.duration_s < 3700  # 18:17:03.98 -> 19:14:19.93 = 3435.948 s
    assert t.duration_s == pytest.approx(3435.948056, abs=1e-6)  # 7 fractional digits kept


@pytest.mark.shared
def test_proteus_twitter_resnet_trace_loads_3776_arrivals() -> None:
    t = load_trace(_shared_file("proteus_twitter_zipf_300/resnet.txt"))
    assert len(t) == 3776 and _sorted_nonneg(t.arrivals_s)
    assert t.arrivals_s[0] == pytest.approx(0.069)


@pytest.mark.shared
def test_proteus_directory_superposes_every_family() -> None:
    folder = _shared_file("proteus_twitter_zipf_300")
    expected = sum(len(f.read_text().splitlines()) for f in folder.iterdir() if f.suffix == ".txt")
    t = load_trace(folder, format="proteus")
    assert len(t) == expected == 75_253 and _sorted_nonneg(t.arrivals_s)


@pytest.mark.shared
@pytest.mark.parametrize("spread", ["poisson", "uniform", "gamma"])
def test_azure_functions_example_gives_the_sum_of_its_minute_cells(spread: str) -> None:
    path = _shared_file("azure_functions_2019_example/invocations.csv")
    rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line]
    per_minute = np.sum([[int(c) for c in r[4:]] for r in rows], axis=0)
    t = load_trace(path, spread=spread, seed=3)
    assert len(t) == int(per_minute.sum()) and _sorted_nonneg(t.arrivals_s)
    assert t.duration_s == 1440 * 60.0
    assert np.array_equal(np.bincount((t.arrivals_s // 60).astype(int), minlength=1440), per_minute)
    one = load_trace(path, function=rows[0][2])
    assert len(one) == sum(int(c) for c in rows[0][4:])


@pytest.mark.shared
def test_infless_shape_loads_as_rate_shape() -> None:
    path = _shared_file("infless_shapes/Bursty.txt")
    rates = np.array([float(x) for x in path.read_text().split()])
    t = load_trace(path, step_s=1.0, seed=0)
    assert t.duration_s == len(rates) == 1007
    assert len(t) == pytest.approx(rates.sum(), rel=0.1)


# -- every format from files written here ------------------------------------------------


def test_arrivals_csv_roundtrip(tmp_path: Path) -> None:
    t = generate("gamma", rate_qps=200, duration_s=10, seed=5, cv=2)
    p = tmp_path / "a.csv"
    p.write_text("# comment\narrival_s\n" + "\n".join(repr(float(x)) for x in t.arrivals_s) + "\n")
    back = load_trace(p)
    assert np.array_equal(back.arrivals_s, t.arrivals_s) and back.name == "a"


def test_proteus_file_roundtrip(tmp_path: Path) -> None:
    ms = np.sort(np.random.default_rng(0).integers(0, 100_000, 500))
    p = tmp_path / "family.txt"
    p.write_text("".join(f"{m},1,300\n" for m in ms))
    back = load_trace(p)
    assert np.allclose(back.arrivals_s, ms / 1000.0) and len(back) == 500


def test_rate_shape_file_gives_its_rates(tmp_path: Path) -> None:
    p = tmp_path / "shape.txt"
    p.write_text("# rates\n100\n0\n300.5\n")
    t = load_trace(p, step_s=10.0, seed=1)
    assert t.duration_s == 30.0
    per_step = np.bincount((t.arrivals_s // 10).astype(int), minlength=3)
    assert per_step[1] == 0
    assert per_step[0] == pytest.approx(1000, rel=0.15) and per_step[2] == pytest.approx(3005, rel=0.1)


def test_bundled_traces_load_and_regenerate_byte_for_byte() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_traces", REPO / "traces" / "make_traces.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, make in mod.TRACES.items():
        path = REPO / "traces" / name
        assert path.read_text(encoding="utf-8") == make(), f"{name} differs from make_traces.py's output"
        assert path.stat().st_size < 300_000
    bursty = load_trace(REPO / "traces" / "bursty_gamma_cv4_200qps_60s.csv")
    assert 11_000 < len(bursty) < 13_500 and bursty.cv() > 3
    shape = load_trace(REPO / "traces" / "diurnal_shape.txt")
    assert shape.duration_s == 288.0


BROKEN_FILES = [
    ("a.csv", "arrival_s\n1.0\nabc\n3.0\n", 3, "arrival_s", "not a number"),
    ("a.csv", "arrival_s\n1.0\n-2\n", 3, "arrival_s", "must be >= 0"),
    ("p.txt", "10,1,300\n20,x,300\n", 2, "qos_level", "not an integer"),
    ("p.txt", "10,1,300\n,1,300\n", 2, "arrival_ms", "empty cell"),
    ("s.txt", "1.0\n2.0\nfast\n", 3, "rate_qps", "not a number"),
    ("llm.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,3,4\n2023-11-16 18:61:00.1,3,4\n", 3, "TIMESTAMP", "invalid date/time"),
    ("llm.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,3,4\nyesterday,3,4\n", 3, "TIMESTAMP", "not a timestamp"),
    ("llm.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,3,4.5\n", 2, "GeneratedTokens", "not an integer"),
    ("af.csv", "HashOwner,HashApp,HashFunction,Trigger,1,2,3\no,a,f,http,1,2,3\no,a,g,http,1,x,3\n", 3, "2", "not an integer"),
    ("af.csv", "HashOwner,HashApp,HashFunction,Trigger,1,2,3\no,a,f,http,1,2,-3\n", 2, "3", "must be >= 0"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "line", "column", "reason"), BROKEN_FILES)
def test_one_broken_cell_in_a_trace_names_file_line_column_reason(
    tmp_path: Path, name: str, text: str, line: int, column: str, reason: str
) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError) as ei:
        load_trace(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}:{line}:") and f"'{column}'" in msg and reason in msg, msg


def test_undetectable_and_bad_options_are_named(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("hello,world\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:1: cannot detect the trace format"):
        load_trace(p)
    q = tmp_path / "a.csv"
    q.write_text("arrival_s\n1\n")
    with pytest.raises(ConfigError, match=r"^trace.step_s: unknown option for format 'arrivals_csv'"):
        load_trace(q, step_s=2)
    with pytest.raises(ConfigError, match=r"^trace.format: unknown trace format"):
        load_trace(q, format="parquet")


# -- generator kinds ----------------------------------------------------------------------


def test_diurnal_rate_follows_the_sinusoid() -> None:
    t = generate("diurnal", rate_qps=200, duration_s=400, seed=1, period_s=400, amplitude=0.8)
    r = t.rate_per_second(50.0)  # bins centred at 25, 75, ... s
    centres = np.arange(25, 400, 50)
    expected = 200 * (1 + 0.8 * np.sin(2 * np.pi * centres / 400))
    assert np.allclose(r, expected, rtol=0.15, atol=15)
    assert t.mean_rate_qps() == pytest.approx(200, rel=0.05)


def test_spike_reaches_its_height_for_its_length() -> None:
    t = generate("spike", rate_qps=100, duration_s=100, seed=1, spike_factor=6, spike_len_s=10, spike_starts_s=[40])
    r = t.rate_per_second(10.0)
    assert r[4] == pytest.approx(600, rel=0.1)
    assert np.delete(r, 4) == pytest.approx(np.full(9, 100.0), rel=0.25)


def test_mmpp_mean_rate_and_burstiness() -> None:
    t = generate("mmpp", rate_qps=100, duration_s=4000, seed=2, ratio=10, mean_high_s=10, mean_low_s=30)
    assert t.mean_rate_qps() == pytest.approx(100, rel=0.15)
    assert t.cv() > 1.2  # modulation makes inter-arrivals more variable than Poisson


def test_rate_shape_kind_rescales_and_repeats() -> None:
    t = generate("rate_shape", rate_qps=50, duration_s=40, seed=3, rates_qps=[1, 3], step_s=5)
    assert t.duration_s == 40 and t.mean_rate_qps() == pytest.approx(50, rel=0.1)
    r = t.rate_per_second(5.0)
    assert r[1::2].mean() == pytest.approx(3 * r[0::2].mean(), rel=0.2)


def test_unknown_kind_and_bad_params_name_the_key() -> None:
    with pytest.raises(UnknownNameError, match="trace kind: unknown name 'zipf'; known: diurnal, gamma"):
        generate("zipf", rate_qps=1, duration_s=1, seed=0)
    with pytest.raises(ConfigError, match=r"^trace.cv: must be > 0"):
        generate("gamma", rate_qps=1, duration_s=1, seed=0, cv=0)
    with pytest.raises(ConfigError, match=r"^trace.amplitude: must be <= 1"):
        generate("diurnal", rate_qps=1, duration_s=1, seed=0, amplitude=2)
    with pytest.raises(ConfigError, match=r"^trace.burst: unknown parameter for kind 'poisson'"):
        generate("poisson", rate_qps=1, duration_s=1, seed=0, burst=3)
    with pytest.raises(ConfigError, match=r"^trace.rate_qps: must be > 0"):
        generate("poisson", rate_qps=-5, duration_s=1, seed=0)
    with pytest.raises(ConfigError, match=r"^trace.spike_len_s: spikes at"):
        generate("spike", rate_qps=1, duration_s=100, seed=0, spike_factor=2, spike_len_s=30, spike_every_s=20)


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["poisson", "gamma", "diurnal", "spike", "mmpp"]),
    rate=st.floats(1.0, 500.0),
    duration=st.floats(1.0, 60.0),
    seed=st.integers(0, 2**32),
    chunk=st.integers(1, 5000),
)
def test_property_generators_sorted_deterministic_and_chunk_invariant(
    kind: str, rate: float, duration: float, seed: int, chunk: int
) -> None:
    params = {"gamma": {"cv": 3.0}, "spike": {"spike_factor": 4.0, "spike_len_s": 0.5, "spike_every_s": 2.0}}.get(kind, {})
    t = generate(kind, rate_qps=rate, duration_s=duration, seed=seed, **params)  # type: ignore[arg-type]
    assert _sorted_nonneg(t.arrivals_s) and (len(t) == 0 or t.arrivals_s[-1] < duration)
    again = generate(kind, rate_qps=rate, duration_s=duration, seed=seed, **params)  # type: ignore[arg-type]
    assert np.array_equal(t.arrivals_s, again.arrivals_s)
    chunks = list(generate_chunks(kind, rate_qps=rate, duration_s=duration, seed=seed, chunk_size=chunk, **params))  # type: ignore[arg-type]
    assert all(c.size <= chunk and c.dtype == np.float64 for c in chunks)
    assert all(c.size == chunk for c in chunks[:-1])
    joined = np.concatenate(chunks) if chunks else np.empty(0)
    assert np.array_equal(joined, t.arrivals_s)


def test_chunked_generation_streams_a_long_trace_in_bounded_arrays() -> None:
    total, last, biggest = 0, -1.0, 0
    for c in generate_chunks("poisson", rate_qps=500_000, duration_s=10, seed=9, chunk_size=1 << 18):
        assert c[0] >= last
        last, total, biggest = float(c[-1]), total + c.size, max(biggest, c.size)
    assert biggest <= 1 << 18 and abs(total - 5_000_000) < 0.01 * 5_000_000


# -- Trace operations ----------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    target=st.floats(5.0, 2000.0),
    cv=st.floats(0.5, 4.0),
    seed=st.integers(0, 1000),
)
def test_property_scale_to_rate_hits_target_and_keeps_window(target: float, cv: float, seed: int) -> None:
    t = generate("gamma", rate_qps=200, duration_s=20, seed=seed, cv=cv)
    s = t.scale_to_rate(target, seed=seed)
    assert s.duration_s == t.duration_s
    assert abs(len(s) - target * t.duration_s) <= 0.5 + 1e-9  # exact count: round(rate x duration)
    assert s.mean_rate_qps() == pytest.approx(target, rel=0.01, abs=0.1)
    assert _sorted_nonneg(s.arrivals_s) and s.arrivals_s[-1] < t.duration_s
    assert np.array_equal(s.arrivals_s, t.scale_to_rate(target, seed=seed).arrivals_s)


def test_scaling_up_keeps_burstiness_and_rate_shape() -> None:
    t = generate("diurnal", rate_qps=100, duration_s=200, seed=4, period_s=200, amplitude=0.9)
    s = t.scale_to_rate(1000, seed=4)
    shape_t, shape_s = t.rate_per_second(20.0), s.rate_per_second(20.0)
    assert np.corrcoef(shape_t, shape_s)[0, 1] > 0.98


@settings(max_examples=30, deadline=None)
@given(cut=st.floats(0.01, 30.0), seed=st.integers(0, 100))
def test_property_cut_respects_duration(cut: float, seed: int) -> None:
    t = generate("poisson", rate_qps=100, duration_s=20, seed=seed)
    c = t.cut(cut)
    assert c.duration_s == min(cut, 20.0)
    assert len(c) == 0 or c.arrivals_s[-1] < cut
    assert np.array_equal(c.arrivals_s, t.arrivals_s[: len(c)])
    assert len(c) == int(np.sum(t.arrivals_s < cut))


def test_trace_validation_and_rate_histogram() -> None:
    with pytest.raises(ValueError, match="must be sorted"):
        Trace(np.array([1.0, 0.5]))
    with pytest.raises(ValueError, match=">= 0"):
        Trace(np.array([-1.0, 0.5]))
    t = Trace(np.array([0.1, 0.2, 1.5, 2.9]), end_s=4.0)
    assert list(t.rate_per_second()) == [2.0, 1.0, 1.0, 0.0]
    assert t.mean_rate_qps() == 1.0
    assert not t.arrivals_s.flags.writeable
    with pytest.raises(ConfigError, match="rate_qps"):
        Trace(np.empty(0)).scale_to_rate(10)


# -- trace_from_config ---------------------------------------------------------------------


def test_trace_from_config_generator_and_file_shapes(tmp_path: Path) -> None:
    t = trace_from_config({"name": "b", "_target_": "x", "kind": "gamma", "rate_qps": 100, "duration_s": 5, "cv": 2}, seed=3)
    assert t.name == "b" and np.array_equal(t.arrivals_s, generate("gamma", rate_qps=100, duration_s=5, seed=3, cv=2).arrivals_s)
    f = trace_from_config(
        {"name": "small", "path": "traces/bursty_gamma_cv4_200qps_60s.csv", "format": "auto", "rate_qps": 50, "duration_s": 30},
        seed=1,
        base_dir=tmp_path,
    )
    assert f.name == "small" and f.duration_s <= 30 and f.mean_rate_qps() == pytest.approx(50, rel=0.01)
    with pytest.raises(ConfigError, match=r"^trace: give exactly one of 'kind'"):
        trace_from_config({"rate_qps": 1}, seed=0)
    with pytest.raises(ConfigError, match=r"^trace.path: 'nowhere.csv' not found"):
        trace_from_config({"path": "nowhere.csv"}, seed=0)


# -- degenerate input (issue 13 item 6) -----------------------------------------------------


def test_a_header_only_file_and_a_cut_before_the_first_arrival_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "e.csv"
    empty.write_text("# made by hand\narrival_s\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(empty))}:2: no arrivals after the header"):
        load_trace(empty)
    late = tmp_path / "late.csv"
    late.write_text("arrival_s\n7\n5\n")  # out of order: sorted on loading
    assert list(load_trace(late).arrivals_s) == [5.0, 7.0]
    with pytest.raises(ConfigError, match=r"^trace.duration_s: .*no arrival in the first 2 s \(the first is at 5.0 s\)"):
        load_trace(late, duration_s=2)


@pytest.mark.parametrize(("kind", "params"), [
    ("poisson", {}), ("gamma", {"cv": 4}), ("diurnal", {"period_s": 20, "amplitude": 0.5}),
    ("spike", {"spike_factor": 3, "spike_len_s": 5, "spike_every_s": 20}), ("mmpp", {"ratio": 4}),
])  # fmt: skip
def test_expected_size_bounds_what_a_generator_draws(kind: str, params: dict[str, object]) -> None:
    """The up-front estimate is at least the drawn count (within Poisson noise) and the limit
    check refuses a trace of that size before drawing."""
    from infaas_core.workload.generators import check_size, expected_size

    n, pieces = expected_size(kind, 500, 60, params)
    drawn = len(generate(kind, rate_qps=500, duration_s=60, seed=3, **params))
    assert drawn <= n * 1.1 + 100 and pieces >= 1
    check_size(kind, 500, 60, params, max_arrivals=n * 2, limit_key="sim.max_arrivals")
    with pytest.raises(ConfigError, match=r"^sim.max_arrivals: .*above the limit"):
        check_size(kind, 500, 60, params, max_arrivals=n / 2, limit_key="sim.max_arrivals")


def test_rate_shape_pieces_and_file_scaling_are_checked_before_drawing(tmp_path: Path) -> None:
    from infaas_core.workload.generators import check_size

    with pytest.raises(ConfigError, match=r"rate pieces"):
        check_size("rate_shape", None, 1e12, {"rates_qps": [1e-9], "step_s": 1.0}, 1e8, "sim.max_arrivals")
    f = tmp_path / "a.csv"
    f.write_text("arrival_s\n0\n10\n")
    with pytest.raises(ConfigError, match=r"^lim: .* makes 1e\+13 arrivals, above the limit of 1e\+06"):
        load_trace(f, rate_qps=1e12, max_arrivals=1e6, limit_key="lim")
    assert len(load_trace(f, rate_qps=10, max_arrivals=1e6)) == 100
    with pytest.raises(ConfigError, match=r"^lim: trace kind 'poisson' is expected to make 1\.2e\+14"):
        trace_from_config({"kind": "poisson", "rate_qps": 1e12, "duration_s": 120}, seed=0, max_arrivals=1e8,
                          limit_key="lim")
