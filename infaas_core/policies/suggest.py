"""Why a query cannot be served, and the nearest requirement that could be (paper §4.1,
Algorithm 1 line 8 ``suggestVariant``; the code only answers "No model can satisfy this
request. Try a different accuracy/latency", INFAAS.md §2.8).

The suggestion is computed from the catalog on the hardware the cluster's instance types
offer, with the same feasibility test selection uses: relax the accuracy at the given SLO
("min_accuracy <= 0.76 at latency_slo_ms 50"), or relax the SLO at the given accuracy
("latency_slo_ms >= 120 at min_accuracy 0.80"); both when both exist.
"""

from __future__ import annotations

import math
from typing import Protocol

from infaas_core.catalog import Catalog
from infaas_core.model import CPU, Requirements, Variant
from infaas_core.policies.common import EstimateConfig


class Feasibility(Protocol):
    """What a rejection needs to know of selection (the selector implements it; this module
    imports nothing of selection's, so the two do not depend on each other)."""

    est: EstimateConfig
    offered: frozenset[str]

    @property
    def catalog(self) -> Catalog: ...
    @property
    def tight_slo_ms(self) -> float: ...
    def excludes_cpu_when_tight(self, form: str) -> bool: ...
    def serves(self, v: Variant, slo_ms: float, batch: int = 1, form: str = "model") -> bool: ...


def _up(x: float) -> float:
    """Round up to 0.1 ms so the suggested SLO is really enough."""
    return math.ceil(x * 10.0 - 1e-9) / 10.0


def _down(x: float) -> float:
    return math.floor(x * 1000.0 + 1e-9) / 1000.0


def _needed_slo_ms(sel: Feasibility, v: Variant, batch: int, form: str) -> float:
    est = sel.est.latency_ms(v, batch)
    if v.hardware == CPU and sel.excludes_cpu_when_tight(form):  # then CPU needs an SLO above the tight bound
        est = max(est, sel.tight_slo_ms + 0.1)
    return _up(est)


def rejection(sel: Feasibility, req: Requirements, batch: int) -> tuple[str, str | None]:
    """``(reason, suggestion)`` for requirements with no feasible variant."""
    cat = sel.catalog
    if req.form == "variant":
        if req.variant not in cat:
            return f"unknown variant '{req.variant}'", None
        v = cat.get(req.variant or "")
        if v.max_batch < batch:
            return f"variant {v.name} takes at most {v.max_batch} inputs, query has {batch}", f"batch <= {v.max_batch}"
        return f"variant {v.name} needs {v.hardware}, which no instance type of this cluster offers", None
    what = f"task '{req.task}'" if req.form == "task" else f"model '{req.model}'"
    pool = cat.by_task(req.task or "") if req.form == "task" else cat.by_model(req.model or "")
    if not pool:
        known = cat.tasks if req.form == "task" else cat.models
        return f"unknown {what}; known: {', '.join(known)}", None
    on_hw = [v for v in pool if v.hardware in sel.offered]
    if not on_hw:
        return f"no variant of {what} runs on this cluster's hardware ({', '.join(sorted(sel.offered))})", None
    fits = [v for v in on_hw if v.max_batch >= batch]
    if not fits:
        mb = max(v.max_batch for v in on_hw)
        return f"no variant of {what} takes a batch of {batch}", f"batch <= {mb}"
    slo = req.latency_slo_ms
    acc_ok = [v for v in fits if v.accuracy >= req.min_accuracy]
    lat_ok = [v for v in fits if sel.serves(v, req.latency_slo_ms, batch, req.form)]
    hints: list[str] = []
    if lat_ok and req.form == "task":
        best_acc = max(v.accuracy for v in lat_ok)
        hints.append(f"min_accuracy <= {_down(best_acc)} at latency_slo_ms {slo:g}")
    if acc_ok:
        need = min(_needed_slo_ms(sel, v, batch, req.form) for v in acc_ok)
        at = f" at min_accuracy {req.min_accuracy:g}" if req.form == "task" else ""
        hints.append(f"latency_slo_ms >= {need:g}{at}")
    if not acc_ok:
        top = max(v.accuracy for v in fits)
        reason = f"no variant of {what} reaches min_accuracy {req.min_accuracy:g} (best: {top:g})"
    elif not lat_ok or all(v.accuracy < req.min_accuracy for v in lat_ok):
        reason = (
            f"no variant of {what} with accuracy >= {req.min_accuracy:g} meets "
            f"latency_slo_ms {slo:g} at batch {batch}"
        )
    else:
        reason = (
            f"the {what} variants that meet accuracy {req.min_accuracy:g} and latency_slo_ms "
            f"{slo:g} fall outside the search budget"
        )
    return reason, (" or ".join(hints) if hints else None)
