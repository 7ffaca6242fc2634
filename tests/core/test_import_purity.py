"""infaas_core must never import simpy, torch or onnxruntime (DESIGN.md dependency rule)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import infaas_core

FORBIDDEN = ("simpy", "torch", "onnxruntime")

_PROBE = """
import importlib, json, sys
forbidden = {forbidden!r}
report = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    leaked = [m for m in forbidden if m in sys.modules]
    if leaked:
        report[name] = leaked
        break
print(json.dumps({{"leaks": report, "imported": len({modules!r})}}))
"""


def test_every_infaas_core_module_imports_without_simpy_torch_onnxruntime() -> None:
    pkg_dir = Path(infaas_core.__file__).resolve().parent
    modules = ["infaas_core", *sorted(m.name for m in pkgutil.walk_packages([str(pkg_dir)], prefix="infaas_core."))]
    assert "infaas_core.workload.generators" in modules and "infaas_core.profile_io" in modules
    probe = _PROBE.format(forbidden=FORBIDDEN, modules=modules)
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=pkg_dir.parent
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["leaks"] == {}, f"first module that pulled a forbidden import: {result['leaks']}"
    assert result["imported"] == len(modules)
