"""Zoo rules: digits serves the raw 64 features and trains deterministically; imagenet has
>= 15 architectures whose accuracy is torchvision's published top-1 (metadata only)."""

from __future__ import annotations

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
