"""What an offline job reads and writes: its inputs (a tensor file, or a directory of images
for an image task) and its output file.

Inputs, checked when the job is submitted (:class:`InputRefused` with a one-line reason):

- ``.npy``: one array of shape ``[n, *input_shape]`` (the task's zoo says the shape,
  :mod:`infaas_real.server.tasks`), read memory-mapped so a queued job holds no copy;
- ``.npz``: the array named ``input``, or the archive's only array, the same shape;
- a directory: every file with an image extension, in sorted name order, for a task whose
  input is ``[3, H, W]``; each image is decoded to RGB when its batch runs, its shorter side
  resized to ``H * resize_ratio`` (bilinear), centre-cropped to ``H x W`` (torchvision's
  ``ImageClassification`` transform: resize 256, crop 224 — ``server.offline_image_resize_ratio``)
  and normalised by the zoo (:meth:`infaas_real.zoo.base.Zoo.uint8_to_input`).

UINT8 tensors are normalised by the zoo in the same way (as a UINT8 infer request is);
other integer and float dtypes are converted to float32; non-finite values are refused.
The output is one ``.npy`` of float32 ``[n, classes]`` scores in input order, written to a
temporary file beside it and renamed over it once complete (:func:`write_output`), so a
reader never sees a partial file.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from infaas_real.server.tasks import TaskIO

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
_FINITE_CHECK_ROWS = 65536  # rows per chunk of the non-finite scan (bounds its memory)


class InputRefused(Exception):
    """An offline job's input or output path cannot be used (answered 400)."""


class JobInput(Protocol):
    @property
    def total(self) -> int:
        """Inputs in the job."""
        ...

    def rows(self, lo: int, hi: int) -> np.ndarray:
        """Inputs ``lo:hi`` as the models take them (float32 ``[hi - lo, *input_shape]``)."""
        ...


@dataclass(frozen=True, slots=True)
class TensorInput:
    array: np.ndarray  # [n, *input_shape], any numeric dtype (memory-mapped for .npy)
    io: TaskIO

    @property
    def total(self) -> int:
        return int(self.array.shape[0])

    def rows(self, lo: int, hi: int) -> np.ndarray:
        x = np.asarray(self.array[lo:hi])
        if x.dtype == np.uint8:
            return np.ascontiguousarray(self.io.uint8_to_input(x), dtype=np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class ImageDirInput:
    files: tuple[Path, ...]
    io: TaskIO
    resize_ratio: float

    @property
    def total(self) -> int:
        return len(self.files)

    def rows(self, lo: int, hi: int) -> np.ndarray:
        pixels = np.stack([decode_image(f, self.io.input_shape, self.resize_ratio) for f in self.files[lo:hi]])
        return np.ascontiguousarray(self.io.uint8_to_input(pixels), dtype=np.float32)


def decode_image(path: Path, shape: tuple[int, ...], resize_ratio: float) -> np.ndarray:
    """One image file -> UINT8 ``[3, H, W]`` RGB: shorter side to ``H * resize_ratio``, centre crop."""
    from PIL import Image, UnidentifiedImageError

    _, h, w = shape
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputRefused(f"image {path.name}: cannot decode ({type(exc).__name__})") from None
    short = round(max(h, w) * resize_ratio)
    scale = short / min(rgb.size)
    size = (max(round(rgb.size[0] * scale), w), max(round(rgb.size[1] * scale), h))
    rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - w) // 2, (size[1] - h) // 2
    crop = rgb.crop((left, top, left + w, top + h))
    return np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)


def _absolute(path: object, key: str) -> Path:
    if not isinstance(path, str) or not path:
        raise InputRefused(f"{key}: must be a non-empty string")
    if "\x00" in path:
        raise InputRefused(f"{key}: must not hold a NUL character")
    p = Path(path)
    if not p.is_absolute():
        raise InputRefused(f"{key}: must be an absolute path (the server's working directory is not yours)")
    return p


def open_input(path: object, io: TaskIO, max_bytes: int, resize_ratio: float) -> JobInput:
    """The job's inputs at ``path`` (see the module docstring); :class:`InputRefused` if unusable."""
    p = _absolute(path, "input_path")
    if p.is_dir():
        return _image_dir(p, io, resize_ratio)
    if not p.is_file():
        raise InputRefused(f"input_path: no such file or directory: {p.name}")
    if p.suffix not in (".npy", ".npz"):
        raise InputRefused(f"input_path: {p.name}: expected a .npy or .npz file, or a directory of images")
    size = p.stat().st_size
    if size > max_bytes:
        raise InputRefused(f"input_path: {p.name} is {size} bytes, over server.offline_max_input_bytes ({max_bytes})")
    try:
        arr = _read_npy(p) if p.suffix == ".npy" else _read_npz(p)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputRefused(f"input_path: {p.name}: not a readable numpy file ({type(exc).__name__})") from None
    _check_tensor(arr, io, p.name)
    return TensorInput(arr, io)


def _read_npy(p: Path) -> np.ndarray:
    arr = np.load(p, mmap_mode="r", allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        raise ValueError("not an array")
    return arr


def _read_npz(p: Path) -> np.ndarray:
    with np.load(p, allow_pickle=False) as z:
        names = list(z.files)
        if "input" in names:
            return np.asarray(z["input"])
        if len(names) != 1:
            raise InputRefused(f"input_path: {p.name}: holds {len(names)} arrays ({', '.join(names[:8])}); "
                               "name the inputs 'input' or store one array")
        return np.asarray(z[names[0]])


def _check_tensor(arr: np.ndarray, io: TaskIO, name: str) -> None:
    want = (-1, *io.input_shape)
    if arr.ndim != len(want) or tuple(arr.shape[1:]) != io.input_shape or arr.shape[0] < 1:
        raise InputRefused(f"input_path: {name}: shape {list(arr.shape)}, task {io.task} takes {list(want)} "
                           "(at least one input)")
    if arr.dtype.kind not in "fiu" or arr.dtype.itemsize > 8:
        raise InputRefused(f"input_path: {name}: dtype {arr.dtype} is not a real number type")
    if arr.dtype.kind == "f":
        for lo in range(0, arr.shape[0], _FINITE_CHECK_ROWS):
            if not np.isfinite(arr[lo : lo + _FINITE_CHECK_ROWS]).all():
                raise InputRefused(f"input_path: {name}: holds non-finite values (NaN or infinity)")


def _image_dir(p: Path, io: TaskIO, resize_ratio: float) -> ImageDirInput:
    if len(io.input_shape) != 3 or io.input_shape[0] != 3:
        raise InputRefused(f"input_path: a directory of images serves image tasks only; task {io.task} takes "
                           f"inputs of shape {list(io.input_shape)}")
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise InputRefused("input_path: image directories need Pillow, which this server does not have") from None
    files = tuple(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
    if not files:
        raise InputRefused(f"input_path: directory {p.name} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    from PIL import Image, UnidentifiedImageError

    for f in files:  # headers only: a file that is no image is refused now, not mid-job
        try:
            with Image.open(f) as im:
                im.verify()
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            raise InputRefused(f"input_path: {f.name} is not a readable image") from None
    return ImageDirInput(files, io, resize_ratio)


def check_output(path: object, input_path: object) -> Path:
    """The output file path: absolute, ``.npy``, in an existing directory the server may write,
    not a directory itself and not the input."""
    p = _absolute(path, "output_path")
    if p.suffix != ".npy":
        raise InputRefused(f"output_path: {p.name}: must end in .npy")
    if isinstance(input_path, str) and Path(input_path) == p:
        raise InputRefused("output_path: must not be the input file")
    parent = p.parent
    if not parent.is_dir():
        raise InputRefused(f"output_path: directory {parent.name or '/'} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputRefused(f"output_path: directory {parent.name or '/'} is not writable by the server")
    if p.exists() and (not p.is_file() or not os.access(p, os.W_OK)):
        raise InputRefused(f"output_path: {p.name} exists and is not a writable file")
    return p


def write_output(path: Path, y: np.ndarray, tag: str) -> None:
    """Write ``y`` to ``path`` atomically: a temporary file in the same directory, synced,
    then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    try:
        with tmp.open("wb") as f:
            np.save(f, y, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
