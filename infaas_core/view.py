"""The read-only cluster view every backend implements, and that every policy reads.

A policy never sees a backend's internals: the simulator and the real server each expose
their state through these protocols, and carry out the actions the policy returns
(:mod:`infaas_core.actions`). Time is ``view.now_s``; no policy calls a clock.

Every backend's view is one class, :class:`infaas_core.control.cluster.Cluster`, over the
backend's mechanism: observed quantities (``rate_qps``, ``observed_latency_ms``, ``batch``,
``slo_ms``, utilisation) are computed by :mod:`infaas_core.control.observe` from raw counts
the mechanism reports, once per window; the flags (``overloaded``, ``interfered``) and the
worker's ``scale_down_to_cpu`` set are the monitor's last report
(:class:`infaas_core.actions.SetFlags`, :class:`infaas_core.actions.SetScaleDown`), applied
by the control layer. Free capacity follows :mod:`infaas_core.control.resources`.

``version`` increases whenever anything selection may read changes (a monitor update,
an instance loading, becoming ready or going away, a worker joining or leaving). Between
two versions a policy may reuse a decision it computed for the same requirements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Protocol

from infaas_core.catalog import Catalog
from infaas_core.model import ClusterSpec, InstanceType, Variant


class WorkerState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class InstanceState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"


class InstanceView(Protocol):
    """A variant loaded on one worker: ``replicas`` copies sharing one queue."""

    @property
    def id(self) -> int: ...
    @property
    def variant(self) -> Variant: ...
    @property
    def worker_id(self) -> int: ...
    @property
    def state(self) -> InstanceState: ...
    @property
    def replicas(self) -> int: ...
    @property
    def queue_len(self) -> int:
        """Queries waiting or in service right now (INFaaS's "outstanding")."""
        ...
    @property
    def rate_qps(self) -> float:
        """Arrival rate over the last monitor window (queries per second, all replicas)."""
        ...
    @property
    def observed_latency_ms(self) -> float:
        """Mean latency (queue + service) of the queries that finished in the last window;
        decays when none did (:mod:`infaas_core.control.observe`)."""
        ...
    @property
    def batch(self) -> float:
        """Mean size of the batches that finished in the last window (0 if none did)."""
        ...
    @property
    def slo_ms(self) -> float:
        """Mean latency SLO of the queries routed here in the last window (inf if none)."""
        ...
    @property
    def idle_s(self) -> float:
        """Seconds since a query was last routed here (since load if never)."""
        ...
    @property
    def overloaded(self) -> bool: ...
    @property
    def interfered(self) -> bool: ...


class WorkerView(Protocol):
    """One machine ("VM"): its type, state, free capacity and utilisation."""

    @property
    def id(self) -> int: ...
    @property
    def instance_type(self) -> InstanceType: ...
    @property
    def state(self) -> WorkerState: ...
    @property
    def started_s(self) -> float: ...
    @property
    def utilization(self) -> Mapping[str, float]:
        """Busy fraction (0..1) per device class offered (``cpu``, ``gpu-v100``...)."""
        ...
    @property
    def free_cores(self) -> int: ...
    @property
    def free_memory_mb(self) -> float:
        """Free host memory."""
        ...
    @property
    def free_accelerator_memory_mb(self) -> Mapping[str, float]: ...
    @property
    def instances(self) -> Sequence[InstanceView]: ...
    @property
    def scale_down_to_cpu(self) -> frozenset[str]:
        """Models whose accelerator variants here are idle under loose SLOs (INFaaS's
        per-parent "scaledown" flag): selection should prefer their CPU variants."""
        ...


class ClusterView(Protocol):
    """The whole cluster as a policy sees it."""

    @property
    def now_s(self) -> float: ...
    @property
    def version(self) -> int: ...
    @property
    def catalog(self) -> Catalog: ...
    @property
    def cluster(self) -> ClusterSpec: ...
    @property
    def workers(self) -> Sequence[WorkerView]: ...
    def worker(self, worker_id: int) -> WorkerView: ...
    def instances_of(self, variant: str) -> Sequence[InstanceView]:
        """Instances (any state) of ``variant`` across workers."""
        ...
    def instances_of_model(self, model: str) -> Sequence[InstanceView]:
        """Instances (any state) of any variant of architecture ``model``."""
        ...
    @property
    def unservable(self) -> Mapping[str, str]:
        """Variants the backend cannot serve (variant -> why; e.g. replicas that keep dying on
        an artifact that cannot be built): a load of one is refused (``load_unservable``), so
        selection should not choose to load it."""
        ...
