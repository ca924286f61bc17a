"""Loading, checking and atomic saving of ONNX models."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path
from typing import Union

import onnx

from .errors import InputError, InvalidModelError, OutputError, UnsupportedModelError
from .shapes import skeleton, too_big_to_serialize

MIN_OPSET = 11
MAX_OPSET = onnx.defs.onnx_opset_version()

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]


def load_model(source: ModelSource, *, check: bool = True, copy_proto: bool = True) -> onnx.ModelProto:
    """Load a model from a path, serialized bytes or a ModelProto (copied, unless a caller
    that only reads it says ``copy_proto=False``).

    External data next to a path is loaded too. Raises one-line errors for anything that
    is not a usable ONNX model.
    """
    if isinstance(source, onnx.ModelProto):
        model = copy.deepcopy(source) if copy_proto else source
    elif isinstance(source, (bytes, bytearray)):
        model = _parse(bytes(source), "<bytes>")
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a directory, expected an .onnx file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
        model = _parse(data, str(path))
        if _has_external_data(model):
            try:
                onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot load external data ({exc})") from None
    if check:
        check_model(model)
    return model


def _parse(data: bytes, name: str) -> onnx.ModelProto:
    if not data:
        raise InvalidModelError(f"{name}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # protobuf raises DecodeError or RuntimeWarning subclasses
        raise InvalidModelError(f"{name}: not an ONNX model (protobuf parse failed; truncated or corrupt file?)") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise InvalidModelError(f"{name}: parses as protobuf but holds no ONNX graph")
    return model


def _has_external_data(model: onnx.ModelProto) -> bool:
    return any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.external_data_helper._get_all_tensors(model)
    )


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 1


def check_model(model: onnx.ModelProto) -> None:
    """Validate opset range and run onnx.checker (structure, not custom-op schemas)."""
    opset = default_opset(model)
    if opset < MIN_OPSET or opset > MAX_OPSET:
        raise UnsupportedModelError(
            f"model uses opset {opset}; onnxprune supports opsets {MIN_OPSET} to {MAX_OPSET}"
        )
    try:
        # the graph with its small constants through onnx.checker with strict shape
        # inference (a pruned model must pass it, so an input failing it is refused now);
        # the large weights left out of that copy are checked for their sizes below
        onnx.checker.check_model(skeleton(model), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise InvalidModelError(f"model fails onnx.checker: {one_line(exc)}") from None
    _check_payloads(model)


PAYLOAD_CHECK_MAX_ELEMENTS = 1 << 24


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line (checker messages span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_payloads(model: onnx.ModelProto) -> None:
    """Every raw-data initializer holds exactly as many bytes as its dims say. (Reading a
    payload copies it, so the largest are checked when they are first read as weights.)"""
    for t in model.graph.initializer:
        if math.prod(t.dims) > PAYLOAD_CHECK_MAX_ELEMENTS:
            continue
        if t.raw_data and t.data_location != onnx.TensorProto.EXTERNAL:
            try:
                itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            except (KeyError, ValueError, TypeError):
                continue
            if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) or itemsize == 0:
                continue
            expected = math.prod(t.dims) * itemsize
            if len(t.raw_data) != expected:
                raise InvalidModelError(f"model fails onnx.checker: initializer '{t.name}' holds {len(t.raw_data)} "
                                        f"bytes, its dims {list(t.dims)} need {expected}")


# ------------------------------------------------------------------------- saving


def check_writable(path: str | os.PathLike) -> None:
    """Raise OutputError unless a file can be created at ``path`` (probed for real: root
    passes permission checks on folders such as /proc where creating files still fails)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, expected a file path")
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".onnxprune-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{path}: output folder {folder} is not writable ({exc.strerror or exc})") from None


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None,
               serialized: bytes | None = None) -> None:
    """Write atomically: a temporary file in the target folder, then rename.

    Models past the 2 GB protobuf limit (or when asked) get their weights in
    ``<name>.data`` beside them, also moved into place only when complete.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    check_writable(path)
    if external_data is None:
        external_data = serialized is None and too_big_to_serialize(model)
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".onnxprune-") as tmp:
            tmp_model = Path(tmp) / path.name
            if external_data:
                data_name = path.name + ".data"
                write_external(model, tmp_model, data_name)
                os.replace(Path(tmp) / data_name, folder / data_name)
            else:
                with open(tmp_model, "wb") as f:
                    f.write(serialized if serialized is not None else model.SerializeToString())
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp_model, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None


EXTERNAL_MIN_BYTES = 1024


def write_external(model: onnx.ModelProto, path: Path, data_name: str) -> None:
    """Write ``model`` to ``path`` with every initializer of at least 1 KiB in
    ``data_name`` beside it, streaming tensor by tensor: the model itself is neither
    copied nor changed (onnx's own external-data writer rewrites the model in place)."""
    out = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, field, getattr(model, field))
    out.opset_import.extend(model.opset_import)
    out.metadata_props.extend(model.metadata_props)
    out.functions.extend(model.functions)
    src, g = model.graph, out.graph
    g.name, g.doc_string = src.name, src.doc_string
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    offset = 0
    with open(path.parent / data_name, "wb") as data:
        for t in src.initializer:
            payload = t.raw_data if t.HasField("raw_data") else b""
            if len(payload) < EXTERNAL_MIN_BYTES:
                g.initializer.append(t)
                continue
            pad = (-offset) % 4096  # aligned, as onnx's writer does, so runtimes may map it
            data.write(b"\0" * pad)
            offset += pad
            data.write(payload)
            ref = g.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims, doc_string=t.doc_string)
            ref.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(payload)))):
                entry = ref.external_data.add()
                entry.key, entry.value = key, value
            offset += len(payload)
        data.flush()
        os.fsync(data.fileno())
    with open(path, "wb") as f:
        f.write(out.SerializeToString())
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder: the file is
    complete or absent, never partial."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: output folder {folder} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".onnxprune-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's 0600
        os.replace(tmp, path)
    except OSError as exc:
        try:
            if tmp is not None:
                os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
