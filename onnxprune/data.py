"""Sample data for validation (and, later, calibration): npz files, folders of them,
in-memory arrays, or synthetic inputs — checked against the model's declared inputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .errors import DataError
from .images import IMAGE_PREFIX

RANDOM_PREFIX = "random:"


@dataclass
class Dataset:
    """Batches of feeds plus optional labels (aligned with the samples, in order)."""

    batches: list = field(default_factory=list)  # or any sequence of feed dicts (images decode on access)
    labels: np.ndarray | None = None
    synthetic: bool = False
    count: int | None = None  # samples, when counting them would decode the batches

    @property
    def samples(self) -> int:
        if self.count is not None:
            return self.count
        return sum(next(iter(b.values())).shape[0] for b in self.batches) if self.batches else 0


def model_inputs(model: onnx.ModelProto) -> dict:
    """{name: (numpy dtype or None when numpy has none, dims with None for dynamic)} of the
    real graph inputs (initializers listed as inputs left out)."""
    init = {t.name for t in model.graph.initializer}
    out = {}
    for inp in model.graph.input:
        if inp.name in init:
            continue
        tt = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, ValueError, TypeError):
            dtype = None
        out[inp.name] = (dtype, dims)
    return out


def load_data(source, model: onnx.ModelProto, *, labels_key: str | None = None, batch_size: int = 16,
              max_samples: int | None = None, input_shapes: dict | None = None, image_options=None) -> Dataset:
    """Read ``source`` — a ``.npz`` path, a folder of ``.npz``/``.npy`` files, ``random:N``,
    ``images:DIR`` (see :mod:`onnxprune.images`), a dict of arrays (first axis = samples)
    or an iterable of such dicts — into batches."""
    inputs = model_inputs(model)
    if isinstance(source, str) and source.startswith(RANDOM_PREFIX):
        return _random(source, model, inputs, batch_size, input_shapes)
    if isinstance(source, str) and source.startswith(IMAGE_PREFIX):
        return _images(source[len(IMAGE_PREFIX):], inputs, batch_size, max_samples, image_options, labels_key)
    if isinstance(source, (str, Path)):
        arrays = _read_path(Path(source), inputs)
    elif isinstance(source, dict):
        arrays = dict(source)
    else:
        try:
            parts = list(source)
        except TypeError:
            raise DataError(f"data must be a path, 'random:N', a dict of arrays or an iterable of dicts, "
                            f"got {type(source).__name__}") from None
        arrays = _concat(parts, "iterable")
    labels = None
    if labels_key is not None:
        if labels_key not in arrays:
            raise DataError(f"labels '{labels_key}' not found in the data (keys: {', '.join(sorted(arrays))})")
        labels = np.asarray(arrays.pop(labels_key)).reshape(-1)
    feeds = _check(arrays, inputs)
    n = next(iter(feeds.values())).shape[0]
    if labels is not None and len(labels) != n:
        raise DataError(f"labels '{labels_key}' has {len(labels)} entries for {n} samples")
    if max_samples is not None:
        n = min(n, max_samples)
        labels = None if labels is None else labels[:n]
    batch_size = _fixed_batch(inputs, batch_size, n)
    batches = [{k: v[i : i + batch_size] for k, v in feeds.items()} for i in range(0, n, batch_size)]
    return Dataset(trim_padding(batches, model), labels)


def _sequence_dim(vi) -> str | None:
    dims = vi.type.tensor_type.shape.dim
    return dims[1].dim_param or None if len(dims) >= 2 and not dims[1].HasField("dim_value") else None


def trim_padding(batches: list, model: onnx.ModelProto) -> list:
    """Cut the data after its last real token: positions that are padding in every sample
    (0 in the token mask, see :mod:`onnxprune.recover.tokens`) at the end of the sequence
    axis are dropped from every input sharing that axis's symbolic dimension. One cut for
    all batches, so outputs of different batches still concatenate.

    Exact for models that honour their mask (padding keys are masked out of attention and
    pooling), and calibration, repair and validation then spend no time or statistics on
    them. Left as they are: models with no ``attention_mask`` input, a fixed or unnamed
    sequence dimension, and left-padded data (its trailing positions are real)."""
    from .recover.tokens import AUTO, find_token_mask

    mask_name = find_token_mask(model, AUTO)
    if mask_name is None or not batches:
        return batches
    vis = {i.name: i for i in model.graph.input}
    seq = _sequence_dim(vis[mask_name])
    if seq is None:
        return batches
    names = [n for n, vi in vis.items() if _sequence_dim(vi) == seq]
    width = {np.asarray(b.get(mask_name)).shape[1:2] for b in batches}
    if len(width) != 1 or any(n not in b or b[n].ndim < 2 or b[n].shape[1:2] != next(iter(width))
                              for b in batches for n in names):
        return batches
    real = np.nonzero(np.any([np.asarray(b[mask_name]).any(axis=0) for b in batches], axis=0))[0]
    length = int(real[-1]) + 1 if len(real) else 1
    if length >= next(iter(width))[0]:
        return batches
    return [{k: (v[:, :length] if k in names else v) for k, v in b.items()} for b in batches]


def _images(folder: str, inputs: dict, batch_size: int, max_samples, options, labels_key) -> Dataset:
    from .images import ImageBatches, ImageOptions, image_files, resolve

    if len(inputs) != 1:
        raise DataError(f"images: only single-input models take image folders (inputs: {', '.join(inputs)})")
    (name, (dtype, dims)), = inputs.items()
    if dtype is None or dtype.kind != "f":
        raise DataError(f"images: input '{name}' is {dtype}, images need a float input")
    options = resolve(options or ImageOptions(), dims)
    files, labels = image_files(Path(folder))
    if labels_key is not None and labels is None:
        raise DataError(f"images:{folder}: labels come from sub-folder names, and its images are not in sub-folders")
    if max_samples is not None:
        files = files[:max_samples]
        labels = None if labels is None else labels[:max_samples]
    batch_size = _fixed_batch(inputs, batch_size, len(files))
    return Dataset(ImageBatches(files, name, dtype, options, batch_size),
                   labels if labels_key is not None else None, count=len(files))


def _fixed_batch(inputs: dict, batch_size: int, n: int) -> int:
    """The batch size the model takes: its fixed leading dim when it declares one."""
    fixed = {dims[0] for _, dims in inputs.values() if dims and dims[0] is not None}
    if not fixed:
        return batch_size
    if len(fixed) > 1:
        raise DataError(f"the model's inputs fix different batch sizes ({sorted(fixed)})")
    b = fixed.pop()
    if n % b:
        raise DataError(f"the model takes batches of exactly {b} samples; the data has {n}")
    return b


def _random(spec: str, model, inputs, batch_size, input_shapes) -> Dataset:
    from .runtime import random_inputs

    try:
        n = int(spec[len(RANDOM_PREFIX):])
        assert n > 0
    except (ValueError, AssertionError):
        raise DataError(f"'{spec}': expected random:N with N a positive number of samples") from None
    warnings.warn("synthetic random inputs: output agreement is measured on noise, not on real data",
                  RuntimeWarning, stacklevel=3)
    batches = []
    for i, start in enumerate(range(0, n, batch_size)):
        b = min(batch_size, n - start)
        shapes = {k: [b] + list(v[1:]) for k, v in (input_shapes or {}).items()}
        batches.append(random_inputs(model, shapes or None, seed=i, batch=b))
    return Dataset(batches, None, synthetic=True)


def _read_path(path: Path, inputs: dict) -> dict:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if not files:
            raise DataError(f"{path}: no .npz or .npy files in this folder")
        return _concat([_read_file(p, inputs) for p in files], str(path))
    return _read_file(path, inputs)


def _read_file(path: Path, inputs: dict) -> dict:
    try:
        if path.suffix == ".npy":
            if len(inputs) != 1:
                raise DataError(f"{path}: .npy files only fit single-input models (inputs: {', '.join(inputs)})")
            arr = np.load(path, allow_pickle=False)
            return {next(iter(inputs)): arr}
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except Exception as exc:  # numpy raises several types for bad files
        raise DataError(f"{path}: cannot read as numpy data ({type(exc).__name__}: {exc})") from None


def _concat(parts: list, where: str) -> dict:
    if not parts:
        raise DataError(f"{where}: no samples")
    keys = set(parts[0])
    for p in parts[1:]:
        if set(p) != keys:
            raise DataError(f"{where}: samples disagree on their arrays ({sorted(keys)} vs {sorted(p)})")
    return {k: np.concatenate([np.asarray(p[k]) for p in parts], axis=0) for k in keys}


def _check(arrays: dict, inputs: dict) -> dict:
    missing = [n for n in inputs if n not in arrays]
    if missing:
        raise DataError(f"data has no array for model input '{missing[0]}' (data keys: {', '.join(sorted(arrays))})")
    extra = [k for k in arrays if k not in inputs]
    if extra:
        raise DataError(f"data array '{extra[0]}' is not a model input (inputs: {', '.join(inputs)}; "
                        "labels go in with --labels)")
    feeds, n = {}, None
    for name, (dtype, dims) in inputs.items():
        if dtype is None:
            raise DataError(f"input '{name}': its element type has no numpy equivalent")
        arr = np.asarray(arrays[name])
        if arr.ndim != len(dims):
            raise DataError(f"input '{name}': data has rank {arr.ndim} {list(arr.shape)}, the model expects "
                            f"{len(dims)} dims {dims}")
        for k, (have, want) in enumerate(zip(arr.shape[1:], dims[1:]), start=1):
            if want is not None and have != want:
                raise DataError(f"input '{name}': dim {k} is {have} in the data, the model expects {want}")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise DataError(f"input '{name}': {arr.shape[0]} samples, other inputs have {n}")
        if dtype.kind == "f":
            if arr.dtype.kind not in "fiu":
                raise DataError(f"input '{name}': {arr.dtype} data for a {dtype} input")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise DataError(f"input '{name}': data contains NaN or infinite values")
        elif arr.dtype.kind != dtype.kind and not (arr.dtype.kind in "iu" and dtype.kind in "iu"):
            raise DataError(f"input '{name}': {arr.dtype} data for a {dtype} input")
        feeds[name] = arr.astype(dtype, copy=False)
    if not n:
        raise DataError("data holds no samples")
    return feeds
