"""Every notebook in notebooks/ executes headless (nbclient) on a tiny sweep made here by the
real simulator; committed notebooks carry no outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
KERNEL = "infaas-tests-python"  # a kernel spec made here: this interpreter, whatever is installed


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 policies x 2 loads of experiment=tiny (Hydra's basic launcher, one process)."""
    d = tmp_path_factory.mktemp("nb") / "sweep"
    p = subprocess.run([sys.executable, "-m", "infaas_sim", "-m", "experiment=tiny", "policy=infaas,clipper_plus",
                        "trace.rate_qps=20,40", "trace.duration_s=3", f"hydra.sweep.dir={d}"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return d


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data dir holding a kernel spec that runs ipykernel in this interpreter, so a
    fresh virtualenv needs no `ipykernel install` step."""
    d = tmp_path_factory.mktemp("jupyter")
    spec = d / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "INFaaS-py tests", "language": "python",
    }))  # fmt: skip
    return d


def test_notebooks_are_committed_without_outputs() -> None:
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "catalogs" / "imagenet.csv").exists(),
                    reason="catalogs/imagenet.csv (the default catalog) is not in this checkout yet")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tiny_sweep: Path, kernel_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("INFAAS_RESULTS_DIR", str(tiny_sweep))
    monkeypatch.delenv("INFAAS_VALIDATION_DIR", raising=False)
    monkeypatch.delenv("INFAAS_RUN_DIR", raising=False)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL, timeout=180,
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # fmt: skip
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if path.stem == "sim_vs_real":
        text = "".join(o.get("text", "") for o in outputs)
        assert "No validation results" in text
    else:
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} drew no figure"
