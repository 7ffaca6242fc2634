"""The simulator's :class:`infaas_core.view.ClusterView`: a thin read-only face over the
cluster state (workers and instances are the engine's own objects, which implement
``WorkerView`` / ``InstanceView`` directly, so reading the view copies nothing)."""

from __future__ import annotations

from collections.abc import Sequence

from infaas_core.catalog import Catalog
from infaas_core.errors import ConfigError
from infaas_core.model import ClusterSpec
from infaas_sim.cluster import ClusterState, Worker
from infaas_sim.dataplane import Instance

_EMPTY: tuple[Instance, ...] = ()


class SimView:
    """``now_s`` is the start of the routing window being decided (or the control event's
    time); ``version`` is bumped by :class:`~infaas_sim.cluster.ClusterState` on every change
    selection may read (monitor update, load start/ready/unload, worker add/ready/remove,
    flags)."""

    __slots__ = ("_clock", "_state")

    def __init__(self, state: ClusterState, clock: list[float]) -> None:
        self._state = state
        self._clock = clock

    @property
    def now_s(self) -> float:
        return self._clock[0]

    @property
    def version(self) -> int:
        return self._state.version

    @property
    def catalog(self) -> Catalog:
        return self._state.catalog

    @property
    def cluster(self) -> ClusterSpec:
        return self._state.spec

    @property
    def workers(self) -> Sequence[Worker]:
        return self._state.live_workers()

    def worker(self, worker_id: int) -> Worker:
        try:
            return self._state.workers[worker_id]
        except KeyError:
            raise ConfigError("worker", f"no live worker with id {worker_id}") from None

    def instances_of(self, variant: str) -> Sequence[Instance]:
        return self._state.by_variant.get(variant, _EMPTY)

    def instances_of_model(self, model: str) -> Sequence[Instance]:
        return self._state.by_model.get(model, _EMPTY)
