"""The ``digits`` zoo: small torch classifiers of growing capacity on scikit-learn's digits.

Data: ``sklearn.datasets.load_digits()`` (1,797 8×8 images bundled with scikit-learn, no
download), split once into train / held-out test with a fixed stratified split. Every model
takes the 64 raw features exactly as ``load_digits().data`` gives them (float32, 0..16) and
scales them *inside* the model, so the served input is raw. Training is full-batch Adam with
a fixed seed on one thread — deterministic and a few seconds on a CPU.

The weakest model, ``linear_pool4``, is a real low-capacity design point: a linear
classifier on the image average-pooled to 4×4 (16 features) — the kind of tiny model one
would pick for a very tight latency budget. Its accuracy is what it measures, not tuned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

from infaas_real.zoo.base import Zoo, ZooModel

TASK = "classification-digits"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Full-batch training of one digits model (all of it goes into the cache key)."""

    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass(frozen=True, slots=True)
class SplitConfig:
    test_fraction: float = 0.3
    seed: int = 0


def _arch(name: str) -> Any:
    """The untrained architecture ``name`` (torch imported lazily)."""
    from torch import nn

    class Scale(nn.Module):
        """Raw 0..16 features -> 0..1, optionally as a 1×8×8 image."""

        def __init__(self, image: bool) -> None:
            super().__init__()
            self.image = image

        def forward(self, x: Any) -> Any:
            x = x * (1.0 / 16.0)
            return x.reshape(-1, 1, 8, 8) if self.image else x

    class SingularValues(nn.Module):
        """Image -> its 64 pixels and the 8 singular values of the 8×8 matrix (shape features).
        ONNX has no SVD operator, so this model runs in torch but cannot be exported."""

        def forward(self, x: Any) -> Any:
            import torch

            return torch.cat([x.flatten(1), torch.linalg.svdvals(x[:, 0])], dim=1)

    if name == "linear_pool4":
        return nn.Sequential(Scale(True), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    if name == "svd_linear":
        return nn.Sequential(Scale(True), SingularValues(), nn.Linear(64 + 8, 10))
    if name == "logreg":
        return nn.Sequential(Scale(False), nn.Linear(64, 10))
    if name == "mlp_small":
        return nn.Sequential(Scale(False), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    if name == "mlp_large":
        return nn.Sequential(
            Scale(False), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
        )
    if name == "cnn_small":
        return nn.Sequential(
            Scale(True), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
        )  # fmt: skip
    if name == "cnn_large":
        return nn.Sequential(
            Scale(True), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
        )  # fmt: skip
    raise KeyError(name)


ARCHITECTURES: tuple[tuple[str, bool], ...] = (
    ("linear_pool4", False),
    ("logreg", False),
    ("mlp_small", False),
    ("mlp_large", False),
    ("cnn_small", True),
    ("cnn_large", True),
)
"""(name, convolutional), smallest capacity first."""

EXTRA_ARCHITECTURES: dict[str, bool] = {"svd_linear": False}
"""Opt-in models (``extra_models``): ``svd_linear`` adds the image's singular values as
features; it serves in torch but its ONNX export fails (no SVD operator), which exercises
the profiler's skip-and-continue path on a real model."""


class DigitsZoo(Zoo):
    """Six classifiers from a 170-parameter linear model to a two-layer CNN."""

    name = "digits"
    task = TASK
    input_shape = (64,)
    classes = 10

    def __init__(
        self,
        train: TrainConfig | dict[str, Any] | None = None,
        split: SplitConfig | dict[str, Any] | None = None,
        calibration_size: int = 256,
        extra_models: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.train_config = train if isinstance(train, TrainConfig) else TrainConfig(**(train or {}))
        self.split_config = split if isinstance(split, SplitConfig) else SplitConfig(**(split or {}))
        self.calibration_size = int(calibration_size)
        unknown = [m for m in extra_models if m not in EXTRA_ARCHITECTURES]
        if unknown:
            from infaas_core.errors import UnknownNameError

            raise UnknownNameError("zoo.options.extra_models", unknown[0], tuple(EXTRA_ARCHITECTURES))
        self.extra_models = tuple(extra_models)

    @cached_property
    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        data = load_digits()
        x = data.data.astype(np.float32)
        y = data.target.astype(np.int64)
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=self.split_config.test_fraction, stratify=y,
            random_state=self.split_config.seed,
        )  # fmt: skip
        return x_tr, x_te, y_tr, y_te

    def config_key(self) -> dict[str, Any]:
        return {
            **super().config_key(),
            "split": asdict(self.split_config),
            "calibration_size": self.calibration_size,
        }

    def models(self) -> tuple[ZooModel, ...]:
        return tuple(
            ZooModel(
                name=name,
                build=self._builder(name),
                weights_key={"trained": "digits-full-batch-adam", **asdict(self.train_config)},
                accuracy=None,
                convolutional=conv,
                accuracy_source="measured: held-out stratified split",
            )
            for name, conv in (*ARCHITECTURES, *((m, EXTRA_ARCHITECTURES[m]) for m in self.extra_models))
        )

    def _builder(self, name: str) -> Callable[[], Any]:
        def build() -> Any:
            return self.train(name)

        return build

    def train(self, name: str) -> Any:
        """Train architecture ``name`` on the training split (deterministic; one thread)."""
        import torch

        cfg = self.train_config
        x_tr, _, y_tr, _ = self._split
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch.manual_seed(cfg.seed)
            model = _arch(name)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
            loss_fn = torch.nn.CrossEntropyLoss()
            model.train()
            for _ in range(cfg.epochs):
                opt.zero_grad()
                loss = loss_fn(model(xt), yt)
                loss.backward()
                opt.step()
        finally:
            torch.set_num_threads(threads)
        return model.eval()

    def example_input(self, batch: int) -> np.ndarray:
        x_te = self._split[1]
        idx = np.arange(batch) % len(x_te)
        return np.ascontiguousarray(x_te[idx])

    def eval_data(self) -> tuple[np.ndarray, np.ndarray]:
        _, x_te, _, y_te = self._split
        return x_te, y_te

    def agreement_inputs(self) -> np.ndarray:
        return self._split[1]

    def calibration_inputs(self) -> np.ndarray:
        return self._split[0][: self.calibration_size]
