"""The executor: worker processes that run model-variants, one process per replica.

- :mod:`~infaas_real.executor.worker` — the process body (build runner, answer batches);
- :mod:`~infaas_real.executor.replica` — the parent's handle on one process (event-loop
  driven; death is end-of-file on its pipe);
- :mod:`~infaas_real.executor.instance` — a variant on one worker slot: replicas sharing a
  bounded batching queue, shedding by deadline, supervision of hung replicas, retry-once on
  replica death; also its live ``InstanceView``;
- :mod:`~infaas_real.executor.ipc` — the pipe's wire format (headers + raw float32).
"""

from infaas_real.executor.instance import (
    DeadlineRefused,
    ExecutorSettings,
    GuardSettings,
    InferenceFailed,
    Instance,
    Overloaded,
    Served,
    WorkerDied,
)
from infaas_real.executor.replica import RunnerSpec

__all__ = [
    "DeadlineRefused",
    "ExecutorSettings",
    "GuardSettings",
    "InferenceFailed",
    "Instance",
    "Overloaded",
    "RunnerSpec",
    "Served",
    "WorkerDied",
]
