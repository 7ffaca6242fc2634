"""A registered model as a zoo of one: its files checked, its artifacts built, its inputs.

:func:`inspect_model` opens the submitted files safely and refuses (:class:`RegistrationError`
422) what cannot be served:

- an ONNX file is parsed as protobuf (no code runs), must be self-contained (no external
  data), pass ``onnx.checker``, take one float32 input of ``(batch, *input_shape)`` and give
  ``(batch, classes)`` scores; onnxruntime must load it on CPU (an operator it has no kernel
  for is refused here, not at serving time) and answer a batch of 2. The graph is stored
  with its input renamed ``input`` and a symbolic batch dimension;
- a weights file is read only by ``torch.load(..., weights_only=True)`` (a pickle that would
  construct any object other than tensors and plain containers — code — is refused), must
  be a ``state_dict`` that loads strictly into the torchvision architecture, and the model
  must answer ``(2, classes)`` for a ``(2, *input_shape)`` batch;
- validation data (``.npz``, read with ``allow_pickle=False``) holds ``x`` of
  ``(n, *input_shape)`` and integer labels ``y`` in ``[0, classes)``; calibration data holds
  ``x`` alone.

:class:`RegisteredZoo` and :class:`RegisteredStore` then let the profiler, the artifact store
and the runtime treat the model exactly as a zoo model (:mod:`infaas_real.zoo.base`,
:mod:`infaas_real.profiling.artifacts`). int8: onnxruntime static QDQ quantisation
calibrated on the user's calibration data when given, else dynamic quantisation (weights
int8, activations quantised at run time; needs no data).
"""

from __future__ import annotations

import io
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from infaas_real.profiling.artifacts import (
    INPUT_NAME,
    KIND_ONNX_FP32,
    KIND_ONNX_INT8,
    ArtifactStore,
)
from infaas_real.registration.spec import (
    CALIBRATION_FILE,
    MODEL_FILE,
    SUBMITTED_MODEL_FILE,
    VALIDATION_FILE,
    Manifest,
    RegistrationError,
)
from infaas_real.zoo.base import Zoo, ZooModel, file_sha256

CONV_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"})
UNSUPPORTED_SIGNS = ("NOT_IMPLEMENTED", "Could not find an implementation", "No Op registered",
                     "is not a registered function/op")  # fmt: skip
"""How onnxruntime's load error says it has no kernel for an operator of the graph."""
_PATH = re.compile(r"(?:/[\w.+-]+){2,}/([\w.+-]+)")
PROBE_BATCH = 2


def _refuse(message: str) -> RegistrationError:
    return RegistrationError(422, message)


def _short(exc: BaseException) -> str:
    """One line, at most 300 characters, file paths reduced to their names."""
    return _PATH.sub(r"\1", " ".join(f"{type(exc).__name__}: {exc}".split()))[:300]


# -- reading the submitted files ------------------------------------------------------------
def read_npz(path: Path, what: str, input_shape: tuple[int, ...], classes: int | None,
             labels: bool) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """``x`` (float32, C order) and, with ``labels``, ``y`` (int64) of a data file."""
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # a pickle inside is refused by allow_pickle=False here too
        raise _refuse(f"{what}: not a readable .npz of plain arrays ({_short(exc)})") from None
    if "x" not in arrays or (labels and "y" not in arrays):
        need = "x and y" if labels else "x"
        raise _refuse(f"{what}: the .npz must hold arrays {need}; it holds {sorted(arrays) or 'none'}")
    x = arrays["x"]
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != input_shape or x.shape[0] < 1:
        raise _refuse(f"{what}: x has shape {list(x.shape)}, expected [n, {', '.join(map(str, input_shape))}]")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise _refuse(f"{what}: x must hold finite numbers")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not labels:
        return x, None
    y = arrays["y"]
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise _refuse(f"{what}: y must be {x.shape[0]} integer labels, got {y.dtype} of shape {list(y.shape)}")
    if classes is not None and (y.min() < 0 or y.max() >= classes):
        raise _refuse(f"{what}: labels must lie in [0, {classes}), got {int(y.min())}..{int(y.max())}")
    return x, y.astype(np.int64)


def _onnx_dims(value_info: Any) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]  # fmt: skip


def inspect_onnx(src: Path, dst: Path, input_shape: tuple[int, ...], classes: int | None) -> tuple[int, bool]:
    """Check the submitted ONNX graph, store its serving form at ``dst``; (classes, convolutional)."""
    import onnx
    from onnx import TensorProto

    try:
        model = onnx.load_model(str(src), load_external_data=False)
    except Exception as exc:
        raise _refuse(f"not an ONNX model: the file does not parse as an ONNX protobuf ({_short(exc)})") from None
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        raise _refuse("the ONNX model keeps weights in external files; submit one self-contained .onnx")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise _refuse(f"invalid ONNX graph: {_short(exc)}") from None
    g = model.graph
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise _refuse(f"the graph must take one input and give one output; it takes {len(inputs)} and gives {len(g.output)}")
    inp, out = inputs[0], g.output[0]
    if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise _refuse("the graph's input must be float32")
    dims = _onnx_dims(inp)
    if len(dims) != len(input_shape) + 1 or tuple(dims[1:]) != input_shape:
        shown = ", ".join(map(str, dims))
        raise _refuse(f"the graph's input is ({shown}) but the declared input shape is (batch, "
                      f"{', '.join(map(str, input_shape))})")  # fmt: skip
    out_dims = _onnx_dims(out)
    if len(out_dims) != 2:
        raise _refuse(f"the graph's output must be (batch, classes) scores, got rank {len(out_dims)}")
    # the serving form: input named as the runtime feeds it, batch dimension symbolic
    old = inp.name
    if old != INPUT_NAME:
        inp.name = INPUT_NAME
        for node in g.node:
            node.input[:] = [INPUT_NAME if n == old else n for n in node.input]
        for o in g.output:
            if o.name == old:
                raise _refuse("the graph's output is its input")
    for vi in (inp, out):
        d0 = vi.type.tensor_type.shape.dim[0]
        d0.Clear()
        d0.dim_param = "batch"
    onnx.save_model(model, str(dst))
    got = _probe_ort(dst, input_shape)
    if classes is not None and got != classes:
        raise _refuse(f"the graph gives {got} class scores but the task has {classes} classes")
    conv = any(n.op_type in CONV_OPS for n in g.node)
    return got, conv


def _probe_ort(path: Path, input_shape: tuple[int, ...]) -> int:
    """Load ``path`` in onnxruntime on CPU and run a batch; the number of class scores."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = str(exc)
        if any(sign in text for sign in UNSUPPORTED_SIGNS):
            raise _refuse(f"unsupported operator: onnxruntime (CPU) cannot run this graph ({_short(exc)})") from None
        raise _refuse(f"onnxruntime cannot load the graph ({_short(exc)})") from None
    try:
        y = sess.run(None, {INPUT_NAME: np.zeros((PROBE_BATCH, *input_shape), np.float32)})[0]
    except Exception as exc:
        raise _refuse(f"the graph fails on a batch of {PROBE_BATCH} (does it take a batch dimension?): {_short(exc)}") from None
    if y.ndim != 2 or y.shape[0] != PROBE_BATCH:
        raise _refuse(f"the graph answers shape {list(y.shape)} for a batch of {PROBE_BATCH}; expected ({PROBE_BATCH}, classes)")
    return int(y.shape[1])


def load_weights_safely(path: Path) -> dict[str, Any]:
    """A ``state_dict`` read with ``weights_only=True``; anything else is refused."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a pickle that would construct other objects
        raise _refuse(f"unsafe or unreadable weights file: torch.load(weights_only=True) refused it ({_short(exc)})") from None
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise _refuse("the weights file must hold a state_dict (a mapping of parameter names to tensors)")
    return dict(state)


def torchvision_module(arch: str, classes: int) -> Any:
    from torchvision.models import get_model, list_models

    if arch not in list_models():
        raise _refuse(f"unknown torchvision architecture '{arch}'")
    return get_model(arch, weights=None, num_classes=classes)


def inspect_torchvision(src: Path, arch: str, input_shape: tuple[int, ...], classes: int | None) -> tuple[int, bool]:
    """Check a torchvision architecture with the submitted weights; (classes, convolutional)."""
    import torch

    state = load_weights_safely(src)
    if classes is None:  # the classifier's last 2-d weight says it
        last = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
        if not last:
            raise _refuse("cannot tell the number of classes from the weights; state classes")
        classes = int(last[-1].shape[0])
    module = torchvision_module(arch, classes)
    try:
        module.load_state_dict(state, strict=True)
    except Exception as exc:
        raise _refuse(f"the weights do not fit torchvision's {arch} with {classes} classes ({_short(exc)})") from None
    module.eval()
    try:
        with torch.inference_mode():
            y = module(torch.zeros((PROBE_BATCH, *input_shape)))
    except Exception as exc:
        raise _refuse(f"{arch} cannot take input shape {list(input_shape)} ({_short(exc)})") from None
    if tuple(y.shape) != (PROBE_BATCH, classes):
        raise _refuse(f"{arch} answers shape {list(y.shape)} for a batch of {PROBE_BATCH}; expected ({PROBE_BATCH}, {classes})")
    conv = any(isinstance(m, torch.nn.Conv2d) for m in module.modules())
    return classes, conv


def inspect_model(directory: Path, spec: Mapping[str, Any]) -> Manifest:
    """Check the files staged in ``directory`` for the request ``spec`` (a
    :class:`~infaas_real.registration.spec.Manifest` mapping without the fields found here);
    write and return the manifest. Raises :class:`RegistrationError` (422)."""
    fmt = spec["format"]
    shape = tuple(spec["input_shape"])
    classes = spec.get("classes")
    src = directory / SUBMITTED_MODEL_FILE[fmt]
    if fmt == "onnx":
        classes, conv = inspect_onnx(src, directory / MODEL_FILE[fmt], shape, classes)
        src.unlink()
    else:
        classes, conv = inspect_torchvision(src, spec["architecture"], shape, classes)
    val = directory / VALIDATION_FILE
    cal = directory / CALIBRATION_FILE
    if val.is_file():
        read_npz(val, "validation", shape, classes, labels=True)
    if cal.is_file():
        read_npz(cal, "calibration", shape, classes, labels=False)
    manifest = Manifest(
        name=spec["name"], task=spec["task"], input_shape=shape, classes=int(classes), format=fmt,
        architecture=spec.get("architecture"), accuracy=spec.get("accuracy"), frameworks=tuple(spec["frameworks"]),
        model_file=MODEL_FILE[fmt], model_sha256=file_sha256(directory / MODEL_FILE[fmt]),
        validation_sha256=file_sha256(val) if val.is_file() else None,
        calibration_sha256=file_sha256(cal) if cal.is_file() else None, convolutional=conv,
        exporter=spec["exporter"], agreement_samples=int(spec["agreement_samples"]),
        example_seed=int(spec["example_seed"]),
    )  # fmt: skip
    manifest.write(directory)
    return manifest


# -- the zoo of one ---------------------------------------------------------------------------
class RegisteredZoo(Zoo):
    """One registered model as a zoo: its task, shape, inputs and labelled data."""

    def __init__(self, manifest: Manifest, directory: Path) -> None:
        self.manifest = manifest
        self.directory = directory
        self.name = manifest.name
        self.task = manifest.task
        self.input_shape = tuple(manifest.input_shape)
        self.classes = manifest.classes
        self._val: tuple[np.ndarray, np.ndarray] | None = None
        if manifest.validation_sha256 is not None:
            x, y = read_npz(directory / VALIDATION_FILE, "validation", self.input_shape, self.classes, labels=True)
            assert y is not None
            self._val = (x, y)
        self._cal: np.ndarray | None = None
        if manifest.calibration_sha256 is not None:
            self._cal = read_npz(directory / CALIBRATION_FILE, "calibration", self.input_shape, None, labels=False)[0]
        rng = np.random.default_rng(manifest.example_seed)
        self._examples = (self._val[0] if self._val is not None
                          else rng.standard_normal((manifest.agreement_samples, *self.input_shape)).astype(np.float32))  # fmt: skip

    @property
    def static_int8(self) -> bool:
        return self._cal is not None

    def config_key(self) -> dict[str, Any]:
        m = self.manifest
        return {**super().config_key(), "registered": m.format, "architecture": m.architecture,
                "classes": m.classes, "calibration": m.calibration_sha256}  # fmt: skip

    def models(self) -> tuple[ZooModel, ...]:
        m = self.manifest
        return (
            ZooModel(
                name=m.name,
                build=self._build,
                weights_key={"registered": m.format, "sha256": m.model_sha256},
                accuracy=None if self._val is not None else m.accuracy,
                convolutional=m.convolutional,
                accuracy_source="measured: the user's labelled validation data" if self._val is not None
                else "stated by the user at registration",
            ),
        )  # fmt: skip

    def _build(self) -> Any:
        m = self.manifest
        if m.format != "torchvision" or m.architecture is None:
            raise RuntimeError(f"{m.name}: an ONNX model has no torch form")
        module = torchvision_module(m.architecture, m.classes)
        module.load_state_dict(load_weights_safely(self.directory / m.model_file), strict=True)
        return module.eval()

    def example_input(self, batch: int) -> np.ndarray:
        idx = np.arange(batch) % len(self._examples)
        return np.ascontiguousarray(self._examples[idx])

    def eval_data(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._val

    def agreement_inputs(self) -> np.ndarray:
        return self._examples[: self.manifest.agreement_samples]

    def calibration_inputs(self) -> np.ndarray:
        if self._cal is None:
            raise RuntimeError(f"{self.name}: no calibration data (int8 is quantised dynamically)")
        return self._cal


class RegisteredStore(ArtifactStore):
    """The artifact store of a registered model, under its own directory: the torchvision
    weights as submitted (checked), the ONNX graph as submitted (serving form) or exported,
    int8 by static quantisation when calibration data was given, else dynamic."""

    zoo: RegisteredZoo

    def __init__(self, zoo: RegisteredZoo) -> None:
        super().__init__(zoo, zoo.directory, exporter=zoo.manifest.exporter)

    def key(self, model: ZooModel, kind: str) -> dict[str, Any]:
        key = super().key(model, kind)
        if kind == KIND_ONNX_INT8 and not self.zoo.static_int8:
            key["quantization"] = {"method": "dynamic", "weights": "int8"}
        return key

    def _fresh(self, model: ZooModel) -> Any:
        m = self.zoo.manifest
        if m.architecture is None:
            raise RuntimeError(f"{m.name}: an ONNX model has no torch form")
        return torchvision_module(m.architecture, m.classes)

    def _write_onnx(self, model: ZooModel, path: Path) -> dict[str, Any]:
        m = self.zoo.manifest
        if m.format == "onnx":
            shutil.copyfile(self.zoo.directory / m.model_file, path)
            return {"exporter": "submitted"}
        out: dict[str, Any] = super()._write_onnx(model, path)
        return out

    def _write_int8(self, model: ZooModel, path: Path) -> dict[str, Any]:
        if self.zoo.static_int8:
            out: dict[str, Any] = super()._write_int8(model, path)
            return out
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fp32 = self.get(model, KIND_ONNX_FP32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(fp32.path), str(path), weight_type=QuantType.QInt8)
        return {"from": fp32.hash, "quantization": "dynamic"}
