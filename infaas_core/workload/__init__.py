"""Workloads: synthetic arrival generators, trace-file loaders and the :class:`Trace` value.

Both backends replay the same traces. ``generate`` and ``load_trace`` are stable entry points
(DESIGN.md); ``generate_chunks`` streams a long synthetic trace in bounded chunks.
"""

from infaas_core.workload.config import trace_from_config
from infaas_core.workload.generators import KINDS, generate, generate_chunks
from infaas_core.workload.loaders import FORMATS, detect_format, load_trace, spread_counts
from infaas_core.workload.trace import Trace

__all__ = [
    "FORMATS",
    "KINDS",
    "Trace",
    "detect_format",
    "generate",
    "generate_chunks",
    "load_trace",
    "spread_counts",
    "trace_from_config",
]
