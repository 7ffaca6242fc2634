"""``infaas-real profile zoo=<digits|imagenet> [key=value ...]``: generate, profile, write a table.

Overrides are Hydra-style, composed with ``configs/profile.yaml`` and ``configs/zoo/``::

    infaas-real profile zoo=digits
    infaas-real profile zoo=imagenet models=[resnet18,mobilenet_v3_small]
    infaas-real profile zoo=digits out=catalogs/digits.csv
    infaas-real profile zoo=imagenet device=cuda out=catalogs/imagenet-gpu.csv
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from infaas_core.errors import ConfigError
from infaas_real.profiling import hostinfo
from infaas_real.profiling.artifacts import ArtifactStore, default_cache_dir
from infaas_real.profiling.measure import MeasureConfig
from infaas_real.profiling.run import ProfilePlan, Profiler, write_table
from infaas_real.zoo import ZOO_NAMES, get_zoo

CPU_FRAMEWORKS = ("torch-fp32", "onnx-fp32", "onnx-int8")
GPU_FRAMEWORKS = ("torch-fp16", "torch-bf16", "tensorrt-fp16")


def compose(overrides: list[str]) -> dict[str, Any]:
    """The profile config as a plain dict (Hydra compose API on the installed configs; writes nothing)."""
    from infaas_edge import compose as edge_compose

    return edge_compose("profile", overrides)


def _device(cfg: dict[str, Any]) -> str:
    device = str(cfg["device"])
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device", f"'{device}' asked for but torch sees no CUDA GPU")
        return device
    raise ConfigError("device", f"must be cpu, cuda or auto, got '{device}'")


def _ints(cfg: dict[str, Any], key: str, default: Any) -> tuple[int, ...]:
    value = cfg[key] if cfg.get(key) is not None else default
    try:
        out = tuple(sorted({int(v) for v in value}))
    except (TypeError, ValueError):
        raise ConfigError(key, f"must be a list of integers, got {value!r}") from None
    if not out or out[0] < 1:
        raise ConfigError(key, f"must be positive integers, got {value!r}")
    return out


def build_plan(cfg: dict[str, Any]) -> ProfilePlan:
    """Validate the composed config into a :class:`ProfilePlan` (zoo defaults fill nulls)."""
    zd = cfg["zoo"].get("profile", {})
    device = _device(cfg)
    kind = "cpu" if device == "cpu" else "cuda"
    known = CPU_FRAMEWORKS if kind == "cpu" else GPU_FRAMEWORKS
    frameworks = tuple(cfg["frameworks"] or zd["frameworks"][kind])
    for fw in frameworks:
        if fw not in known:
            raise ConfigError("frameworks", f"'{fw}' does not run on {kind}; known: {', '.join(known)}")
    threads = _ints(cfg, "threads", zd.get("threads", [1]))
    cap = hostinfo.usable_cpus()
    threads = tuple(t for t in threads if t <= cap) or (1,)
    batches = _ints(cfg, "batches", zd["batches"][kind])
    max_batches = _ints(cfg, "max_batches", zd["max_batches"][kind])

    def pick(key: str) -> Any:
        return cfg[key] if cfg.get(key) is not None else zd[key]

    measure = MeasureConfig(reps=int(pick("reps")), min_reps=int(pick("min_reps")),
                            warmup=int(pick("warmup")), rounds=int(pick("rounds")),
                            time_budget_s_per_point=float(pick("time_budget_s_per_point")))  # fmt: skip
    if measure.min_reps < 1 or measure.reps < measure.min_reps:
        raise ConfigError("reps", f"need 1 <= min_reps <= reps, got {measure.min_reps}, {measure.reps}")
    models = cfg.get("models")
    if models is not None and not isinstance(models, list):
        models = [models]
    return ProfilePlan(frameworks=frameworks, threads=threads, batches=batches, max_batches=max_batches,
                       measure=measure, max_run_s=float(pick("max_run_s")), device=device,
                       noise_tolerance=float(cfg["noise_tolerance"]), noise_retries=int(cfg["noise_retries"]),
                       remeasure_noisy=bool(cfg["remeasure_noisy"]),
                       models=tuple(str(m) for m in models) if models else None)  # fmt: skip


def main(overrides: list[str]) -> int:
    t0 = time.perf_counter()
    cfg = compose(list(overrides))
    zoo_name = cfg["zoo"]["name"]
    if zoo_name not in ZOO_NAMES:
        raise ConfigError("zoo", f"unknown zoo '{zoo_name}'; known: {', '.join(ZOO_NAMES)}")
    plan = build_plan(cfg)
    try:
        zoo = get_zoo(zoo_name, **(cfg["zoo"].get("options") or {}))
    except TypeError as exc:
        raise ConfigError("zoo.options", str(exc)) from None
    cache = Path(cfg["cache_dir"]) if cfg.get("cache_dir") else default_cache_dir()
    store = ArtifactStore(zoo, cache, exporter=str(cfg["exporter"]))
    from tqdm import tqdm

    bar = tqdm(total=0, unit="runner", disable=not cfg["progress"], file=sys.stderr)
    profiler = Profiler(zoo, plan, store, cache, log=bar.write)
    out = Path(cfg["out"]) if cfg.get("out") else Path("profiles") / f"{zoo_name}-{profiler.machine}.csv"
    bar.total = len(profiler.tasks())
    bar.refresh()
    result = profiler.run(progress=bar)
    bar.close()
    result.meta["config"] = {k: v for k, v in cfg.items() if k != "zoo"} | {"zoo": zoo_name}
    result.meta["measured_runners"] = result.measured
    result.meta["cached_runners"] = result.cached
    if not result.rows:
        print(f"infaas-real profile: nothing measured ({len(result.failures)} failed)", file=sys.stderr)
        return 1
    write_table(result.rows, result.meta, out)
    n_variants = len({r["variant"] for r in result.rows})
    print(f"wrote {out}: {n_variants} variants, {len(result.rows)} rows; runners measured={result.measured} "
          f"cached={result.cached} failed={len(result.failures)}; {time.perf_counter() - t0:.1f}s")  # fmt: skip
    for msg in result.failures:
        print(f"  skipped: {msg}", file=sys.stderr)
    return 0
