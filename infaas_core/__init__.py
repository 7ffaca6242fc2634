"""INFaaS-py policy core: data model, catalog, cluster view, actions, policies, workloads.

Pure Python + numpy: this package imports neither simpy, torch nor onnxruntime.
"""

from infaas_core.catalog import Catalog, load_catalog
from infaas_core.errors import (
    BackendError,
    ConfigError,
    InfaasError,
    InputError,
    NoFeasibleVariant,
    UnknownNameError,
)
from infaas_core.model import (
    CPU,
    App,
    ClusterSpec,
    InstanceType,
    Requirements,
    Variant,
    make_variant,
)

__all__ = [
    "CPU",
    "App",
    "BackendError",
    "Catalog",
    "ClusterSpec",
    "ConfigError",
    "InfaasError",
    "InputError",
    "InstanceType",
    "NoFeasibleVariant",
    "Requirements",
    "UnknownNameError",
    "Variant",
    "load_catalog",
    "make_variant",
]
