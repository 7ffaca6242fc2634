"""The zoo protocol: what the variant generator and the runtime need from a model family."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True, slots=True)
class ZooModel:
    """One trained model of a zoo.

    ``build()`` returns the model in eval mode with its final weights (training it if the
    zoo trains its models). ``weights_key`` is everything that determines those weights
    (training config and seed, weights file and its content hash...) and goes into the
    artifact cache key. ``accuracy`` is the published top-1, or ``None`` when the profiler
    measures it on the zoo's labelled split. ``convolutional`` marks CNNs (their per-item
    latency should fall as the batch grows). ``accuracy_resolution`` is the input side
    length (px) at which a published ``accuracy`` was measured (``None``: measured by the
    profiler on the zoo's own inputs); :func:`check_accuracy_resolution` refuses a row whose
    accuracy was measured at another resolution than the zoo's input.
    """

    name: str
    build: Callable[[], nn.Module] = field(repr=False, compare=False)
    weights_key: Mapping[str, Any]
    accuracy: float | None = None
    convolutional: bool = False
    accuracy_source: str = ""
    accuracy_resolution: int | None = None


class Zoo(ABC):
    """A named family of models serving one task with one input shape."""

    name: str
    task: str
    input_shape: tuple[int, ...]
    """Per-item input shape (``(64,)`` for digits, ``(3, 224, 224)`` for imagenet)."""
    classes: int
    """Class scores per item in an answer."""

    def uint8_to_input(self, x: np.ndarray) -> np.ndarray:
        """Raw UINT8 input ``(batch, *input_shape)`` -> the float32 input the models take
        (the server accepts UINT8 requests through this). Default: the values as they are."""
        return x.astype(np.float32)

    @abstractmethod
    def models(self) -> tuple[ZooModel, ...]:
        """Every model of the zoo, smallest first."""

    def model(self, name: str) -> ZooModel:
        from infaas_core.errors import UnknownNameError

        for m in self.models():
            if m.name == name:
                return m
        raise UnknownNameError(f"zoo.{self.name}.models", name, [m.name for m in self.models()])

    @abstractmethod
    def example_input(self, batch: int) -> np.ndarray:
        """A float32 input batch of shape ``(batch, *input_shape)`` (deterministic)."""

    def eval_data(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Held-out ``(X, y)`` with labels, or ``None`` when the zoo has none."""
        return None

    @abstractmethod
    def agreement_inputs(self) -> np.ndarray:
        """Inputs on which a variant's top-1 is compared with the fp32 reference."""

    @abstractmethod
    def calibration_inputs(self) -> np.ndarray:
        """Inputs for static int8 calibration (never the evaluation split)."""

    def config_key(self) -> Mapping[str, Any]:
        """What of the zoo's own configuration changes its artifacts (hashed into the key)."""
        return {"zoo": self.name, "task": self.task, "input_shape": list(self.input_shape)}


def check_accuracy_resolution(zoo: Zoo, model: ZooModel) -> None:
    """Raise :class:`~infaas_core.errors.ConfigError` when ``model``'s published accuracy was
    measured at another input resolution than ``zoo`` runs it at (a row would carry an
    accuracy the variant does not reach: e.g. torchvision's EfficientNet-B4 83.4 % is at
    380 px)."""
    from infaas_core.errors import ConfigError

    res = model.accuracy_resolution
    side = zoo.input_shape[-1]
    if res is not None and res != side:
        raise ConfigError(
            f"zoo.{zoo.name}.models.{model.name}",
            f"published accuracy was measured at {res} px but the zoo runs it at {side} px; "
            "refusing to emit a row with an accuracy for another resolution",
        )


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (weights files and built artifacts)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
