"""The ``imagenet`` zoo: torchvision architectures at 224×224.

Weights are random by default (``weights=None``, seeded): latency, memory and load time do
not depend on weight values, and nothing is downloaded. A user can give their own weights
as a ``state_dict`` file per model (``weights: {resnet50: /path/to/resnet50.pt}``); the
file's content hash goes into the artifact cache key.

Accuracy is the published ImageNet-1K top-1 that torchvision ships in its weights metadata
(``get_model_weights(name).DEFAULT.meta["_metrics"]["ImageNet-1K"]["acc@1"]``), read at run
time — metadata only. With random weights it is the accuracy the architecture reaches once
trained, which is what a model-less selector trades against latency.

That figure holds only at the resolution torchvision measured it at (the centre crop of the
weights' ``transforms()``). The zoo runs every model at 224 px, so the default architectures
are those whose published accuracy is a 224-px figure; ``efficientnet_b1`` … ``b4`` (240, 288,
300, 380 px — ``RESOLUTION_MISMATCHED``) were dropped, and the profiler refuses a row whose
accuracy resolution differs from the input (``check_accuracy_resolution``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from infaas_core.errors import ConfigError
from infaas_real.zoo.base import Zoo, ZooModel, file_sha256

TASK = "classification-imagenet-224"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
"""torchvision's ImageNet normalisation (``ImageClassification`` transforms' defaults)."""

ARCHITECTURES: tuple[str, ...] = (
    "mobilenet_v3_small",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "regnet_y_400mf",
    "efficientnet_b0",
    "resnet18",
    "resnet34",
    "densenet121",
    "resnet50",
    "convnext_tiny",
    "resnet101",
    "resnet152",
    "vgg16",
    "vit_b_16",
)
"""Default architectures, roughly by compute (GFLOPs) ascending: those whose torchvision
accuracy was measured at 224 px, the zoo's input."""

RESOLUTION_MISMATCHED: dict[str, int] = {
    "efficientnet_b1": 240,
    "efficientnet_b2": 288,
    "efficientnet_b3": 300,
    "efficientnet_b4": 380,
}
"""Architectures dropped from the defaults: the resolution (px, torchvision's
``weights.transforms().crop_size``) their published accuracy was measured at, not 224."""

NON_CONVOLUTIONAL = frozenset({"vit_b_16"})


def published_top1(arch: str) -> float:
    """torchvision's published ImageNet-1K top-1 of ``arch``'s default weights (fraction)."""
    from torchvision.models import get_model_weights

    meta = get_model_weights(arch).DEFAULT.meta  # type: ignore[attr-defined]
    return float(meta["_metrics"]["ImageNet-1K"]["acc@1"]) / 100.0


def published_resolution(arch: str) -> int:
    """The input side (px) torchvision's published accuracy of ``arch`` was measured at."""
    from torchvision.models import get_model_weights

    crop = get_model_weights(arch).DEFAULT.transforms().crop_size  # type: ignore[attr-defined]
    return int(crop[0])


class ImagenetZoo(Zoo):
    """torchvision classifiers with random (seeded) or user-supplied weights."""

    name = "imagenet"
    task = TASK
    input_shape = (3, 224, 224)
    classes = 1000

    def uint8_to_input(self, x: np.ndarray) -> np.ndarray:
        """Raw RGB pixels (0..255) -> 0..1, normalised with the ImageNet mean and std that
        torchvision's classification weights expect (``weights.transforms()``)."""
        out = x.astype(np.float32) / np.float32(255.0)
        out -= IMAGENET_MEAN
        out /= IMAGENET_STD
        return out

    def __init__(
        self,
        architectures: list[str] | tuple[str, ...] | None = None,
        weights: Mapping[str, str] | None = None,
        seed: int = 0,
        agreement_samples: int = 16,
        calibration_samples: int = 4,
    ) -> None:
        self.architectures = tuple(architectures or ARCHITECTURES)
        self.weights = {k: Path(v) for k, v in (weights or {}).items()}
        self.seed = int(seed)
        self.agreement_samples = int(agreement_samples)
        self.calibration_samples = int(calibration_samples)
        for arch, path in self.weights.items():
            if not path.is_file():
                raise ConfigError(f"zoo.weights.{arch}", f"no such state_dict file: {path}")

    def config_key(self) -> dict[str, Any]:
        return {
            **super().config_key(),
            "agreement_samples": self.agreement_samples,
            "calibration_samples": self.calibration_samples,
        }

    def models(self) -> tuple[ZooModel, ...]:
        out = []
        for arch in self.architectures:
            path = self.weights.get(arch)
            key: dict[str, Any] = (
                {"weights": "state_dict", "sha256": file_sha256(path)}
                if path
                else {"weights": "random", "seed": self.seed}
            )
            out.append(
                ZooModel(
                    name=arch,
                    build=self._builder(arch, path),
                    weights_key=key,
                    accuracy=published_top1(arch),
                    convolutional=arch not in NON_CONVOLUTIONAL,
                    accuracy_source="published: torchvision weights metadata ImageNet-1K acc@1",
                    accuracy_resolution=published_resolution(arch),
                )
            )
        return tuple(out)

    def _builder(self, arch: str, path: Path | None) -> Callable[[], Any]:
        seed = self.seed

        def build() -> Any:
            import torch
            from torchvision.models import get_model

            torch.manual_seed(seed)
            model = get_model(arch, weights=None)
            if path is not None:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()

        return build

    def _random(self, n: int, salt: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, salt])
        return rng.standard_normal((n, *self.input_shape), dtype=np.float32)

    def example_input(self, batch: int) -> np.ndarray:
        return self._random(batch, 1)

    def agreement_inputs(self) -> np.ndarray:
        return self._random(self.agreement_samples, 2)

    def calibration_inputs(self) -> np.ndarray:
        return self._random(self.calibration_samples, 3)
