"""Constant tensors wherever they live, and the graph tidying around them.

Weights live either in ``graph.initializer`` or in ``Constant`` nodes (PaddlePaddle keeps
every weight there); :class:`WeightStore` gives both one interface. Exporters share one
initializer between unrelated layers; :func:`untie_shared_constants` gives every use its
own copy so each can be sliced independently, and :func:`retie_constants` merges copies
that are still identical when saving.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import InvalidModelError, UnsupportedModelError

UNTIED_SUFFIX = "__onnxprune_use"


CACHE_MAX_BYTES = 256 << 20
# Over large models (weights left on disk, or this many bytes of initializers) the cache
# holds values read, at most CACHE_BUDGET_BYTES in all, and no value written: cached
# values are copies, and caching every weight would hold the model a second time.
BOUNDED_CACHE_MODEL_BYTES = 1 << 29
CACHE_BUDGET_BYTES = 64 << 20


class WeightStore:
    """Uniform read/write access to constant tensors: initializers and Constant outputs."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self._init = {t.name: t for t in graph.initializer}
        self._const_nodes = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
                attr = _constant_value_attr(node)
                if attr is not None:
                    self._const_nodes[node.output[0]] = (node, attr)
        self._cache: dict[str, np.ndarray] = {}
        self._cached_bytes = 0
        large = any(on_disk(t) for t in self._init.values()) or \
            sum(_declared_nbytes(t) for t in self._init.values()) >= BOUNDED_CACHE_MODEL_BYTES
        self._budget = CACHE_BUDGET_BYTES if large else None

    def _remember(self, name: str, value: np.ndarray, written: bool = False) -> None:
        self._forget(name)
        if self._budget is not None:  # bounded: what does not fit is read again when needed,
            if written or self._cached_bytes + value.nbytes > self._budget:  # and a value
                return  # written is in the model already (read back in its dtype)
        elif not written and value.nbytes > CACHE_MAX_BYTES:
            return
        self._cache[name] = value
        self._cached_bytes += value.nbytes

    def _forget(self, name: str) -> None:
        old = self._cache.pop(name, None)
        if old is not None:
            self._cached_bytes -= old.nbytes

    def __contains__(self, name: str) -> bool:
        return name in self._init or name in self._const_nodes

    def names(self):
        return list(self._init) + list(self._const_nodes)

    def is_initializer(self, name: str) -> bool:
        return name in self._init

    def get(self, name: str) -> np.ndarray:
        if name in self._cache:
            return self._cache[name]
        if name in self._init:
            try:
                value = tensor_array(self._init[name])
            except ValueError as exc:  # payload size does not match the dims
                raise InvalidModelError(f"initializer '{name}' is corrupt: {exc}") from None
        else:
            node, attr = self._const_nodes[name]
            value = _constant_array(attr)
        if not _mapped(value):  # mapped weights are mapped again instead, and huge ones are
            self._remember(name, value)  # read again rather than held twice
        return value

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self._init:
            return tuple(self._init[name].dims)
        node, attr = self._const_nodes[name]
        if attr.type == onnx.AttributeProto.TENSOR:
            return tuple(attr.t.dims)
        return tuple(self.get(name).shape)

    def set(self, name: str, value: np.ndarray) -> None:
        """Replace a constant's value, keeping its dtype and its location (a weight left
        on disk by the loader is written into the model, as loading it would have)."""
        if name in self._init:
            old = self._init[name]
            arr = np.ascontiguousarray(np.asarray(value).astype(_np_dtype(old.data_type), copy=False))
            disk = on_disk(old)
            if (disk or old.HasField("raw_data")) and sys.byteorder == "little" and arr.dtype.kind in "fiub":
                # in place: one copy of the payload instead of three
                if disk:
                    _detach(old)
                del old.dims[:]
                old.dims.extend(arr.shape)
                old.raw_data = arr.tobytes()
            else:
                old.CopyFrom(_from_array_typed(value, old.data_type, name))
            if arr.nbytes > CACHE_MAX_BYTES:
                self._forget(name)
                return
        else:
            node, attr = self._const_nodes[name]
            if attr.type != onnx.AttributeProto.TENSOR:
                raise UnsupportedModelError(f"Constant node {node.name or name}: cannot rewrite a non-tensor value")
            attr.t.CopyFrom(_from_array_typed(value, attr.t.data_type, attr.t.name))
        self._remember(name, np.asarray(value), written=True)


def tensor_array(t: onnx.TensorProto) -> np.ndarray:
    """A tensor's values; raw little-endian payloads are viewed, not copied twice
    (numpy_helper.to_array copies a 1 GB weight twice); weights the loader left on disk
    are read from their file."""
    if on_disk(t):
        return _disk_array(t)
    if t.HasField("raw_data") and t.data_location != onnx.TensorProto.EXTERNAL and sys.byteorder == "little":
        try:
            dtype = np.dtype(_np_dtype(t.data_type))
        except (KeyError, ValueError, TypeError):
            dtype = None
        if dtype is not None and dtype.kind in "fiub" and dtype.itemsize > 0:
            raw = t.raw_data
            if len(raw) != math.prod(t.dims) * dtype.itemsize:
                raise ValueError(f"{len(raw)} bytes for dims {list(t.dims)} of {dtype}")
            return np.frombuffer(raw, dtype=dtype).reshape(tuple(t.dims))
    return numpy_helper.to_array(t)


# ------------------------------------------------------------- weights left on disk
#
# A model past the protobuf limit cannot be held twice: the loader (model.load_model)
# leaves its large external weights in their files, with the ``location`` made absolute
# and the file registered here, and every reader goes through :func:`tensor_array`. A
# weight is written into the model only when surgery replaces it (its sliced value) or,
# for the ones kept whole, at the end of surgery (:func:`load_from_disk`): the input's
# payloads are never all in memory at once, and none is held next to its replacement for
# longer than one slice. Only files the loader checked are read this way; any other
# external reference keeps onnx's own handling.

_DISK_FILES: set[str] = set()
DISK_MAP_MIN_BYTES = 1 << 20  # weights from this size on are mapped rather than read


def _disk_ref(t: onnx.TensorProto) -> tuple[str, int, int | None]:
    location, offset, length = "", 0, None
    for entry in t.external_data:
        if entry.key == "location":
            location = entry.value
        elif entry.key == "offset":
            offset = int(entry.value)
        elif entry.key == "length":
            length = int(entry.value)
    return location, offset, length


def on_disk(t: onnx.TensorProto) -> bool:
    """Whether the loader left this tensor's payload in its (checked) file."""
    return t.data_location == onnx.TensorProto.EXTERNAL and _disk_ref(t)[0] in _DISK_FILES


def payload_nbytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's values as its dims and dtype say (no payload is read)."""
    return math.prod(t.dims) * np.dtype(_np_dtype(t.data_type)).itemsize


def _declared_nbytes(t: onnx.TensorProto) -> int:
    try:
        return payload_nbytes(t)
    except (KeyError, ValueError, TypeError):
        return 0


def leave_on_disk(t: onnx.TensorProto, path: str) -> None:
    """Point external tensor ``t`` at ``path`` (absolute, already checked by the caller)
    and let :func:`tensor_array` read it from there."""
    path = os.path.realpath(path)
    for entry in t.external_data:
        if entry.key == "location":
            entry.value = path
    _DISK_FILES.add(path)


def _read_disk_bytes(t: onnx.TensorProto) -> bytes:
    location, offset, length = _disk_ref(t)
    want = payload_nbytes(t) if length is None else length
    with open(location, "rb") as f:
        f.seek(offset)
        data = f.read(want)
    if len(data) != want:
        raise InvalidModelError(f"initializer '{t.name}': its external data file {location} ends early")
    return data


def _disk_array(t: onnx.TensorProto) -> np.ndarray:
    location, offset, length = _disk_ref(t)
    dtype = np.dtype(_np_dtype(t.data_type))
    count = math.prod(t.dims)
    if length is not None and length != count * dtype.itemsize:
        raise ValueError(f"{length} bytes for dims {list(t.dims)} of {dtype}")
    if sys.byteorder != "little" or dtype.kind not in "fiub" or dtype.itemsize == 0:
        tmp = onnx.TensorProto(data_type=t.data_type, dims=t.dims, raw_data=_read_disk_bytes(t))
        return numpy_helper.to_array(tmp)
    if count * dtype.itemsize > DISK_MAP_MIN_BYTES:
        # mapped, read-only: what is read costs page cache, not a copy (never cached: the
        # mapping goes with the array)
        if os.path.getsize(location) < offset + count * dtype.itemsize:
            raise InvalidModelError(f"initializer '{t.name}': its external data file {location} ends early")
        return np.memmap(location, dtype=dtype, mode="r", offset=offset, shape=tuple(t.dims)).view(np.ndarray)
    with open(location, "rb") as f:  # straight into the array: no bytes object in between
        value = np.fromfile(f, dtype=dtype, count=count, offset=offset)
    if value.size != count:
        raise InvalidModelError(f"initializer '{t.name}': its external data file {location} ends early")
    value.flags.writeable = False  # as a view of a protobuf payload is
    return value.reshape(tuple(t.dims))


def _mapped(value: np.ndarray) -> bool:
    while isinstance(value, np.ndarray):
        if isinstance(value, np.memmap):
            return True
        value = value.base
    return False


def _detach(t: onnx.TensorProto) -> None:
    """Turn an on-disk tensor into an in-memory one, as onnx's loader does (the caller
    sets its payload)."""
    t.data_location = onnx.TensorProto.DEFAULT
    del t.external_data[:]


def copy_from_disk(t: onnx.TensorProto, out, chunk: int = 64 << 20) -> None:
    """Copy an on-disk tensor's payload into the open file ``out``, a chunk at a time."""
    location, offset, length = _disk_ref(t)
    left = payload_nbytes(t) if length is None else length
    with open(location, "rb") as f:
        f.seek(offset)
        while left:
            block = f.read(min(chunk, left))
            if not block:
                raise InvalidModelError(f"initializer '{t.name}': its external data file {location} ends early")
            out.write(block)
            left -= len(block)


def load_from_disk(model: onnx.ModelProto) -> None:
    """Write every weight still left on disk into the model, one at a time, so the model
    no longer depends on the input's files (what onnx's loader would have produced)."""
    for t in model.graph.initializer:
        if on_disk(t):
            data = _read_disk_bytes(t)
            _detach(t)
            t.raw_data = data
            del data


def _constant_value_attr(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            return attr
    return None


def _constant_array(attr: onnx.AttributeProto) -> np.ndarray:
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.name == "value_float":
        return np.array(attr.f, dtype=np.float32)
    if attr.name == "value_floats":
        return np.array(list(attr.floats), dtype=np.float32)
    if attr.name == "value_int":
        return np.array(attr.i, dtype=np.int64)
    return np.array(list(attr.ints), dtype=np.int64)


def _np_dtype(onnx_type: int):
    return onnx.helper.tensor_dtype_to_np_dtype(onnx_type)


def _from_array_typed(value: np.ndarray, onnx_type: int, name: str) -> onnx.TensorProto:
    arr = np.ascontiguousarray(np.asarray(value).astype(_np_dtype(onnx_type), copy=False))
    tensor = numpy_helper.from_array(arr, name)
    if tensor.data_type != onnx_type:
        tensor = onnx.helper.make_tensor(name, onnx_type, arr.shape, arr.tobytes(), raw=True)
    return tensor


# ------------------------------------------------------------------- untie / retie


def subgraph_references(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    refs: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            refs |= _free_names(g)
    return refs


def _free_names(graph: onnx.GraphProto) -> set[str]:
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        used |= subgraph_references(node)
        defined.update(node.output)
    used.update(o.name for o in graph.output)
    return used - defined


def untie_shared_constants(model: onnx.ModelProto) -> dict[str, str]:
    """Give every (node, input slot) use of a constant its own copy, in place.

    Returns {copy_name: original_name}. Uses from subgraphs and graph outputs keep the
    original name (those are never sliced).
    """
    graph = model.graph
    store = WeightStore(graph)
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    pinned: set[str] = {o.name for o in graph.output}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name and name in store:
                uses.setdefault(name, []).append((node, slot))
        pinned |= subgraph_references(node)
    copies: dict[str, str] = {}
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    const_positions = {n.output[0]: i for i, n in enumerate(graph.node) if n.op_type == "Constant" and n.output}
    inserts: list[tuple[int, onnx.NodeProto]] = []
    for name, slots in uses.items():
        n_private = len(slots) - (0 if name in pinned else 1)
        if n_private <= 0:
            continue
        for k, (node, slot) in enumerate(slots[len(slots) - n_private :], start=1):
            new = f"{name}{UNTIED_SUFFIX}{k}"
            while new in taken:
                new += "_"
            taken.add(new)
            if store.is_initializer(name):
                tensor = graph.initializer.add()  # copied once, straight into the graph
                tensor.CopyFrom(store._init[name])
                tensor.name = new
            else:
                src, _ = store._const_nodes[name]
                clone = onnx.NodeProto()
                clone.CopyFrom(src)
                clone.name = (src.name or "Constant") + f"{UNTIED_SUFFIX}{k}"
                del clone.output[:]
                clone.output.append(new)
                inserts.append((const_positions[name], clone))
            node.input[slot] = new
            copies[new] = name
    for pos, clone in sorted(inserts, key=lambda x: -x[0]):
        graph.node.insert(pos + 1, clone)
    return copies


def retie_constants(model: onnx.ModelProto, copies: dict[str, str]) -> None:
    """Merge untied initializer copies that are still byte-identical to a sibling, in place."""
    graph = model.graph
    by_name = {t.name: t for t in graph.initializer}
    families: dict[str, list[str]] = {}
    for new, orig in copies.items():
        if new in by_name:
            families.setdefault(orig, []).append(new)
    rename: dict[str, str] = {}
    for orig, members in families.items():
        names = ([orig] if orig in by_name else []) + members
        seen: dict[bytes, str] = {}
        for name in names:
            t = by_name[name]
            # a digest of the values, not the values: one payload in memory at a time
            key = bytes([t.data_type]) + repr(list(t.dims)).encode() + _tensor_digest(t)
            if key in seen:
                rename[name] = seen[key]
            else:
                seen[key] = name
    if not rename:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    _delete_where(graph.initializer, lambda t: t.name in rename)


def _tensor_digest(t: onnx.TensorProto) -> bytes:
    value = np.ascontiguousarray(tensor_array(t)).reshape(-1)  # one copy at most (to_array makes two)
    data = value.tobytes() if value.dtype.hasobject else value.view(np.uint8)
    return hashlib.sha256(data).digest()


def _delete_where(items, drop) -> None:
    """Delete the elements of a repeated protobuf field for which ``drop`` holds, by index:
    clearing and re-extending would copy every kept element (weights included)."""
    for i in reversed([i for i, item in enumerate(items) if drop(item)]):
        del items[i]


def remove_unused(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads and initializers nobody uses, in place."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    dead = set()
    for i in reversed(range(len(graph.node))):
        node = graph.node[i]
        if any(o in needed for o in node.output if o):
            needed.update(n for n in node.input if n)
            needed |= subgraph_references(node)
        else:
            dead.add(i)
    for i in sorted(dead, reverse=True):  # by index: Constant nodes may hold weights
        del graph.node[i]
    _delete_where(graph.initializer, lambda t: t.name not in needed)


