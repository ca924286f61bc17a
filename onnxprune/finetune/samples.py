"""Training samples: index-addressable so a run can shuffle, split off a held-out part and
resume at any step with the same order. Arrays (npz, folders, dicts) are held in memory
as given; image folders decode each batch on demand, with on-the-fly augmentation
(random resized crop and horizontal flip, the standard ImageNet recipe) when asked."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..images import CROP_FRACTION, ImageBatches, load_image, normalized

AUGMENTS = ("auto", "none", "flip", "crop+flip")


class ArraySamples:
    def __init__(self, dataset):
        batches = list(dataset.batches)
        if not batches:
            raise DataError("finetune: the data has no samples")
        self.arrays = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
        self.labels = dataset.labels
        self.n = next(iter(self.arrays.values())).shape[0]
        self.image_like = len(self.arrays) == 1 and next(iter(self.arrays.values())).ndim == 4

    def batch(self, idx: np.ndarray, rng: np.random.Generator | None, augment: str) -> dict:
        out = {k: v[idx] for k, v in self.arrays.items()}
        if rng is not None and augment == "flip" and self.image_like:
            (k, v), = out.items()
            flip = rng.random(len(idx)) < 0.5
            axis = 3 if v.shape[1] in (1, 3) else 2  # the width axis of NCHW / NHWC
            v = v.copy()
            v[flip] = np.flip(v[flip], axis=axis)
            out[k] = v
        return out


class ImageSamples:
    def __init__(self, dataset):
        images: ImageBatches = dataset.batches
        self.files, self.name, self.dtype, self.options = images.files, images.input_name, images.dtype, images.options
        self.labels = dataset.labels
        self.n = len(self.files)
        self.image_like = True

    def batch(self, idx: np.ndarray, rng: np.random.Generator | None, augment: str) -> dict:
        if rng is None or augment == "none":
            arrays = [load_image(self.files[i], self.options) for i in idx]
        else:
            arrays = [augmented_image(self.files[i], self.options, rng, crop=augment == "crop+flip") for i in idx]
        return {self.name: np.stack(arrays).astype(self.dtype, copy=False)}


def samples_of(dataset):
    return ImageSamples(dataset) if isinstance(dataset.batches, ImageBatches) else ArraySamples(dataset)


def resolve_augment(augment: str, samples) -> str:
    if augment not in AUGMENTS:
        raise DataError(f"unknown augmentation '{augment}' (choose from {', '.join(AUGMENTS)})")
    if augment == "auto":
        return "crop+flip" if isinstance(samples, ImageSamples) else "none"
    if augment != "none" and not samples.image_like:
        raise DataError(f"augmentation '{augment}' needs image inputs (one 4-D input)")
    if augment == "crop+flip" and not isinstance(samples, ImageSamples):
        raise DataError("augmentation 'crop+flip' needs an image folder (images:DIR); arrays take 'flip'")
    return augment


def augmented_image(path, options, rng: np.random.Generator, crop: bool = True,
                    scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """Random resized crop (area fraction in ``scale``, aspect in ``ratio``; without
    ``crop`` the evaluation crop) and a horizontal flip with probability 1/2."""
    if not crop:
        arr = load_image(path, options)
        width = 2 if options.layout == "nchw" else 1
        return np.ascontiguousarray(np.flip(arr, axis=width)) if rng.random() < 0.5 else arr
    from PIL import Image

    size = options.size
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            for _ in range(10):
                area = w * h * rng.uniform(*scale)
                aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
                cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
                if 0 < cw <= w and 0 < ch <= h:
                    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                    break
            else:  # fall back to the evaluation crop
                side = min(w, h) * CROP_FRACTION
                cw = ch = int(side)
                left, top = (w - cw) // 2, (h - ch) // 2
            im = im.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except Exception as exc:
        raise DataError(f"{path}: cannot read as an image ({type(exc).__name__}: {exc})") from None
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    return normalized(arr, options)
