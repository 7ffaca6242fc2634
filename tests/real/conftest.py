"""Fixtures shared by the real-server tests: the catalog the test servers load and the
digits evaluation inputs."""

from __future__ import annotations

import numpy as np
import pytest
from server_harness import catalog_overrides

from infaas_core.catalog import Catalog
from infaas_real.server.config import build_catalog, compose


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    """The catalog ``running_server`` serves (``catalog_overrides()``)."""
    return build_catalog(compose("serve", catalog_overrides()).cfg)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits zoo's evaluation inputs (float32, C order) and labels."""
    from infaas_real.zoo import get_zoo

    x, y = get_zoo("digits").eval_data()
    return np.ascontiguousarray(x, dtype=np.float32), np.asarray(y)
