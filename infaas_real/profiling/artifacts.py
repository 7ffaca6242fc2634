"""Artifacts of model-variants and their on-disk cache.

An artifact is the file a variant loads: the fp32 ``state_dict`` (torch frameworks), an
ONNX graph (``onnx-fp32``) or its int8 quantization (``onnx-int8``). Each lives under
``<cache>/artifacts/<zoo>/<model>/<kind>-<hash>/`` where the hash covers everything that
changes its bytes: the zoo's config, the model's weights key (training config and seed,
weights file hash), the kind and its build options, and the library versions. A re-run
finds the directory and skips the build. Directories are written under a temporary name
and renamed, so a crash never leaves a half artifact that looks complete.

Each build records the SHA-256 of its file in ``meta.json`` (``sha256``); :meth:`ArtifactStore.get`
(the path every load takes, in worker processes too) verifies it before handing the artifact
out. A mismatch — a file corrupted or truncated on disk — moves the directory aside and builds
the artifact again; if that build fails, the load fails with the reason (the executor then
gives the variant up and readiness says so). An artifact built before checksums were
recorded gets its checksum on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infaas_real.zoo.base import Zoo, ZooModel, file_sha256

REPO_ROOT = Path(__file__).resolve().parents[2]

ONNX_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "scores"

KIND_WEIGHTS = "weights"
KIND_ONNX_FP32 = "onnx-fp32"
KIND_ONNX_INT8 = "onnx-int8"

FRAMEWORK_KIND: dict[str, str] = {
    "torch-fp32": KIND_WEIGHTS,
    "torch-fp16": KIND_WEIGHTS,
    "torch-bf16": KIND_WEIGHTS,
    "onnx-fp32": KIND_ONNX_FP32,
    "onnx-int8": KIND_ONNX_INT8,
    "tensorrt-fp16": KIND_ONNX_FP32,
}
"""Which artifact each framework slug loads (TensorRT builds its engine from the ONNX graph)."""


def default_cache_dir() -> Path:
    """``$INFAAS_CACHE_DIR`` or ``<repo>/.infaas_cache``."""
    env = os.environ.get("INFAAS_CACHE_DIR")
    return Path(env) if env else REPO_ROOT / ".infaas_cache"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact (read from package metadata, so a
    fully cached run never imports torch)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "onnx", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def content_hash(obj: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-able mapping."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Artifact:
    """A built artifact: its directory, main file, hash and build record."""

    zoo: str
    model: str
    kind: str
    hash: str
    path: Path
    meta: Mapping[str, Any]

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 2**20


class ArtifactCorrupt(RuntimeError):
    """An artifact's file does not match the checksum recorded when it was built."""


class ArtifactStore:
    """Builds artifacts for a zoo's models on demand and caches them under ``root``."""

    def __init__(self, zoo: Zoo, root: Path | None = None, exporter: str = "dynamo") -> None:
        self.zoo = zoo
        self.root = (root or default_cache_dir()) / "artifacts" / zoo.name
        self.exporter = exporter
        self._versions = library_versions()

    # -- keys -----------------------------------------------------------------------------
    def key(self, model: ZooModel, kind: str) -> dict[str, Any]:
        key: dict[str, Any] = {
            "zoo": dict(self.zoo.config_key()),
            "model": model.name,
            "weights": dict(model.weights_key),
            "kind": kind,
            "versions": self._versions,
        }
        if kind in (KIND_ONNX_FP32, KIND_ONNX_INT8):
            key["onnx"] = {"opset": ONNX_OPSET, "exporter": self.exporter}
        if kind == KIND_ONNX_INT8:
            key["quantization"] = {"method": "static-qdq", "activations": "uint8", "weights": "int8-per-channel"}
        return key

    def directory(self, model: ZooModel, kind: str) -> Path:
        return self.root / model.name / f"{kind}-{content_hash(self.key(model, kind))}"

    def cached(self, model: ZooModel, kind: str) -> Artifact | None:
        d = self.directory(model, kind)
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        return Artifact(self.zoo.name, model.name, kind, meta["hash"], d / meta["file"], meta)

    def verify(self, art: Artifact) -> None:
        """Raise :class:`ArtifactCorrupt` unless ``art``'s file matches its recorded checksum
        (one recorded before checksums existed is computed and written now)."""
        if not art.path.is_file():
            raise ArtifactCorrupt(f"artifact {art.zoo}/{art.model}/{art.kind}: file {art.path.name} is missing")
        got = file_sha256(art.path)
        want = art.meta.get("sha256")
        if want is None:
            meta = {**art.meta, "sha256": got}
            tmp = art.path.parent / f"meta.json.tmp{os.getpid()}"
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
            tmp.replace(art.path.parent / "meta.json")
            return
        if got != want:
            raise ArtifactCorrupt(
                f"artifact {art.zoo}/{art.model}/{art.kind}: checksum of {art.path.name} is {got[:12]}, built as {want[:12]}"
            )

    def _discard(self, art: Artifact) -> None:
        """Move a corrupt artifact's directory aside (atomically: a concurrent loader sees it
        either whole or absent) and delete it."""
        d = art.path.parent
        aside = d.with_name(d.name + f".corrupt{os.getpid()}")
        try:
            d.rename(aside)
        except OSError:  # another process moved it first
            return
        shutil.rmtree(aside, ignore_errors=True)

    # -- building -------------------------------------------------------------------------
    def get(self, model: ZooModel, kind: str) -> Artifact:
        """The artifact of ``model`` for ``kind``, built (with its inputs) if not cached; a
        cached one is verified against its checksum and rebuilt if it does not match."""
        hit = self.cached(model, kind)
        if hit is not None:
            try:
                self.verify(hit)
                return hit
            except ArtifactCorrupt as exc:
                warnings.warn(f"{exc}; rebuilding it", stacklevel=2)
                self._discard(hit)
        if kind == KIND_WEIGHTS:
            return self._build(model, kind, "weights.pt", self._write_weights)
        if kind == KIND_ONNX_FP32:
            return self._build(model, kind, "model.onnx", self._write_onnx)
        if kind == KIND_ONNX_INT8:
            return self._build(model, kind, "model.int8.onnx", self._write_int8)
        raise ValueError(f"unknown artifact kind {kind!r}")

    def _build(self, model: ZooModel, kind: str, file: str, writer: Any) -> Artifact:
        final = self.directory(model, kind)
        tmp = final.with_name(final.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        try:
            extra = writer(model, tmp / file) or {}
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        meta = {
            "hash": final.name.rsplit("-", 1)[1],
            "file": file,
            "sha256": file_sha256(tmp / file),
            "key": self.key(model, kind),
            "build_s": round(time.perf_counter() - t0, 3),
            **extra,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if final.exists():  # a concurrent builder won; keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(final)
        cached = self.cached(model, kind)
        if cached is None:
            raise RuntimeError(f"artifact {self.zoo.name}/{model.name}/{kind}: built, but gone from {final}")
        return cached

    def load_module(self, model: ZooModel) -> Any:
        """The fp32 ``nn.Module`` with the cached weights (built/trained once)."""
        import torch

        art = self.get(model, KIND_WEIGHTS)
        state = torch.load(art.path, map_location="cpu", weights_only=True)
        # Build on the meta device (no random init: loading is file -> tensors, as in serving),
        # then take the loaded tensors as they are; fall back to a real init if some buffer
        # is not in the state_dict.
        try:
            with torch.device("meta"):
                module = self._fresh(model)
            module.load_state_dict(state, assign=True)
        except (NotImplementedError, RuntimeError):  # a constructor that computes on tensors
            module = None
        if module is None or any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            module = self._fresh(model)
            module.load_state_dict(state)
        return module.eval()

    def _fresh(self, model: ZooModel) -> Any:
        """An instance of the architecture (weights about to be overwritten)."""
        if self.zoo.name == "digits":
            from infaas_real.zoo.digits import _arch

            return _arch(model.name)
        from torchvision.models import get_model

        return get_model(model.name, weights=None)

    def _write_weights(self, model: ZooModel, path: Path) -> dict[str, Any]:
        import torch

        module = model.build()
        torch.save(module.state_dict(), path)
        return {"parameters": sum(p.numel() for p in module.parameters())}

    def _write_onnx(self, model: ZooModel, path: Path) -> dict[str, Any]:
        import torch

        module = self.load_module(model)
        example = (torch.from_numpy(self.zoo.example_input(2)),)
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        common: dict[str, Any] = {
            "input_names": [INPUT_NAME],
            "output_names": [OUTPUT_NAME],
            "dynamic_axes": axes,
            "opset_version": ONNX_OPSET,
        }
        errors: list[str] = []
        order = ("dynamo", "torchscript") if self.exporter == "dynamo" else ("torchscript",)
        for exporter in order:
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if exporter == "dynamo":
                        torch.onnx.export(module, example, str(path), dynamo=True, external_data=False,
                                          verbose=False, **common)  # fmt: skip
                    else:
                        torch.onnx.export(module, example, str(path), dynamo=False, **common)
                return {"exporter": exporter, "export_errors": errors}
            except Exception as exc:  # the fallback is the point: record why and try the next
                errors.append(f"{exporter}: {type(exc).__name__}: {str(exc)[:300]}")
        raise RuntimeError(f"ONNX export of {model.name} failed: {'; '.join(errors)}")

    def _write_int8(self, model: ZooModel, path: Path) -> dict[str, Any]:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        fp32 = self.get(model, KIND_ONNX_FP32)
        calib = self.zoo.calibration_inputs()

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter([{INPUT_NAME: calib[i : i + 16]} for i in range(0, len(calib), 16)])

            def get_next(self) -> dict[str, Any] | None:
                return next(self._it, None)

        quantize_static(
            str(fp32.path), str(path), Reader(),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True,
        )  # fmt: skip
        return {"from": fp32.hash, "calibration_inputs": len(calib)}
