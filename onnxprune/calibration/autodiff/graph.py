"""The builder the rules emit backward nodes through: fresh names, constants as
initializers, and what the forward graph knows (shapes, element types, constant values)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...shapes import skeleton
from ...weights import WeightStore
from .fold import Folder
from .rules import NoRule

FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                         onnx.TensorProto.BFLOAT16})

_BOOL_OUT = frozenset({"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Not", "Xor"})


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor onnx can tell (declared, else inferred)."""
    g = model.graph
    types: dict[str, int] = {t.name: t.data_type for t in g.initializer}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), check_type=False, strict_mode=False)
    except Exception:  # best effort: unknown types count as float (conservative: they block)
        return types
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return types


class Builder:
    """Collects the backward nodes and initializers for one forward graph."""

    def __init__(self, model: onnx.ModelProto, shapes: dict, opset: int, types: dict[str, int] | None = None,
                 variables=()):
        g = model.graph
        self.model, self.graph, self.opset = model, g, opset
        self.shapes = shapes
        self.types = dict(types) if types is not None else elem_types(model)
        self.producers = {o: n for n in g.node for o in n.output if o}
        self.nodes: list[onnx.NodeProto] = []
        self.produced: set[str] = set()  # outputs of the backward nodes
        self.inits: list[onnx.TensorProto] = []
        self.extended: list[tuple[onnx.NodeProto, int]] = []  # forward nodes given extra outputs
        self._taken = {t.name for t in g.initializer} | {v.name for v in list(g.input) + list(g.output)}
        self._taken |= {v.name for v in g.value_info} | {o for n in g.node for o in n.output} | {n.name for n in g.node}
        self._n = 0
        self._consts: dict[tuple, str] = {}
        # the wrt tensors are variables even when initializers: never folded into a constant
        variables = [v for v in variables if self.is_float(v)]
        self._folder = Folder(g, WeightStore(g), self.producers, shapes, opset, variables)

    # ---- names and nodes ----------------------------------------------------------
    def fresh(self, hint: str) -> str:
        while True:
            self._n += 1
            name = f"bw{self._n}_{hint}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def op(self, op_type: str, inputs, hint: str | None = None, n_out: int = 1, **attrs):
        """Emit one node; returns its output name (a list when ``n_out`` > 1)."""
        outs = [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh(op_type), **attrs))
        self.produced.update(outs)
        elem = self._out_type(op_type, list(inputs), attrs)
        if elem:
            self.types.update((o, elem) for o in outs)
        return outs if n_out > 1 else outs[0]

    def _out_type(self, op_type: str, inputs: list[str], attrs: dict) -> int | None:
        if op_type == "Cast":
            return attrs["to"]
        if op_type in _BOOL_OUT:
            return onnx.TensorProto.BOOL
        if op_type in ("ArgMax", "ArgMin", "Shape", "Size"):
            return onnx.TensorProto.INT64
        if op_type == "ConstantOfShape":
            return attrs["value"].data_type
        data = inputs[1:2] if op_type == "Where" else inputs
        return next((self.types[i] for i in data if i in self.types), None)

    def forward_output(self, node: onnx.NodeProto, index: int, hint: str, elem: int) -> str:
        """The forward node's optional output ``index`` (of type ``elem``), added when absent;
        :func:`~.walk.finish` removes it again when no backward node reads it."""
        if len(node.output) > index and node.output[index]:
            return node.output[index]
        self.extended.append((node, len(node.output)))
        while len(node.output) < index:
            node.output.append("")
        name = self.fresh(hint)
        node.output.append(name)
        self.types[name] = elem
        return name

    # ---- constants --------------------------------------------------------------
    def const(self, value, elem_type: int | None = None, hint: str = "c") -> str:
        """An initializer holding ``value`` (cast to ``elem_type``); equal values share one."""
        arr = np.asarray(value)
        if elem_type is not None:
            arr = arr.astype(helper.tensor_dtype_to_np_dtype(elem_type))
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            name = self.fresh(hint)
            self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
            self.types[name] = helper.np_dtype_to_tensor_dtype(arr.dtype)
            self._consts[key] = name
        return self._consts[key]

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint="i")

    def scalar(self, value: float, like: str) -> str:
        """A 0-d constant of ``like``'s float type."""
        return self.const(np.asarray(value), self.elem(like), hint="s")

    def zeros(self, shape, like: str) -> str:
        zero = helper.make_tensor("zero", self.elem(like), [1], [0])
        return self.op("ConstantOfShape", [self.ints(shape)], hint="zeros", value=zero)

    # ---- what the forward graph knows ---------------------------------------------
    def elem(self, name: str) -> int:
        """Element type (float32 when unknown)."""
        return self.types.get(name) or onnx.TensorProto.FLOAT

    def is_float(self, name: str) -> bool:
        """Whether ``name`` can carry a gradient (unknown types count as float)."""
        t = self.types.get(name)
        return t is None or t == onnx.TensorProto.UNDEFINED or t in FLOAT_TYPES

    def shape(self, name: str) -> list[int]:
        dims = self.shapes.get(name)
        if dims is None or any(not isinstance(d, (int, np.integer)) or d < 0 for d in dims):
            raise NoRule(f"shape of '{name}' unknown")
        return [int(d) for d in dims]

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def value(self, name: str) -> np.ndarray | None:
        """Value of a constant or of foldable shape arithmetic; None otherwise."""
        return self._folder.value(name) if name else None

    def need_value(self, name: str, what: str) -> np.ndarray:
        v = self.value(name)
        if v is None:
            raise NoRule(f"{what} '{name}' is not constant")
        return v
