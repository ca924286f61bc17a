"""Graph plumbing for the repair passes: who produces and reads each tensor, which nodes
a tensor depends on, constants read and written per node input, and truncated copies of
a model that expose chosen intermediate tensors as outputs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..weights import WeightStore, subgraph_references


class GraphIndex:
    """Use-def maps of one model's main graph (rebuild it after editing the graph)."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.model = model
        self.store = WeightStore(g)
        self.order = {n.name: i for i, n in enumerate(g.node)}
        self.node = {n.name: n for n in g.node}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.readers: dict[str, list] = {}
        for n in g.node:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in list(n.input) + sorted(subgraph_references(n)):
                if i:
                    self.readers.setdefault(i, []).append(n)
        self.inputs = [i.name for i in g.input if i.name not in {t.name for t in g.initializer}]
        self.outputs = {o.name for o in g.output}

    def constant_source(self, name: str) -> str:
        """``name``, or the constant it copies through a chain of Identity nodes (the
        TorchScript exporter shares equal initializers that way, e.g. a zero bias)."""
        for _ in range(64):
            if name in self.store:
                return name
            node = self.producer.get(name)
            if node is None or node.op_type != "Identity" or not node.input:
                return name
            name = node.input[0]
        return name

    def is_const(self, name: str) -> bool:
        return self.constant_source(name) in self.store

    def const(self, name: str) -> np.ndarray:
        return self.store.get(self.constant_source(name))

    def sole_reader(self, tensor: str):
        """The only node reading ``tensor`` (None when several, none, or it is a graph output)."""
        got = self.readers.get(tensor, [])
        if len(got) != 1 or tensor in self.outputs:
            return None
        return got[0]

    def ancestors(self, tensors, stop=()) -> set[str]:
        """Names of the nodes needed to compute ``tensors``, not walking past the tensors in
        ``stop`` (already known values)."""
        seen: set[str] = set()
        stack = list(tensors)
        done_t: set[str] = set()
        while stack:
            t = stack.pop()
            if t in done_t or t in stop:
                continue
            done_t.add(t)
            n = self.producer.get(t)
            if n is None or n.name in seen:
                continue
            seen.add(n.name)
            stack.extend(i for i in n.input if i)
            stack.extend(subgraph_references(n))
        return seen

    def descendants(self, names) -> set[str]:
        """Names of the nodes downstream of the nodes ``names`` (themselves included)."""
        out = set(names)
        stack = [self.node[n] for n in names if n in self.node]
        while stack:
            n = stack.pop()
            for o in n.output:
                for r in self.readers.get(o, []):
                    if r.name not in out:
                        out.add(r.name)
                        stack.append(r)
        return out


def exposing(model: onnx.ModelProto, index: GraphIndex, tensors: list[str], nodes: set[str] | None = None,
             fed: dict | None = None) -> onnx.ModelProto:
    """A copy of ``model`` holding only ``nodes`` (default: all needed for ``tensors``),
    with ``tensors`` as its outputs. Its inputs are the graph inputs those nodes read and
    the tensors of ``fed`` ({name: numpy dtype}), values computed elsewhere."""
    need = index.ancestors(tensors) if nodes is None else nodes
    fed = fed or {}
    g = model.graph
    m = onnx.ModelProto()
    m.ir_version = model.ir_version
    m.opset_import.extend(model.opset_import)
    m.functions.extend(model.functions)
    m.producer_name = "onnxprune-recover"
    sub = m.graph
    sub.name = g.name or "recover"
    kept = [n for n in g.node if n.name in need]
    sub.node.extend(kept)
    used = {i for n in kept for i in n.input if i} | {r for n in kept for r in subgraph_references(n)}
    sub.initializer.extend(t for t in g.initializer if t.name in used and t.name not in fed)
    sub.sparse_initializer.extend(t for t in g.sparse_initializer if t.values.name in used)
    inits = {t.name for t in g.initializer}
    sub.input.extend(i for i in g.input if i.name in used and i.name not in fed and i.name not in inits)
    for name, dtype in fed.items():
        sub.input.append(onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(dtype), None))
    for t in tensors:
        sub.output.append(onnx.ValueInfoProto(name=t))
    return m


def unique_name(index: GraphIndex, base: str, taken: set | None = None) -> str:
    names = set(index.producer) | set(index.store.names()) | set(index.inputs) | (taken or set())
    name = base
    while name in names:
        name += "_"
    return name


def set_const_input(model: onnx.ModelProto, index: GraphIndex, node: onnx.NodeProto, slot: int,
                    value: np.ndarray, dtype, label: str) -> None:
    """Make input ``slot`` of ``node`` the constant ``value`` (cast to ``dtype``): rewritten
    in place when it is an initializer only this node reads, else a new initializer."""
    value = np.ascontiguousarray(np.asarray(value).astype(dtype))
    name = node.input[slot] if len(node.input) > slot else ""
    graph = model.graph
    if name and index.store.is_initializer(name) and len(index.readers.get(name, [])) == 1 \
            and name not in index.outputs:
        index.store.set(name, value)
        return
    new = unique_name(index, f"{node.name}_{label}")
    graph.initializer.append(numpy_helper.from_array(value, new))
    if model.ir_version < 4:  # initializers had to be graph inputs then
        graph.input.append(onnx.helper.make_tensor_value_info(new, numpy_helper.from_array(value).data_type,
                                                              value.shape))
    while len(node.input) <= slot:
        node.input.append("")
    node.input[slot] = new
    index.store = WeightStore(graph)
    index.readers.setdefault(new, []).append(node)


def match_rows(dense: np.ndarray, pruned: np.ndarray) -> np.ndarray | None:
    """Positions of ``pruned``'s rows among ``dense``'s rows, in order (surgery copies rows
    unchanged); None when they do not match or the match is ambiguous."""
    d = np.ascontiguousarray(dense.reshape(dense.shape[0], -1))
    p = np.ascontiguousarray(pruned.reshape(pruned.shape[0], -1))
    if d.shape[1] != p.shape[1] or p.shape[0] > d.shape[0]:
        return None
    keys: dict[bytes, list] = {}
    for i, row in enumerate(d):
        keys.setdefault(row.tobytes(), []).append(i)
    out, last = [], -1
    for row in p:
        cands = [i for i in keys.get(row.tobytes(), []) if i > last]
        if not cands:
            return None
        if len(keys[row.tobytes()]) > 1:  # duplicate rows: which one survived is unknowable
            return None
        last = cands[0]
        out.append(last)
    return np.asarray(out, dtype=np.int64)
