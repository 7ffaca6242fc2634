"""Model zoos: the already-trained models INFaaS generates variants from.

A zoo is a named family of models that serve one task. Each :class:`ZooModel` carries an
``nn.Module`` factory (the trained model, or an architecture with its weights), the knobs
that determine its weights (hashed into the artifact cache key) and either a published
accuracy or ``None`` (then the profiler measures it on the zoo's labelled split).

Two zoos ship: ``digits`` (scikit-learn's bundled handwritten digits; small torch classifiers
trained here in seconds, accuracy measured on a held-out split) and ``imagenet``
(torchvision architectures; published top-1 read from torchvision's weights metadata).
"""

from __future__ import annotations

from infaas_core.errors import UnknownNameError
from infaas_real.zoo.base import Zoo, ZooModel

ZOO_NAMES: tuple[str, ...] = ("digits", "imagenet")

TASK_TO_ZOO: dict[str, str] = {
    "classification-digits": "digits",
    "classification-imagenet-224": "imagenet",
}


def get_zoo(name: str, **options: object) -> Zoo:
    """The zoo called ``name`` (``digits`` | ``imagenet``); ``options`` go to its constructor."""
    if name == "digits":
        from infaas_real.zoo.digits import DigitsZoo

        return DigitsZoo(**options)  # type: ignore[arg-type]
    if name == "imagenet":
        from infaas_real.zoo.imagenet import ImagenetZoo

        return ImagenetZoo(**options)  # type: ignore[arg-type]
    raise UnknownNameError("zoo", name, ZOO_NAMES)


def zoo_for_task(task: str) -> str:
    """The zoo name serving ``task`` (e.g. ``classification-digits`` -> ``digits``)."""
    try:
        return TASK_TO_ZOO[task]
    except KeyError:
        raise UnknownNameError("task", task, tuple(TASK_TO_ZOO)) from None


__all__ = ["TASK_TO_ZOO", "ZOO_NAMES", "Zoo", "ZooModel", "get_zoo", "zoo_for_task"]
