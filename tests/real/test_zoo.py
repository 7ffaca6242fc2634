"""Zoo rules: digits serves the raw 64 features and trains deterministically; imagenet has
>= 15 architectures whose accuracy is torchvision's published top-1 (metadata only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from infaas_core.errors import UnknownNameError
from infaas_real.zoo import get_zoo, zoo_for_task


def test_digits_input_is_raw_load_digits_features() -> None:
    from sklearn.datasets import load_digits

    zoo = get_zoo("digits")
    x = zoo.example_input(4)
    assert x.shape == (4, 64) and x.dtype == np.float32
    assert x.max() <= 16 and x.min() >= 0
    raw = load_digits().data.astype(np.float32)
    assert all((raw == row).all(axis=1).any() for row in x)  # every served row is a real image


def test_digits_split_is_held_out_and_stratified() -> None:
    zoo = get_zoo("digits")
    x_te, y_te = zoo.eval_data()
    assert len(x_te) == 540 and set(np.unique(y_te)) == set(range(10))
    calib = zoo.calibration_inputs()
    assert not (calib[:, None, :] == x_te[None, :, :]).all(axis=2).any()  # calibration never sees test rows


def test_digits_training_is_deterministic() -> None:
    zoo = get_zoo("digits")
    a = zoo.model("logreg").build().state_dict()
    b = zoo.model("logreg").build().state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_digits_zoo_has_five_or_more_models_of_growing_capacity() -> None:
    names = [m.name for m in get_zoo("digits").models()]
    assert len(names) >= 5 and names[0] == "linear_pool4" and "cnn_large" in names


def test_imagenet_accuracy_is_published_top1_from_metadata() -> None:
    zoo = get_zoo("imagenet")
    models = zoo.models()
    assert len(models) >= 15
    acc = {m.name: m.accuracy for m in models}
    assert acc["resnet50"] == pytest.approx(0.80858)  # torchvision IMAGENET1K_V2 metadata
    assert all(a is not None and 0.5 < a < 0.9 for a in acc.values())
    assert zoo.example_input(2).shape == (2, 3, 224, 224)


def test_unknown_zoo_and_task_name_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="digits"):
        get_zoo("cifar")
    assert zoo_for_task("classification-imagenet-224") == "imagenet"


def test_default_imagenet_architectures_have_224px_accuracy() -> None:
    """The zoo runs every model at 224 px, so only architectures whose published accuracy is a
    224-px figure are defaults (EfficientNet-B1..B4: 240/288/300/380 px, dropped)."""
    from infaas_real.zoo.imagenet import ARCHITECTURES, RESOLUTION_MISMATCHED, published_resolution

    zoo = get_zoo("imagenet")
    assert all(m.accuracy_resolution == 224 for m in zoo.models())
    assert not set(RESOLUTION_MISMATCHED) & set(ARCHITECTURES)
    assert {a: published_resolution(a) for a in RESOLUTION_MISMATCHED} == RESOLUTION_MISMATCHED


def test_profiler_refuses_a_row_whose_accuracy_resolution_differs(tmp_path: Path) -> None:
    from infaas_core.errors import ConfigError
    from infaas_real.profiling.artifacts import ArtifactStore
    from infaas_real.profiling.run import ProfilePlan, Profiler
    from infaas_real.zoo.base import check_accuracy_resolution
    from infaas_real.zoo.imagenet import ImagenetZoo

    zoo = ImagenetZoo(architectures=["resnet50", "efficientnet_b4"])
    b4 = zoo.model("efficientnet_b4")
    assert b4.accuracy_resolution == 380
    check_accuracy_resolution(zoo, zoo.model("resnet50"))  # 224 px: fine
    with pytest.raises(ConfigError, match=r"efficientnet_b4: published accuracy was measured at 380 px but the zoo runs it at 224 px"):
        check_accuracy_resolution(zoo, b4)
    plan = ProfilePlan(frameworks=("onnx-fp32",), threads=(1,), batches=(1,), max_batches=(1,))
    profiler = Profiler(zoo, plan, ArtifactStore(zoo, tmp_path), tmp_path, log=lambda _: None)
    with pytest.raises(ConfigError, match="380 px"):
        profiler.tasks()  # before anything is measured
