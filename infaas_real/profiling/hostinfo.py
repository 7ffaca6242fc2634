"""What machine the measurements come from: CPU/GPU model, usable threads, today's date."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

GPU_CLASSES: tuple[tuple[str, str], ...] = (
    ("h200", "gpu-h200"), ("h100", "gpu-h100"), ("a100", "gpu-a100"), ("a10g", "gpu-a10g"),
    ("l40s", "gpu-l40s"), ("l4", "gpu-l4"), ("v100", "gpu-v100"), ("t4", "gpu-t4"),
)  # fmt: skip
"""Substring of ``torch.cuda.get_device_name()`` (lower-cased) -> device class; first match wins."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text.replace("(R)", "").replace("(TM)", "")).strip("-")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model as a slug, e.g. ``Intel-Xeon-Platinum-8375C-CPU-2.90GHz`` or ``AMD-EPYC``."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return _slug(line.split(":", 1)[1])
    except OSError:
        pass
    import platform

    return _slug(platform.processor() or platform.machine() or "unknown-cpu")


def usable_cpus() -> int:
    """CPUs this process may run on (affinity mask, else the count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_name(device: str = "cuda") -> str:
    import torch

    return str(torch.cuda.get_device_name(torch.device(device)))


def gpu_class(name: str) -> str:
    """Device class of a GPU name (``NVIDIA H200`` -> ``gpu-h200``), else ``gpu-<slug>``."""
    low = name.lower()
    for needle, cls in GPU_CLASSES:
        if needle in low:
            return cls
    return "gpu-" + _slug(low.replace("nvidia", "")).lower()


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def measured_source(machine: str, date: str | None = None) -> str:
    """``measured:<machine>:<date>`` (the profile table's ``source``)."""
    return f"measured:{machine}:{date or today()}"
