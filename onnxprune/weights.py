"""Constant tensors wherever they live, and the graph tidying around them.

Weights live either in ``graph.initializer`` or in ``Constant`` nodes (PaddlePaddle keeps
every weight there); :class:`WeightStore` gives both one interface. Exporters share one
initializer between unrelated layers; :func:`untie_shared_constants` gives every use its
own copy so each can be sliced independently, and :func:`retie_constants` merges copies
that are still identical when saving.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import InvalidModelError, UnsupportedModelError

UNTIED_SUFFIX = "__onnxprune_use"


CACHE_MAX_BYTES = 256 << 20


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
        if value.nbytes <= CACHE_MAX_BYTES:  # huge weights are read again when needed instead
            self._cache[name] = value  # of being held twice (array + protobuf payload)
        return value

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self._init:
            return tuple(self._init[name].dims)
        node, attr = self._const_nodes[name]
        if attr.type == onnx.AttributeProto.TENSOR:
            return tuple(attr.t.dims)
        return tuple(self.get(name).shape)

    def set(self, name: str, value: np.ndarray) -> None:
        """Replace a constant's value, keeping its dtype and its location."""
        if name in self._init:
            old = self._init[name]
            arr = np.ascontiguousarray(np.asarray(value).astype(_np_dtype(old.data_type), copy=False))
            if old.HasField("raw_data") and sys.byteorder == "little" and arr.dtype.kind in "fiub":
                # in place: one copy of the payload instead of three
                del old.dims[:]
                old.dims.extend(arr.shape)
                old.raw_data = arr.tobytes()
            else:
                old.CopyFrom(_from_array_typed(value, old.data_type, name))
            if arr.nbytes > CACHE_MAX_BYTES:
                self._cache.pop(name, None)
                return
        else:
            node, attr = self._const_nodes[name]
            if attr.type != onnx.AttributeProto.TENSOR:
                raise UnsupportedModelError(f"Constant node {node.name or name}: cannot rewrite a non-tensor value")
            attr.t.CopyFrom(_from_array_typed(value, attr.t.data_type, attr.t.name))
        self._cache[name] = np.asarray(value)


def tensor_array(t: onnx.TensorProto) -> np.ndarray:
    """A tensor's values; raw little-endian payloads are viewed, not copied twice
    (numpy_helper.to_array copies a 1 GB weight twice)."""
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
                tensor = onnx.TensorProto()
                tensor.CopyFrom(store._init[name])
                tensor.name = new
                graph.initializer.append(tensor)
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
            key = bytes([t.data_type]) + repr(list(t.dims)).encode() + _tensor_payload(t)
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
    keep = [t for t in graph.initializer if t.name not in rename]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _tensor_payload(t: onnx.TensorProto) -> bytes:
    return numpy_helper.to_array(t).tobytes()


def remove_unused(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody reads and initializers nobody uses, in place."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep_nodes = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            keep_nodes.append(node)
            needed.update(n for n in node.input if n)
            needed |= subgraph_references(node)
    keep_nodes.reverse()
    if len(keep_nodes) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep_nodes)
    inits = [t for t in graph.initializer if t.name in needed]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)


