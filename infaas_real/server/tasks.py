"""What a task's requests and answers look like, taken from the zoo that serves the task.

Every catalog task belongs to a zoo (:data:`infaas_real.zoo.TASK_TO_ZOO`); the zoo says the
per-item input shape (``(64,)`` for digits, ``(3, 224, 224)`` for ImageNet), the number of
class scores an answer carries, and how raw UINT8 input becomes the float32 input its models
take (:meth:`infaas_real.zoo.base.Zoo.uint8_to_input`: ImageNet pixels are scaled to 0..1
and normalised with torchvision's mean and std; digits features are taken as they are).
No shape is written by hand in a config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from infaas_core.errors import ConfigError, UnknownNameError


@dataclass(frozen=True, slots=True)
class TaskIO:
    """Input and output of one task's queries."""

    task: str
    input_shape: tuple[int, ...]  # per item, without the batch dimension
    classes: int
    uint8_to_input: Callable[[np.ndarray], np.ndarray]  # raw UINT8 batch -> the models' float32 input

    @property
    def features(self) -> int:
        return int(np.prod(self.input_shape))


def task_io(task: str) -> TaskIO:
    """The I/O of ``task``, from its zoo; a task no zoo serves is a :class:`ConfigError`."""
    from infaas_real.zoo import get_zoo, zoo_for_task

    try:
        zoo = get_zoo(zoo_for_task(task))
    except UnknownNameError as exc:
        raise ConfigError(f"catalog: task '{task}'", f"no variant zoo serves this task ({exc})") from None
    return TaskIO(task, tuple(zoo.input_shape), int(zoo.classes), zoo.uint8_to_input)
