"""The runner factory of registered variants (``executor.runner_factory`` for them only).

The server starts a registered variant's replicas with ``cache_dir`` set to the model's
registry directory (:meth:`infaas_real.server.state.LiveState.extend_catalog`); this loads
the model's manifest there and opens the variant's artifact, which the profiling job built
and checksummed, through the same :func:`infaas_real.runtime.open_runner` as zoo variants.
"""

from __future__ import annotations

from pathlib import Path

from infaas_core.errors import BackendError
from infaas_core.model import Variant
from infaas_real.registration.model import RegisteredStore, RegisteredZoo
from infaas_real.registration.spec import MANIFEST, Manifest
from infaas_real.runtime import Runner, open_runner

FACTORY = "infaas_real.registration.runtime:load_runner"


def load_runner(variant: Variant, *, cache_dir: Path | None = None, device: str = "cpu") -> Runner:
    """A runner for registered ``variant`` from its model's directory ``cache_dir``."""
    if cache_dir is None or not (Path(cache_dir) / MANIFEST).is_file():
        raise BackendError(f"{variant.name}: no registered model directory (cache_dir={cache_dir})")
    directory = Path(cache_dir)
    manifest = Manifest.read(directory)
    if manifest.name != variant.model:
        raise BackendError(f"{variant.name}: {directory.name} holds model '{manifest.name}', not '{variant.model}'")
    zoo = RegisteredZoo(manifest, directory)
    return open_runner(RegisteredStore(zoo), zoo, variant, device)
