"""``sim.service_scale`` and ``sim.load_extra_ms``: the data plane runs the catalog on a given
machine (slower inference, a worker slot's start on every load) while the policy reads the
catalog as profiled, as a real server's policy does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sim_helpers import inputs, one_app, variant

from infaas_core.catalog import Catalog
from infaas_core.errors import ConfigError
from infaas_sim.run import simulate


def _run(**sim: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    cat = Catalog([variant("v", p50_ms=4.0, max_batch=1, load_ms=100.0)])
    times = np.array([1.0, 2.0, 3.0])
    res = simulate(inputs(cat, times, apps=one_app("v"), latency_model="deterministic", duration_s=4.0, **sim))
    q = res.queries
    assert q is not None
    return np.asarray(q.start_s), np.asarray(q.finish_s), res.summary


def test_scale_and_extra_load_move_only_the_data_plane() -> None:
    start, fin, s = _run()
    np.testing.assert_allclose(fin - start, 0.004, atol=1e-12)
    assert "service_scale" not in s["sim"]
    start, fin, s = _run(service_scale=2.5, load_extra_ms=1500.0)
    np.testing.assert_allclose(fin - start, 0.010, atol=1e-12)  # 4 ms x 2.5
    assert start[0] == pytest.approx(1.6)  # ready 0.1 + 1.5 s after the load at 0: the first query waits
    assert (s["sim"]["service_scale"], s["sim"]["load_extra_ms"]) == (2.5, 1500.0)


def test_the_fixed_cost_per_call_is_added_to_every_batch_after_the_scale() -> None:
    start, fin, s = _run(service_scale=2.0, service_extra_ms=1.5)
    np.testing.assert_allclose(fin - start, 0.0095, atol=1e-12)  # 4 ms x 2 + 1.5 ms
    assert s["sim"]["service_extra_ms"] == 1.5
    start, fin, _ = _run(service_extra_ms=3.0)
    np.testing.assert_allclose(fin - start, 0.007, atol=1e-12)  # 4 ms + 3 ms: a scale of 1 still adds it


@pytest.mark.parametrize(("key", "value"), [("service_scale", 0.0), ("service_scale", True), ("load_extra_ms", -1.0), ("service_extra_ms", -0.1)])
def test_bad_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"sim\.{key}"):
        _run(**{key: value})


def _profile(tmp_path: Any, text: str) -> str:
    p = tmp_path / "service.csv"
    p.write_text(text)
    return str(p)


def test_a_service_profile_replaces_the_catalogs_times_for_the_variants_it_lists(tmp_path: Any) -> None:
    # v is served at the profile's 6.5 ms (scale and extra not applied to it); the policy still
    # reads the catalog (4 ms) — the variant it routes to is the same
    path = _profile(tmp_path, "variant,batch,latency_p50_ms,latency_p99_ms,source\nv,1,6.5,7.0,measured:test\n")
    start, fin, s = _run(service_profile=path, service_scale=3.0, service_extra_ms=1.0)
    np.testing.assert_allclose(fin - start, 0.0065, atol=1e-12)
    assert s["sim"]["service_profile"] == path
    start, fin, s = _run(service_scale=3.0, service_extra_ms=1.0)  # without it: 4 x 3 + 1
    np.testing.assert_allclose(fin - start, 0.013, atol=1e-12)
    assert "service_profile" not in s["sim"]


def test_variants_the_profile_does_not_list_keep_the_catalogs_times(tmp_path: Any) -> None:
    cat = Catalog([variant("v", p50_ms=4.0, max_batch=1), variant("w", p50_ms=2.0, max_batch=2, slope_ms=1.0)])
    path = _profile(tmp_path, "variant,batch,latency_p50_ms,latency_p99_ms\nw,1,5.0,6.0\nw,2,9.0,9.5\n")
    times = np.array([1.0, 2.0])
    for name, want in (("v", 0.004), ("w", 0.005)):
        res = simulate(inputs(cat, times, apps=one_app(name), latency_model="deterministic", duration_s=3.0,
                              service_profile=path))
        q = res.queries
        assert q is not None
        np.testing.assert_allclose(np.asarray(q.finish_s) - np.asarray(q.start_s), want, atol=1e-12)


@pytest.mark.parametrize(("text", "match"), [
    ("variant,batch,latency_p50_ms\nv,1,4\n", "missing column"),
    ("variant,batch,latency_p50_ms,latency_p99_ms\nu,1,4,5\n", "'u' is not in the catalog"),
    ("variant,batch,latency_p50_ms,latency_p99_ms\nv,1,4,3\n", "p50 <= p99"),
    ("variant,batch,latency_p50_ms,latency_p99_ms\nv,1,x,3\n", "numbers"),
    ("variant,batch,latency_p50_ms,latency_p99_ms\nv,1,4,5\nv,1,4,5\n", "appears twice"),
])  # fmt: skip
def test_a_bad_service_profile_fails_with_one_line_naming_the_key(tmp_path: Any, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=r"sim\.service_profile") as info:
        _run(service_profile=_profile(tmp_path, text))
    assert match in str(info.value) and "\n" not in str(info.value)


def test_a_listed_variant_needs_every_batch_size(tmp_path: Any) -> None:
    cat = Catalog([variant("w", p50_ms=2.0, max_batch=4, slope_ms=1.0)])
    path = _profile(tmp_path, "variant,batch,latency_p50_ms,latency_p99_ms\nw,1,5.0,6.0\nw,4,9.0,9.5\n")
    with pytest.raises(ConfigError, match="lacks batch size"):
        simulate(inputs(cat, np.array([1.0]), apps=one_app("w"), service_profile=path))
    with pytest.raises(ConfigError, match="does not exist"):
        simulate(inputs(cat, np.array([1.0]), apps=one_app("w"), service_profile=str(tmp_path / "none.csv")))
