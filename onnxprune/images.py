"""Image folders as model inputs (``images:DIR``): JPEG/PNG files resized and normalized
the standard way, decoded batch by batch (Pillow, an optional dependency).

Preprocessing: resize the shorter side to ``size / crop_fraction`` (256 for 224), centre
crop ``size``, scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel, lay
out as NCHW or NHWC in RGB or BGR order. Defaults come from the model's input when it
declares them (layout from where the 3 sits, size from the spatial dims), else ImageNet's.
Files in sub-folders get the index of their sorted sub-folder name as a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

IMAGE_PREFIX = "images:"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875


@dataclass
class ImageOptions:
    size: int | None = None  # square crop side; None: the model's spatial size, else 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    layout: str | None = None  # nchw | nhwc; None: from the model input
    channel_order: str = "rgb"


def image_files(folder: Path) -> tuple[list[Path], np.ndarray | None]:
    """Sorted image files under ``folder``, and labels from sub-folder names (or None)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no image files (.jpg, .jpeg, .png, .bmp, .webp)")
    parents = sorted({p.parent for p in files})
    if len(parents) > 1 or parents[0] != folder:
        index = {p: i for i, p in enumerate(parents)}
        return files, np.array([index[p.parent] for p in files], dtype=np.int64)
    return files, None


def resolve(options: ImageOptions, dims: list) -> ImageOptions:
    """Fill layout and size from the model's declared input dims [N, C, H, W] / [N, H, W, C]."""
    if len(dims) != 4:
        raise DataError(f"images: the model input has rank {len(dims)}, an image batch needs 4 dims")
    layout = options.layout
    if layout is None:
        layout = "nhwc" if dims[3] == 3 and dims[1] != 3 else "nchw"
    if layout not in ("nchw", "nhwc"):
        raise DataError(f"--layout must be nchw or nhwc, got '{layout}'")
    if options.channel_order not in ("rgb", "bgr"):
        raise DataError(f"--channel-order must be rgb or bgr, got '{options.channel_order}'")
    channels = dims[1] if layout == "nchw" else dims[3]
    if channels not in (3, None):
        raise DataError(f"images: the model input has {channels} channels ({layout}), images have 3")
    spatial = dims[2:] if layout == "nchw" else dims[1:3]
    size = options.size
    if size is None:
        size = spatial[0] if spatial[0] is not None and spatial[0] == spatial[1] else 224
    for d in spatial:
        if d is not None and d != size:
            raise DataError(f"--image-size {size} does not fit the model input's spatial dims {spatial}")
    if len(options.mean) != 3 or len(options.std) != 3 or min(options.std) <= 0:
        raise DataError("--mean and --std need three values each (std > 0)")
    return ImageOptions(size, tuple(options.mean), tuple(options.std), layout, options.channel_order)


def load_image(path: Path, options: ImageOptions) -> np.ndarray:
    """One preprocessed image, (3, size, size) or (size, size, 3), float32."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError("images: reading image folders needs Pillow (pip install 'onnxprune[images]')") from None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            short = options.size / CROP_FRACTION
            scale = short / min(w, h)
            im = im.resize((max(options.size, round(w * scale)), max(options.size, round(h * scale))),
                           Image.BILINEAR)
            w, h = im.size
            left, top = (w - options.size) // 2, (h - options.size) // 2
            im = im.crop((left, top, left + options.size, top + options.size))
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except Exception as exc:
        raise DataError(f"{path}: cannot read as an image ({type(exc).__name__}: {exc})") from None
    return normalized(arr, options)


def normalized(arr: np.ndarray, options: ImageOptions) -> np.ndarray:
    """An RGB image (H, W, 3) in [0, 1] as the model takes it: mean/std, channel order, layout."""
    arr = (arr - np.array(options.mean, np.float32)) / np.array(options.std, np.float32)
    if options.channel_order == "bgr":
        arr = arr[:, :, ::-1]
    if options.layout == "nchw":
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


class ImageBatches:
    """A sequence of feed batches decoded on access: one batch in memory at a time."""

    def __init__(self, files: list[Path], input_name: str, dtype, options: ImageOptions, batch_size: int):
        self.files, self.input_name, self.dtype = files, input_name, dtype
        self.options, self.batch_size = options, batch_size

    def __len__(self) -> int:
        return (len(self.files) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        part = self.files[i * self.batch_size:(i + 1) * self.batch_size]
        batch = np.stack([load_image(p, self.options) for p in part]).astype(self.dtype, copy=False)
        return {self.input_name: batch}

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
