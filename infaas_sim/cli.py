"""``infaas-sim`` (also ``python -m infaas_sim``): the Hydra application.

Composes ``configs/config.yaml`` (groups ``policy``, ``trace``, ``cluster``, ``catalog``,
``apps``, ``sim``; ``seed``), found as the installed package ``infaas_configs``
(:func:`infaas_edge.config_dir`, so a wheel install needs no source tree), runs one simulation
per job, writes ``summary.json``, ``queries.parquet`` (unless ``sim.stream``) and
``timeline.parquet`` into the Hydra run directory and prints a compact summary. Bad input — a
broken profile table, trace file or config value, or a config that does not compose — prints
one line naming the file or key and the reason, and exits with status 2 (no traceback).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infaas_core.errors import InfaasError
from infaas_edge import config_dir

CONFIG_DIR = config_dir()
CONFIG_NAME = "config"
EXIT_BAD_INPUT = 2
# Hydra flags after which composing the config ourselves would be wrong or useless
_HYDRA_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve",
                     "--shell-completion", "-sc", "--version")  # fmt: skip


def _fail(message: str) -> None:
    print(f"infaas-sim: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def check_composes(args: Sequence[str]) -> str | None:
    """Compose the config for these command-line arguments — for a sweep, enough jobs to use
    every swept value once — and return a one-line reason if one does not compose."""
    if any(a.split("=")[0] in _HYDRA_INFO_FLAGS for a in args):
        return None
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return None  # other Hydra flags (--config-dir, ...): leave them to Hydra
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    overrides = [a for a in args if not a.startswith("-") and not a.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        jobs = [list(j) for batch in BasicSweeper.split_arguments(parsed, None) for j in batch] or [[]]
        # compose a set of jobs that uses every swept value at least once
        seen: set[str] = set()
        needed: list[list[str]] = []
        for job in jobs:
            if not needed or not seen.issuperset(job):
                needed.append(job)
                seen.update(job)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            for job in needed:
                cfg = compose(config_name=CONFIG_NAME, overrides=job)
                OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # Hydra / OmegaConf composition errors have no common base
        return "config: " + " ".join(str(e).split())
    finally:
        GlobalHydra.instance().clear()
    return None


def format_summary(s: Mapping[str, Any]) -> str:
    """A compact, human-readable table of one run's summary."""

    def f(x: Any, nd: int = 1) -> str:
        return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:,.{nd}f}"

    lat = s["latency_ms"]
    lines = [
        f"policy {s['policy']} | trace {s['trace']} | seed {s['seed']} | {s['duration_s']:g} s simulated | "
        f"{s['queries']:,} queries in {s['wall_s']:.2f} s wall ({s['queries_per_wall_s']:,.0f} queries/s)",
        f"  completed {s['completed']:,}  late {s['late']:,}  dropped {s['dropped']:,}  rejected {s['rejected']:,}  "
        f"violation rate {100 * s['violation_rate']:.2f}%  goodput {f(s['goodput_qps'])} q/s",
        f"  latency ms: mean {f(lat['mean'], 2)}  p50 {f(lat['p50'], 2)}  p90 {f(lat['p90'], 2)}  "
        f"p99 {f(lat['p99'], 2)} ({s.get('latency_source', '')})",
        f"  accuracy {f(s['mean_accuracy'], 4)}  cost ${s['cost_usd']:.4f}  "
        f"(${f(s['cost_per_million_queries'], 2)} per million)  peak workers {s.get('peak_workers', {})}",
    ]
    apps = s.get("per_app") or {}
    if apps:
        w = max(len(n) for n in apps)
        lines.append(f"  {'app':<{w}}  {'queries':>10}  {'viol %':>7}  {'p50 ms':>8}  {'p99 ms':>8}  {'accuracy':>8}  {'slo ms':>7}")
        for name, a in apps.items():
            lines.append(
                f"  {name:<{w}}  {a['queries']:>10,}  {100 * a['violation_rate']:>7.2f}  {f(a['latency_ms']['p50'], 2):>8}"
                f"  {f(a['latency_ms']['p99'], 2):>8}  {f(a['mean_accuracy'], 4):>8}  {f(a['slo_ms'], 0):>7}"
            )
    off = s.get("offline")
    if off:
        done = off.get("completion_s")
        lines.append(
            f"  offline: {off['inputs_done']:,} of {off['inputs']:,} inputs, {off['jobs_finished']} of "
            f"{len(off['jobs'])} jobs finished" + (f" (slowest {done:,.1f} s)" if done is not None else "")
            + f", busy {off['busy_replica_s']:,.1f} replica-s, {100 * off['cost_share']:.1f}% of the cost, "
            f"paused {off['paused_s']:,.1f} s"
        )
    refused = s.get("refused_actions") or {}
    if refused:
        lines.append(f"  refused actions: {refused}")
    return "\n".join(lines)


def run_job(cfg_container: Mapping[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """One job: simulate the composed config and write its results into ``run_dir``."""
    from infaas_sim.config import inputs_from_config
    from infaas_sim.run import simulate
    from infaas_sim.sweep import mark_done, should_skip

    resume = bool((cfg_container.get("sweep") or {}).get("resume", False))
    if resume and should_skip(run_dir, cfg_container):
        print(f"infaas-sim: {run_dir}: finished results for this config exist; skipped (sweep.resume=true)")
        return None
    inputs = inputs_from_config(cfg_container)
    result = simulate(inputs)
    result.write(run_dir)
    if resume:
        mark_done(run_dir, cfg_container)
    print(format_summary(result.summary))
    print(f"  results: {run_dir}")
    return result.summary


def _task(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        container = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(container, dict)
        run_job({str(k): v for k, v in container.items()}, Path(HydraConfig.get().runtime.output_dir))
    except (InfaasError, OmegaConfBaseException) as e:
        _fail(str(e))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``infaas-sim`` console script."""
    import hydra

    args = list(sys.argv[1:] if argv is None else argv)
    problem = check_composes(args)
    if problem is not None:
        _fail(problem)
    if argv is not None:
        sys.argv = [sys.argv[0], *args]
    app = hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base="1.3")(_task)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
