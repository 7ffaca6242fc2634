"""A Ray cluster of several raylets on this machine (``ray.cluster_utils.Cluster``), in
local-only mode, for tests and benchmarks: every node on 127.0.0.1, no dashboard, a small
object store, a short session directory under /tmp (Ray's Unix socket paths must stay under
107 bytes). :meth:`LocalRayCluster.shutdown` stops the driver and every raylet."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from infaas_real.raycluster.settings import GIB

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def enable_local_only() -> None:
    """Ray's local-only mode for what this process starts: node address 127.0.0.1, every
    port on loopback. Ray reads the variable when it is imported; if it already was (a test
    run that imported it first), its constant is set too (``services`` reads it at each
    node start), and the raylets started from here inherit the variable."""
    import sys

    os.environ[LOOPBACK_ENV] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


class LocalRayCluster:
    """A head node and any added nodes; this process connected to it as the driver."""

    def __init__(self, num_cpus: float, memory_gb: float, object_store_mb: int, resources: dict[str, float] | None = None) -> None:
        enable_local_only()
        import ray
        from ray.cluster_utils import Cluster

        if ray.is_initialized():
            raise RuntimeError("this process is already a Ray driver")
        self.object_store_mb = object_store_mb
        self.temp_dir = tempfile.mkdtemp(prefix="iray", dir="/tmp")
        Path(tempfile.gettempdir(), "ray").mkdir(exist_ok=True)  # Cluster() writes its address there
        self._ray = ray
        self.nodes: list[Any] = []
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": num_cpus, "memory": int(memory_gb * GIB), "resources": resources or {},
            "object_store_memory": object_store_mb * 1024 * 1024, "include_dashboard": False,
            "temp_dir": self.temp_dir})  # fmt: skip
        self.head: Any = self.cluster.head_node
        ray.init(address=self.cluster.address, log_to_driver=False)

    def add_node(self, num_cpus: float, memory_gb: float, resources: dict[str, float] | None = None) -> Any:
        node = self.cluster.add_node(num_cpus=num_cpus, memory=int(memory_gb * GIB), resources=resources or {},
                                     object_store_memory=self.object_store_mb * 1024 * 1024)  # fmt: skip
        self.cluster.wait_for_nodes()
        self.nodes.append(node)
        return node

    def remove_node(self, node: Any, graceful: bool) -> None:
        self.cluster.remove_node(node, allow_graceful=graceful)
        if node in self.nodes:
            self.nodes.remove(node)

    def shutdown(self) -> None:
        try:
            if self._ray.is_initialized():
                self._ray.shutdown()
        finally:
            try:
                self.cluster.shutdown()
            finally:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
