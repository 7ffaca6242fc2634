"""``registration.*`` of configs/serve.yaml: where registered models live, how big an upload
may be, and how their variants are generated and profiled (the YAML holds every default)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infaas_core.errors import ConfigError
from infaas_real.profiling.measure import MeasureConfig
from infaas_real.registration.spec import FORMATS
from infaas_real.runtime import CPU_FRAMEWORKS


@dataclass(frozen=True, slots=True)
class RegistrationSettings:
    """What ``POST /v2/infaas/models`` and its profiling jobs read."""

    enabled: bool
    directory: Path  # one sub-directory per registered model (manifest, files, artifacts, profile table)
    max_upload_bytes: int  # the registration body's limit (base64 files inside)
    max_pending_jobs: int  # registrations checked or profiling at once; the next one gets 503
    check_timeout_s: float  # the model's files must be checked within this long
    job_timeout_s: float  # profiling that runs longer is stopped and the job failed
    keep_finished_jobs: int  # finished job records kept for polling (oldest dropped first)
    exporter: str  # ONNX exporter of torchvision models (dynamo | torchscript)
    frameworks: Mapping[str, tuple[str, ...]]  # format -> frameworks generated
    threads: tuple[int, ...]  # core counts (capped by the machine)
    batches: tuple[int, ...]  # batch sizes measured
    max_batches: tuple[int, ...]  # one variant per value
    measure: MeasureConfig
    max_run_s: float
    noise_tolerance: float
    noise_retries: int
    agreement_samples: int  # inputs on which a variant's top-1 is compared with the fp32 graph
    example_seed: int  # seed of the random example inputs when no validation data is given

    def plan(self) -> dict[str, Any]:
        """The profiling plan's parts, as the job process receives them."""
        return {"threads": list(self.threads), "batches": list(self.batches), "max_batches": list(self.max_batches),
                "measure": self.measure.key() | {"rounds": self.measure.rounds}, "max_run_s": self.max_run_s,
                "noise_tolerance": self.noise_tolerance, "noise_retries": self.noise_retries}  # fmt: skip


def _get(d: Mapping[str, Any], key: str) -> Any:
    if key not in d:
        raise ConfigError(f"registration.{key}", "missing key")
    return d[key]


def _num(d: Mapping[str, Any], key: str, lo: float, integer: bool = False) -> Any:
    v = _get(d, key)
    ok = isinstance(v, int) if integer else isinstance(v, int | float)
    if isinstance(v, bool) or not ok or v < lo:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"registration.{key}", f"must be {kind} >= {lo}, got {v!r}")
    return v


def _ints(d: Mapping[str, Any], key: str) -> tuple[int, ...]:
    v = _get(d, key)
    if not isinstance(v, list | tuple) or not v or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                                            for x in v):  # fmt: skip
        raise ConfigError(f"registration.{key}", f"must be a non-empty list of integers >= 1, got {v!r}")
    return tuple(sorted(set(v)))


def build_registration_settings(cfg: Mapping[str, Any]) -> RegistrationSettings:
    """Validate ``cfg["registration"]`` into :class:`RegistrationSettings`."""
    from infaas_real.profiling.artifacts import default_cache_dir

    r = cfg.get("registration")
    if not isinstance(r, Mapping):
        raise ConfigError("registration", f"missing or not a mapping (got {r!r})")
    enabled = _get(r, "enabled")
    if not isinstance(enabled, bool):
        raise ConfigError("registration.enabled", f"must be true or false, got {enabled!r}")
    directory = _get(r, "dir")
    if directory is not None and (not isinstance(directory, str) or not directory):
        raise ConfigError("registration.dir", f"must be a directory path or null, got {directory!r}")
    fws = _get(r, "frameworks")
    if not isinstance(fws, Mapping) or set(fws) != set(FORMATS):
        raise ConfigError("registration.frameworks", f"must map exactly {', '.join(FORMATS)} to framework lists")
    frameworks: dict[str, tuple[str, ...]] = {}
    for fmt, names in fws.items():
        if not isinstance(names, list | tuple) or not names or any(n not in CPU_FRAMEWORKS for n in names):
            raise ConfigError(f"registration.frameworks.{fmt}", f"must be a non-empty list of {', '.join(CPU_FRAMEWORKS)}")
        if fmt == "onnx" and "torch-fp32" in names:
            raise ConfigError("registration.frameworks.onnx", "an ONNX model has no torch form; use onnx-fp32, onnx-int8")
        frameworks[fmt] = tuple(names)
    exporter = _get(r, "exporter")
    if exporter not in ("dynamo", "torchscript"):
        raise ConfigError("registration.exporter", f"must be dynamo or torchscript, got {exporter!r}")
    measure = MeasureConfig(reps=_num(r, "reps", 1, True), min_reps=_num(r, "min_reps", 1, True),
                            warmup=_num(r, "warmup", 0, True), rounds=_num(r, "rounds", 1, True),
                            time_budget_s_per_point=float(_num(r, "time_budget_s_per_point", 0.0)))  # fmt: skip
    if measure.reps < measure.min_reps:
        raise ConfigError("registration.reps", f"must be >= min_reps ({measure.min_reps}), got {measure.reps}")
    return RegistrationSettings(
        enabled=enabled,
        directory=Path(directory) if directory else default_cache_dir() / "registry",
        max_upload_bytes=_num(r, "max_upload_bytes", 1, True),
        max_pending_jobs=_num(r, "max_pending_jobs", 1, True),
        check_timeout_s=float(_num(r, "check_timeout_s", 0.0)),
        job_timeout_s=float(_num(r, "job_timeout_s", 0.0)),
        keep_finished_jobs=_num(r, "keep_finished_jobs", 1, True),
        exporter=exporter,
        frameworks=frameworks,
        threads=_ints(r, "threads"),
        batches=_ints(r, "batches"),
        max_batches=_ints(r, "max_batches"),
        measure=measure,
        max_run_s=float(_num(r, "max_run_s", 0.0)),
        noise_tolerance=float(_num(r, "noise_tolerance", 0.0)),
        noise_retries=_num(r, "noise_retries", 0, True),
        agreement_samples=_num(r, "agreement_samples", 1, True),
        example_seed=_num(r, "example_seed", 0, True),
    )
