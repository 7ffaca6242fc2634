"""Regenerate the small traces bundled in this folder, byte for byte.

    python traces/make_traces.py           # rewrite every file
    python traces/make_traces.py --check   # exit 1 if a file differs from what it would write

Each trace is a pure function of the generator parameters and seed below (numpy's PCG64
``default_rng``) and of fixed text formatting, so the output is identical on every machine
with the same numpy random streams.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from infaas_core.workload import generate  # noqa: E402


def bursty_gamma_cv4_200qps_60s() -> str:
    """Gamma renewal arrivals, CV 4, 200 qps mean, 60 s (an ``arrivals_csv`` file)."""
    t = generate("gamma", rate_qps=200, duration_s=60, seed=2024, cv=4)
    lines = [
        "# made by traces/make_traces.py: generate('gamma', rate_qps=200, duration_s=60, seed=2024, cv=4)",
        "arrival_s",
        *(f"{x:.6f}" for x in t.arrivals_s),
    ]
    return "\n".join(lines) + "\n"


def diurnal_shape() -> str:
    """A day of request rates at 5-minute steps (288 lines, mean 100 qps): a night trough,
    a morning rise and an evening peak (two harmonics) with 5% multiplicative noise."""
    rng = np.random.default_rng(7)
    steps = 288
    hours = np.arange(steps) * 24.0 / steps
    shape = (
        1.0
        - 0.55 * np.cos(2 * math.pi * (hours - 2.0) / 24.0)
        - 0.15 * np.cos(4 * math.pi * (hours - 8.0) / 24.0)
    )
    shape *= 1.0 + 0.05 * rng.standard_normal(steps)
    rates = 100.0 * shape / shape.mean()
    lines = [
        "# made by traces/make_traces.py: one rate (queries/s) per 5-minute step of a day, mean 100;",
        "# load with format=rate_shape and a step_s of your choice (step_s=300 replays it in real time)",
        *(f"{max(r, 0.0):.3f}" for r in rates),
    ]
    return "\n".join(lines) + "\n"


TRACES: dict[str, Callable[[], str]] = {
    "bursty_gamma_cv4_200qps_60s.csv": bursty_gamma_cv4_200qps_60s,
    "diurnal_shape.txt": diurnal_shape,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    bad = 0
    for name, make in TRACES.items():
        path = HERE / name
        text = make()
        if args.check:
            same = path.exists() and path.read_text(encoding="utf-8") == text
            print(f"{'ok  ' if same else 'DIFF'} {name}")
            bad += not same
        else:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {name} ({len(text.encode())} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
