"""The resource model: what a replica occupies, what a worker has free, what fits where.

This is the one definition every policy, both backends and the snapshot view use
(DESIGN.md, "the control layer"):

- a CPU replica occupies ``variant.cores`` vCPUs exclusively and ``memory_mb`` of host
  memory;
- an accelerator replica occupies ``memory_mb`` of its device class's accelerator memory.
  A worker's devices of one class are pooled (``count * memory per device``), and one
  replica must fit on one device (``memory_mb <= memory per device``): a model is never
  split across devices. (INFaaS loads a GPU variant into one TRTIS instance on one GPU.)
- an instance type can host a variant at all when it offers the variant's hardware and an
  empty worker of that type has room for one replica.

A worker's :class:`Free` starts at its type's :func:`capacity`; the control layer takes from it
as replicas load and gives back as they leave, so the free capacity a view reports is always
the type's capacity minus what its replicas occupy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from infaas_core.model import CPU, InstanceType, Variant

if TYPE_CHECKING:  # typing only, so the views may import this module without a cycle
    from infaas_core.view import WorkerView


class Unfit(StrEnum):
    """Why replicas do not fit on a worker (also the suffix of a refused load's reason)."""

    HARDWARE_NOT_OFFERED = "hardware_not_offered"
    NO_FREE_CORES = "no_free_cores"
    NO_FREE_MEMORY = "no_free_memory"
    NO_FREE_ACCELERATOR_MEMORY = "no_free_accelerator_memory"
    LARGER_THAN_ONE_DEVICE = "larger_than_one_device"


@dataclass(slots=True)
class Free:
    """Free capacity of one worker (or what is left of it while a policy plans a tick)."""

    cores: float
    memory_mb: float
    accelerator_memory_mb: dict[str, float] = field(default_factory=dict)

    def unfit(self, itype: InstanceType, v: Variant, replicas: int = 1) -> Unfit | None:
        """``None`` if ``replicas`` more replicas of ``v`` fit, else why not."""
        if not itype.offers(v.hardware):
            return Unfit.HARDWARE_NOT_OFFERED
        if v.hardware == CPU:
            if v.cores * replicas > self.cores:
                return Unfit.NO_FREE_CORES
            if v.memory_mb * replicas > self.memory_mb:
                return Unfit.NO_FREE_MEMORY
            return None
        if v.memory_mb > itype.accelerator_memory_mb(v.hardware):
            return Unfit.LARGER_THAN_ONE_DEVICE
        if v.memory_mb * replicas > self.accelerator_memory_mb.get(v.hardware, 0.0):
            return Unfit.NO_FREE_ACCELERATOR_MEMORY
        return None

    def fits(self, itype: InstanceType, v: Variant, replicas: int = 1) -> bool:
        return self.unfit(itype, v, replicas) is None

    def most(self, itype: InstanceType, v: Variant, replicas: int) -> int:
        """The largest ``n <= replicas`` that fits (0 if none)."""
        n = replicas
        while n > 0 and not self.fits(itype, v, n):
            n -= 1
        return n

    def take(self, v: Variant, replicas: int) -> None:
        """Occupy (``replicas`` > 0) or release (< 0) the resources of replicas."""
        if v.hardware == CPU:
            self.cores -= v.cores * replicas
            self.memory_mb -= v.memory_mb * replicas
        else:
            acc = self.accelerator_memory_mb
            acc[v.hardware] = acc.get(v.hardware, 0.0) - v.memory_mb * replicas


def capacity(itype: InstanceType) -> Free:
    """Everything an empty worker of ``itype`` has."""
    return Free(
        cores=float(itype.vcpus),
        memory_mb=itype.memory_gb * 1024.0,
        accelerator_memory_mb={
            d: itype.accelerator_memory_mb(d) * n for d, n in itype.accelerators if n > 0
        },
    )


def room_of(w: WorkerView) -> Free:
    """What worker ``w`` has free now, as the view reports it (a copy: a policy may
    :meth:`Free.take` from it while it plans a tick without touching the view)."""
    return Free(
        cores=float(w.free_cores),
        memory_mb=w.free_memory_mb,
        accelerator_memory_mb=dict(w.free_accelerator_memory_mb),
    )


def can_host(itype: InstanceType, v: Variant) -> bool:
    """An empty worker of ``itype`` could hold one replica of ``v``."""
    return capacity(itype).fits(itype, v, 1)


def planning_room(free: Free, headroom_mb: float) -> Free:
    """A copy of ``free`` less ``headroom_mb`` of every memory (policies plan loads with it)."""
    return Free(
        cores=free.cores,
        memory_mb=free.memory_mb - headroom_mb,
        accelerator_memory_mb={k: m - headroom_mb for k, m in free.accelerator_memory_mb.items()},
    )
