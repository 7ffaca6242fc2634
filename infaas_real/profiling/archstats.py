"""Per-architecture compute and size: GFLOPs of one forward at batch 1 and parameter count.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs = 2 × multiply-adds) on
the zoo's models; written to ``catalogs/imagenet-arch-stats.json`` by
``python -m infaas_real.profiling.archstats`` so the modeled rows regenerate without torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from infaas_real.profiling.artifacts import REPO_ROOT

STATS_PATH = REPO_ROOT / "catalogs" / "imagenet-arch-stats.json"


def count(arch: str) -> dict[str, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models import get_model

    model = get_model(arch, weights=None).eval()
    mode = FlopCounterMode(display=False)
    with mode, torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    params = sum(p.numel() for p in model.parameters())
    return {"gflops": mode.get_total_flops() / 1e9, "params_m": params / 1e6}


def main(argv: list[str] | None = None) -> int:
    from infaas_real.zoo.imagenet import ARCHITECTURES

    out = Path((argv or sys.argv[1:] or [str(STATS_PATH)])[0])
    stats = {arch: count(arch) for arch in ARCHITECTURES}
    out.write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}: {len(stats)} architectures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
