"""Values known before running: constants, and small subgraphs computed from constants and
from static shapes (exporters compute Slice bounds, Pad amounts and Gather indices from
``Shape`` at run time). Evaluated node by node with onnx's reference evaluator."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

MAX_ELEMENTS = 1 << 16
_NEVER = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial")


class Folder:
    def __init__(self, graph: onnx.GraphProto, store, producers: dict, shapes: dict, opset: int, variables=()):
        self.store, self.producers, self.shapes, self.opset = store, producers, shapes, opset
        self._cache: dict[str, np.ndarray | None] = {v: None for v in variables}

    def value(self, name: str) -> np.ndarray | None:
        if name not in self._cache:
            self._cache[name] = None  # guards against cycles in malformed graphs
            self._cache[name] = self._value(name)
        return self._cache[name]

    def _value(self, name: str) -> np.ndarray | None:
        if name in self.store:
            return self.store.get(name)
        node = self.producers.get(name)
        if node is None or node.domain not in ("", "ai.onnx") or node.op_type in _NEVER:
            return None
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None
        if node.op_type in ("Shape", "Size"):
            return self._shape(node, name)
        args = []
        for i in node.input:
            v = self.value(i) if i else None
            if i and (v is None or v.size > MAX_ELEMENTS):
                return None
            args.append(v)
        try:
            outs = _run(node, args, self.opset)
        except Exception:  # not evaluable here: the rule that asked says why it stops
            return None
        for o, v in zip(node.output, outs):
            if o and o != name:
                self._cache.setdefault(o, v)
        return outs[list(node.output).index(name)]

    def _shape(self, node: onnx.NodeProto, name: str) -> np.ndarray | None:
        dims = self.shapes.get(node.input[0])
        if dims is None or any(not isinstance(d, (int, np.integer)) for d in dims):
            return None
        dims = np.asarray(dims, dtype=np.int64)
        if node.op_type == "Size":
            return np.asarray(int(np.prod(dims)), dtype=np.int64)
        attrs = {a.name: a.i for a in node.attribute}
        r = len(dims)
        start, end = attrs.get("start", 0), attrs.get("end", r)
        start = min(max(start + r if start < 0 else start, 0), r)
        end = min(max(end + r if end < 0 else end, 0), r)
        return dims[start:end]


def _run(node: onnx.NodeProto, args: list, opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [f"in{k}" if a is not None else "" for k, a in enumerate(args)]
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in zip(names, args) if n]
    outs = [f"out{k}" if o else "" for k, o in enumerate(node.output)]
    copy = helper.make_node(node.op_type, names, outs, domain=node.domain)
    copy.attribute.extend(node.attribute)
    graph = helper.make_graph([copy], "fold", inputs,
                              [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    got = ReferenceEvaluator(model).run(None, {n: a for n, a in zip(names, args) if n})
    it = iter(got)
    return [np.asarray(next(it)) if o else None for o in outs]
