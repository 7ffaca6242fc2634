"""Small pieces every INFaaS part shares: hardware families, latency estimates, $ per query.

Hardware families. INFaaS keys its constants by three platforms: CPU, GPU and Inferentia
(``query_executor.cc`` factors, ``autoscaler.cc`` replica caps and scale-down delays,
``start_infaas.sh`` utilisation thresholds). A device class maps to its family by name:
``cpu`` is CPU, a class starting with ``inf`` is Inferentia, every other accelerator
(``gpu-v100``, ``gpu-t4``, ``gpu-a10g``...) is treated as a GPU.

Latency estimate (INFaaS ``est(v)`` in ``par_lat_search``; MAX_ONLINE_BATCH,
``constants.h.templ:41``): a CPU variant is estimated at the query's batch; an accelerator
variant at ``min(max_online_batch, max_batch)`` (``accelerator_batch: full``, as the code:
the worker batches whatever is queued, so a query may ride in a full batch) or at the
query's batch (``accelerator_batch: query``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infaas_core.control.observe import FAMILIES as FAMILIES
from infaas_core.control.observe import Family as Family
from infaas_core.control.observe import family_of
from infaas_core.control.resources import can_host
from infaas_core.model import CPU, ClusterSpec, Variant
from infaas_core.policies.config import require

family = family_of
"""The hardware family of a device class (:func:`infaas_core.control.observe.family_of`)."""


@dataclass(frozen=True, slots=True)
class EstimateConfig:
    max_online_batch: int
    accelerator_batch: Literal["full", "query"]

    def validate(self, key: str) -> None:
        require(self.max_online_batch >= 1, f"{key}.max_online_batch", "must be >= 1")

    def batch(self, v: Variant, query_batch: int) -> int:
        """The batch at which ``v``'s latency is estimated for a query of ``query_batch`` inputs."""
        if v.hardware == CPU or self.accelerator_batch == "query":
            return min(query_batch, v.max_batch)
        return max(min(self.max_online_batch, v.max_batch), min(query_batch, v.max_batch))

    def latency_ms(self, v: Variant, query_batch: int) -> float:
        return v.p50_ms_by_batch[self.batch(v, query_batch) - 1]

    def replica_throughput_qps(self, v: Variant, query_batch: int) -> float:
        """Queries per second one replica serves at the estimate batch (INFaaS ``T1``)."""
        b = self.batch(v, query_batch)
        return b * 1000.0 / v.p50_ms_by_batch[b - 1]


def instance_share(v: Variant, cluster: ClusterSpec, accelerator_share: str) -> tuple[float, float]:
    """``(price_usd_per_hour, share)`` of the instance type that hosts ``v`` most cheaply.

    The share of a type a replica occupies: ``cores / vcpus`` for a CPU variant; for an
    accelerator variant ``1 / devices`` times either its memory fraction of one device
    (``accelerator_share: memory``, the paper's §6.2 accounting "proportional to its memory
    footprint") or the whole device (``device``). Types that cannot hold one replica of ``v``
    (the core resource model's ``can_host``) are skipped; ``(inf, 1)`` when none can.
    """
    best = (float("inf"), 1.0)
    for t in cluster.instance_types:
        if not can_host(t, v):
            continue
        if v.hardware == CPU:
            share = v.cores / t.vcpus
        else:
            n = t.accelerator_count(v.hardware)
            dev_mb = t.accelerator_memory_mb(v.hardware)
            frac = v.memory_mb / dev_mb if (accelerator_share == "memory" and dev_mb > 0) else 1.0
            share = frac / n
        if t.price_usd_per_hour * share < best[0] * best[1]:
            best = (t.price_usd_per_hour, share)
    return best


def cost_per_query_usd(
    v: Variant, query_batch: int, cluster: ClusterSpec, est: EstimateConfig, accelerator_share: str
) -> float:
    """Hardware-time $ of one query on ``v``: the $/s of the share of the cheapest instance
    it occupies, divided by its throughput at the estimate batch (this project's explicit
    cost ordering; INFaaS has no price in its dispatcher, INFAAS.md §2.6)."""
    price, share = instance_share(v, cluster, accelerator_share)
    return price / 3600.0 * share / est.replica_throughput_qps(v, query_batch)
