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
