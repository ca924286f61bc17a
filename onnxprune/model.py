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
from .shapes import _left_out, run_from_disk, skeleton, too_big_to_serialize
from .weights import copy_from_disk, leave_on_disk, on_disk, payload_nbytes

MIN_OPSET = 11
MAX_OPSET = onnx.defs.onnx_opset_version()

ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]


def load_model(source: ModelSource, *, check: bool = True, copy_proto: bool = True) -> onnx.ModelProto:
    """Load a model from a path, serialized bytes or a ModelProto (copied, unless a caller
    that only reads it says ``copy_proto=False``).

    External data next to a path is loaded too, except, past the protobuf limit, the
    large weights: those stay in their files and are read when used (see
    :func:`onnxprune.weights.on_disk`), so such a model is never held in memory twice.
    Raises one-line errors for anything that is not a usable ONNX model.
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
        del data
        if _has_external_data(model):
            try:
                _load_external(model, str(path.parent))
            except (OSError, ValueError, onnx.checker.ValidationError) as exc:  # the last: paths leaving the folder
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


def _load_external(model: onnx.ModelProto, base_dir: str) -> None:
    """Load the external data of a model read from ``base_dir``. Past the protobuf limit
    (counted from the dims, before anything is read) the large floating-point
    initializers, the ones :func:`skeleton` leaves out, are checked and left on disk; all
    else is loaded as onnx loads it."""
    helper = onnx.external_data_helper
    if not too_big_to_serialize(model):
        helper.load_external_data_for_model(model, base_dir)
        return
    for t in model.graph.initializer:
        if helper.uses_external_data(t) and _left_out(t):
            _check_on_disk(t, base_dir)
    for t in helper._get_all_tensors(model):
        if helper.uses_external_data(t) and not on_disk(t):
            helper.load_external_data_for_tensor(t, base_dir)


def _check_on_disk(t: onnx.TensorProto, base_dir: str) -> None:
    """Check an external weight as onnx's loader would (its location stays inside the
    model's folder, its bytes are in the file) without reading it, then leave it there."""
    helper = onnx.external_data_helper
    info = helper.ExternalDataInfo(t)  # refuses negative offsets and lengths
    opener = getattr(helper, "_open_external_data_fd", None)  # onnx's own path checks
    if opener is not None:
        fd = opener(base_dir, info.location, t.name, True)
    else:
        if not info.location or os.path.isabs(info.location):
            raise ValueError(f"tensor '{t.name}': external data location must be a relative path")
        root = os.path.realpath(base_dir or ".")
        if os.path.commonpath([root, os.path.realpath(os.path.join(root, info.location))]) != root:
            raise ValueError(f"tensor '{t.name}': external data location {info.location} is outside the model's folder")
        fd = os.open(os.path.join(base_dir, info.location), os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
    expected = payload_nbytes(t)
    if info.length is not None and info.length != expected:
        raise InvalidModelError(f"model fails onnx.checker: initializer '{t.name}' holds {info.length} bytes, "
                                f"its dims {list(t.dims)} need {expected}")
    start = info.offset or 0
    if start + expected > size:
        raise ValueError(f"tensor '{t.name}': {expected} bytes from offset {start} exceed the "
                         f"{size}-byte file {info.location}")
    leave_on_disk(t, os.path.join(base_dir, info.location))


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
        external_data = serialized is None and (too_big_to_serialize(model) or
                                                any(on_disk(t) for t in model.graph.initializer))
    try:
        with tempfile.TemporaryDirectory(dir=folder, prefix=".onnxprune-") as tmp:
            tmp_model = Path(tmp) / path.name
            if external_data:
                data_name = path.name + ".data"
                write_external(model, tmp_model, data_name)
                os.replace(Path(tmp) / data_name, folder / data_name)
            else:
                with open(tmp_model, "wb") as f:
                    if serialized is None and run_from_disk(model):
                        write_serialized(model, f)  # the same bytes, never all in memory
                    else:
                        f.write(serialized if serialized is not None else model.SerializeToString())
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp_model, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None


EXTERNAL_MIN_BYTES = 1024


def write_external(model: onnx.ModelProto, path: Path, data_name: str, *, ir_version: int | None = None) -> None:
    """Write ``model`` to ``path`` with every initializer of at least 1 KiB in
    ``data_name`` beside it, streaming tensor by tensor: the model itself is neither
    copied nor changed (onnx's own external-data writer rewrites the model in place), at
    most one payload is copied at a time, and weights still on disk are copied file to
    file. ``ir_version`` replaces the model's (for runtimes that read older ones)."""
    out = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, field, getattr(model, field))
    if ir_version is not None:
        out.ir_version = ir_version
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
            disk = on_disk(t)
            payload = b"" if disk or not t.HasField("raw_data") else t.raw_data
            size = payload_nbytes(t) if disk else len(payload)
            if size < EXTERNAL_MIN_BYTES:
                g.initializer.append(t)
                continue
            pad = (-offset) % 4096  # aligned, as onnx's writer does, so runtimes may map it
            data.write(b"\0" * pad)
            offset += pad
            if disk:
                copy_from_disk(t, data)
            else:
                data.write(payload)
            del payload  # before the next one is read
            ref = g.initializer.add(name=t.name, data_type=t.data_type, dims=t.dims, doc_string=t.doc_string)
            ref.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(size))):
                entry = ref.external_data.add()
                entry.key, entry.value = key, value
            offset += size
        data.flush()
        os.fsync(data.fileno())
    with open(path, "wb") as f:
        f.write(out.SerializeToString())
        f.flush()
        os.fsync(f.fileno())


# -------------------------------------------------- serializing a large model in pieces


def write_serialized(model: onnx.ModelProto, out) -> None:
    """Write exactly ``model.SerializeToString()`` to the open file ``out`` without ever
    holding it: the graph's nodes and tensors are serialized one at a time, a tensor's
    payload copied once (SerializeToString holds the whole model twice: upb's buffer and
    the bytes object). Falls back to SerializeToString for what it cannot lay out."""
    start = out.tell()
    try:
        pieces = _layout_model(model)
        if pieces is not None:
            for piece in pieces:
                _write_piece(piece, out)
            return
    except _Mispredicted:
        out.seek(start)
        out.truncate()
    out.write(model.SerializeToString())


class _Mispredicted(Exception):
    """A payload's length is not what its dims say (then the plain way is taken)."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _tag(number: int) -> bytes:
    return _varint(number << 3 | 2)  # length-delimited


_RAW_DATA = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number


def _repeated(fd) -> bool:
    rep = getattr(fd, "is_repeated", None)
    return rep if rep is not None else fd.label == fd.LABEL_REPEATED


def _copy_field(dst, fd, value) -> None:
    if _repeated(fd):
        getattr(dst, fd.name).extend(value)
    elif fd.message_type is not None:
        getattr(dst, fd.name).CopyFrom(value)
    else:
        setattr(dst, fd.name, value)


def _has_unknown_fields(msg) -> bool:
    try:
        from google.protobuf import unknown_fields

        return len(unknown_fields.UnknownFieldSet(msg)) > 0
    except Exception:  # no way to tell: take the plain way
        return True


def _runs(msg, split) -> list:
    """``msg``'s present fields in field-number order (the order protobuf writes them):
    runs of ordinary fields serialized together as bytes, and ``split(fd, value)``'s
    pieces for the fields it takes (it returns None for the others)."""
    pieces, run = [], None
    for fd, value in sorted(msg.ListFields(), key=lambda fv: fv[0].number):
        own = split(fd, value)
        if own is None:
            if run is None:
                run = type(msg)()
            _copy_field(run, fd, value)
            continue
        if run is not None:
            pieces.append(run.SerializeToString())
            run = None
        pieces.extend(own)
    if run is not None:
        pieces.append(run.SerializeToString())
    return pieces


def _layout_model(model: onnx.ModelProto):
    if _has_unknown_fields(model) or _has_unknown_fields(model.graph):
        return None

    def split_model(fd, value):
        if fd.name != "graph":
            return None
        graph = _runs(value, split_graph)
        return [_tag(fd.number) + _varint(sum(_size(p) for p in graph)), *graph]

    def split_graph(fd, value):
        if not (_repeated(fd) and fd.message_type is not None):
            return None
        if fd.name == "initializer":
            return [_tensor_piece(fd.number, t) for t in value]
        return [_Message(fd.number, m) for m in value]

    return _runs(model, split_model)


class _Message:
    """One element of a repeated message field, serialized when written."""

    def __init__(self, number: int, msg):
        self.msg = msg
        body = msg.ByteSize()
        self.head = _tag(number) + _varint(body)
        self.size = len(self.head) + body

    def write(self, out) -> None:
        out.write(self.head)
        out.write(self.msg.SerializeToString())


class _Tensor:
    """A tensor with a raw payload: its other fields, then the payload copied once."""

    def __init__(self, number: int, t: onnx.TensorProto, length: int):
        self.t, self.length = t, length
        before, after = onnx.TensorProto(), onnx.TensorProto()
        for fd, value in t.ListFields():
            if fd.number != _RAW_DATA:
                _copy_field(before if fd.number < _RAW_DATA else after, fd, value)
        self.before = before.SerializeToString()
        self.raw_head = _tag(_RAW_DATA) + _varint(length)
        self.after = after.SerializeToString()
        body = len(self.before) + len(self.raw_head) + length + len(self.after)
        self.head = _tag(number) + _varint(body)
        self.size = len(self.head) + body

    def write(self, out) -> None:
        out.write(self.head)
        out.write(self.before)
        out.write(self.raw_head)
        raw = self.t.raw_data
        if len(raw) != self.length:
            raise _Mispredicted
        out.write(raw)
        del raw
        out.write(self.after)


_PACKED = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
           if hasattr(onnx.TensorProto, n)}  # several values a byte


def _tensor_piece(number: int, t: onnx.TensorProto):
    if t.HasField("raw_data") and t.data_type not in _PACKED and not _has_unknown_fields(t):
        try:
            return _Tensor(number, t, payload_nbytes(t))
        except (KeyError, ValueError, TypeError):  # a dtype numpy has no size for
            pass
    return _Message(number, t)


def _size(piece) -> int:
    return len(piece) if isinstance(piece, bytes) else piece.size


def _write_piece(piece, out) -> None:
    if isinstance(piece, bytes):
        out.write(piece)
    else:
        piece.write(out)


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
