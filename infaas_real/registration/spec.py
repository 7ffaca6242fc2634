"""What a registration asks for, checked before any model file is opened.

A request (HTTP JSON body, or the CLI's arguments turned into the same mapping) names the
model, its task, its per-item input shape, either a stated accuracy in [0, 1] or labelled
validation data to measure it on, and the model itself: an ONNX file, or a torchvision
architecture name with a ``state_dict`` file. Files travel base64-encoded in the JSON body
(the server reads no path a client names). :func:`parse_request` turns the mapping into a
:class:`Request`, refusing with :class:`RegistrationError` (HTTP status 400 malformed, 409
name taken, 413 too large, 422 well-formed but refused); nothing is written before it passes.

:class:`Manifest` is what a registered model's directory records of it (``manifest.json``):
the profiling job, the worker processes that serve its variants, and a later reader all
rebuild the model from it alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infaas_core.errors import InfaasError

FORMATS = ("onnx", "torchvision")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}$")
"""A registered model's name: no ``-`` (variant names are ``<model>-<framework>-cpu<n>-b<m>``)."""
TASK_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
MANIFEST = "manifest.json"
MODEL_FILE = {"onnx": "model.onnx", "torchvision": "weights.pt"}
SUBMITTED_MODEL_FILE = {"onnx": "submitted.onnx", "torchvision": "weights.pt"}
VALIDATION_FILE = "validation.npz"
CALIBRATION_FILE = "calibration.npz"
FILE_FIELDS = ("model", "validation", "calibration")


class RegistrationError(InfaasError):
    """A registration refused, with the HTTP status that answers it and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = " ".join(str(message).split())
        super().__init__(self.message)


@dataclass(frozen=True, slots=True)
class Request:
    """A checked registration request (files still in memory, decoded)."""

    name: str
    task: str
    input_shape: tuple[int, ...]
    classes: int | None  # None: taken from the model's output (and the task's, if known)
    format: str
    architecture: str | None
    accuracy: float | None  # stated; None when validation data is given
    frameworks: tuple[str, ...]
    files: Mapping[str, bytes]  # FILE_FIELDS present -> their bytes


@dataclass(frozen=True, slots=True)
class Manifest:
    """A registered model, as its directory records it."""

    name: str
    task: str
    input_shape: tuple[int, ...]
    classes: int
    format: str
    architecture: str | None
    accuracy: float | None
    frameworks: tuple[str, ...]
    model_file: str
    model_sha256: str
    validation_sha256: str | None
    calibration_sha256: str | None
    convolutional: bool
    exporter: str
    agreement_samples: int
    example_seed: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Manifest:
        return Manifest(**{**d, "input_shape": tuple(d["input_shape"]), "frameworks": tuple(d["frameworks"])})

    def write(self, directory: Path) -> None:
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")
        tmp.replace(directory / MANIFEST)

    @staticmethod
    def read(directory: Path) -> Manifest:
        return Manifest.from_json(json.loads((directory / MANIFEST).read_text()))


TaskShape = Callable[[str], tuple[tuple[int, ...], int] | None]
"""A task's (input shape, classes) where the server already serves it, else ``None``."""


def _bad(message: str) -> RegistrationError:
    return RegistrationError(400, message)


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):  # the CLI's "[16]" or "3,224,224"
        value = [v for v in value.strip("[]() ").replace(" ", "").split(",") if v]
        try:
            value = [int(v) for v in value]
        except ValueError:
            raise _bad(f"input_shape: not a list of integers: {value!r}") from None
    if not isinstance(value, list | tuple) or not value:
        raise _bad(f"input_shape: must be a non-empty list of integers (per item, no batch), got {value!r}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value):
        raise _bad(f"input_shape: every dimension must be an integer >= 1, got {list(value)!r}")
    return tuple(value)


def _decode(field: str, value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise _bad(f"{field}: must be the file's content, base64-encoded (a non-empty string)")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{field}: not valid base64") from None


def parse_request(
    body: Mapping[str, Any],
    *,
    allowed_frameworks: Mapping[str, Sequence[str]],
    names_in_use: Callable[[str], str | None],
    task_shape: TaskShape,
) -> Request:
    """Check ``body`` (the JSON mapping) and decode its files.

    ``names_in_use(name)``: why ``name`` is taken (a catalog model, task or variant, or a
    registration in progress), else ``None`` — then 409. ``task_shape``: the shape and
    classes of a task the server already serves; a request for that task must agree (422).
    """
    if not isinstance(body, Mapping):
        raise _bad("the body must be a JSON object")
    known = {"name", "task", "input_shape", "classes", "format", "architecture", "accuracy", "frameworks",
             *FILE_FIELDS}  # fmt: skip
    unknown = sorted(set(body) - known)
    if unknown:
        raise _bad(f"unknown field '{unknown[0]}'; known: {', '.join(sorted(known))}")
    for key in ("name", "task", "input_shape", "format", "model"):
        if key not in body:
            raise _bad(f"{key}: missing")
    name, task, fmt = body["name"], body["task"], body["format"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _bad(f"name: must match {NAME_RE.pattern} (letters, digits, '_' or '.'; no '-'), got {name!r}")
    if not isinstance(task, str) or not TASK_RE.match(task):
        raise _bad(f"task: must match {TASK_RE.pattern}, got {task!r}")
    if fmt not in FORMATS:
        raise _bad(f"format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    shape = _shape(body["input_shape"])
    classes = body.get("classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 2):
        raise _bad(f"classes: must be an integer >= 2, got {classes!r}")
    arch = body.get("architecture")
    if fmt == "torchvision":
        if not isinstance(arch, str) or not arch:
            raise _bad("architecture: a torchvision architecture name (e.g. resnet18) is required with format torchvision")
    elif arch is not None:
        raise _bad("architecture: only with format torchvision (an ONNX file carries its own graph)")
    accuracy = body.get("accuracy")
    has_validation = body.get("validation") is not None
    if accuracy is None and not has_validation:
        raise _bad("accuracy: missing; state it, or give labelled validation data (validation) to measure it on")
    if accuracy is not None and has_validation:
        raise _bad("accuracy and validation: give one (a stated accuracy, or data to measure it on), not both")
    if accuracy is not None:
        if isinstance(accuracy, bool) or not isinstance(accuracy, int | float):
            raise _bad(f"accuracy: must be a number, got {accuracy!r}")
        if not 0.0 <= float(accuracy) <= 1.0:
            raise RegistrationError(422, f"accuracy {accuracy!r} is outside [0, 1] (a top-1 fraction)")
        accuracy = float(accuracy)
    allowed = tuple(allowed_frameworks[fmt])
    frameworks = body.get("frameworks")
    if frameworks is None:
        frameworks = allowed
    elif not isinstance(frameworks, list | tuple) or not frameworks or not all(isinstance(f, str) for f in frameworks):
        raise _bad(f"frameworks: must be a non-empty list of names, got {frameworks!r}")
    else:
        bad = [f for f in frameworks if f not in allowed]
        if bad:
            raise RegistrationError(422, f"framework '{bad[0]}' is not generated for a {fmt} model; "
                                         f"generated: {', '.join(allowed)}")  # fmt: skip
        frameworks = tuple(dict.fromkeys(frameworks))
    taken = names_in_use(name)
    if taken:
        raise RegistrationError(409, f"name '{name}' is already {taken}; pick another name")
    known_task = task_shape(task)
    if known_task is not None:
        want_shape, want_classes = known_task
        if shape != want_shape:
            raise RegistrationError(
                422, f"input shape {list(shape)} disagrees with task '{task}', whose queries are {list(want_shape)} per item"
            )
        if classes is not None and classes != want_classes:
            raise RegistrationError(422, f"classes {classes} disagrees with task '{task}' ({want_classes} classes)")
        classes = want_classes
    files = {f: _decode(f, body[f]) for f in FILE_FIELDS if body.get(f) is not None}
    return Request(name=name, task=task, input_shape=shape, classes=classes, format=fmt, architecture=arch,
                   accuracy=accuracy, frameworks=tuple(frameworks), files=files)  # fmt: skip


def encode_files(paths: Mapping[str, Path | None]) -> dict[str, str]:
    """The CLI's side: the named files' contents, base64-encoded for the JSON body."""
    return {k: base64.b64encode(p.read_bytes()).decode() for k, p in paths.items() if p is not None}
