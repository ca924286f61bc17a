"""Parameters and MACs.

Two views that must agree (a test checks it):

* :func:`count_macs` / :func:`count_params` measure any model from its shapes alone;
  reports use them on the original and the pruned file.
* :class:`CostModel` predicts a plan's MACs from an analysis in microseconds,
  for allocation searches: each costly node's MACs are ``factor * numel(weight)`` and a
  weight's numel after pruning follows from its members' axis maps.
"""

from __future__ import annotations

import math

import onnx

from .shapes import infer_shapes, with_input_shapes
from .weights import WeightStore
from .analysis.spaces import new_length

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def count_params(model: onnx.ModelProto) -> int:
    """Floating-point weights: initializers and Constant-node tensors."""
    total = 0
    for t in model.graph.initializer:
        if t.data_type in FLOAT_TYPES:
            total += math.prod(t.dims)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in FLOAT_TYPES:
                    total += math.prod(a.t.dims)
    return int(total)


def count_macs(model: onnx.ModelProto, input_shapes: dict | None = None) -> int | None:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul, and of ONNX Runtime's
    fused ``Attention`` (QKV projection, Q·Kᵀ and P·V) and ``MultiHeadAttention`` (Q·Kᵀ and
    P·V of 3-D Q/K/V); None when a needed dim stays dynamic (pass ``input_shapes``)."""
    shapes = infer_shapes(with_input_shapes(model, input_shapes))

    def dims(name):
        s = shapes.get(name)
        return s if s is not None and all(isinstance(d, int) for d in s) else None

    total = 0
    for node in model.graph.node:
        op = node.op_type
        if node.domain == "com.microsoft" and op in ("Attention", "MultiHeadAttention"):
            got = _fused_attention_macs(node, dims)
            if got is None:
                return None
            total += got
            continue
        if node.domain not in ("", "ai.onnx") or op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        if op in ("Conv", "ConvTranspose"):
            w, ref = dims(node.input[1]), dims(node.output[0] if op == "Conv" else node.input[0])
            if w is None or ref is None:
                return None
            total += math.prod(w) * ref[0] * math.prod(ref[2:])
        elif op == "Gemm":
            a, y = dims(node.input[0]), dims(node.output[0])
            if a is None or y is None:
                return None
            k = a[0] if _attr(node, "transA", 0) else a[1]
            total += y[0] * y[1] * k
        else:
            a, y = dims(node.input[0]), dims(node.output[0])
            if a is None or y is None:
                return None
            total += math.prod(y) * a[-1]
    return int(total)


def _fused_attention_macs(node, dims) -> int | None:
    """``Attention``: B·S·in·3H + B·S·T·(H_qk + H_v); ``MultiHeadAttention`` with 3-D Q/K/V:
    B·S·T·(H_qk + H_v) (T: key length plus past length); 0 for packed layouts."""
    def inp(i):
        return node.input[i] if len(node.input) > i and node.input[i] else ""

    def past_length(slot: int, axis: int) -> int | None:  # 0 without a past state, None when unknown
        if not inp(slot):
            return 0
        p = dims(inp(slot))
        return None if p is None else p[axis]

    if node.op_type == "Attention":
        x, w = dims(inp(0)), dims(inp(1))
        if x is None or w is None or len(x) != 3:
            return None
        sizes = _attr(node, "qkv_hidden_sizes", None) or [w[1] // 3] * 3
        past = past_length(4, 3)
        if past is None:
            return None
        return x[0] * x[1] * x[2] * w[1] + x[0] * x[1] * (x[1] + past) * (sizes[0] + sizes[2])
    q, k, v = dims(inp(0)), dims(inp(1)) if inp(1) else None, dims(inp(2)) if inp(2) else None
    if not (inp(1) and inp(2)) or any(s is not None and len(s) != 3 for s in (q, k, v)):
        return 0
    if q is None or k is None or v is None:
        return None
    past = past_length(6, 2)
    if past is None:
        return None
    return q[0] * q[1] * (k[1] + past) * (q[2] + v[2])


def macs_unknown_reason(model: onnx.ModelProto, input_shapes: dict | None = None) -> str:
    """Why :func:`count_macs` gave None: dynamic input dims, or the first node whose
    output shapes inference could not work out."""
    concrete = with_input_shapes(model, input_shapes)
    for inp in concrete.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims) and inp.name not in {t.name for t in model.graph.initializer}:
            return f"input '{inp.name}' has dynamic dims: pass --input-shape"
    shapes = infer_shapes(concrete)
    for node in model.graph.node:
        for out in node.output:
            dims = shapes.get(out) if out else []
            if dims is None or any(not isinstance(d, int) for d in dims):
                return f"shapes after {node.op_type} '{node.name or out}' cannot be inferred"
    return "some shapes cannot be inferred"


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def counter(analysis, kept_by_root: dict):
    """``count_of(space)``: the kept count of the space's class, else its full size."""
    find, size = analysis.table.find, analysis.table.size
    return lambda space: kept_by_root.get(find(space), size(space))


def float_weights(model: onnx.ModelProto) -> list[str]:
    """Names of the floating-point constants (what :func:`count_params` counts)."""
    names = [t.name for t in model.graph.initializer if t.data_type in FLOAT_TYPES]
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in FLOAT_TYPES:
                    names.append(node.output[0])
    return names


class CostModel:
    """Fast MACs and parameter counts of an analysis under per-class kept counts (see
    :func:`counter`)."""

    def __init__(self, analysis):
        ctx = analysis.ctx
        self.weights = float_weights(analysis.model)
        self.store: WeightStore = ctx.store
        self.members_by_tensor: dict[str, list] = {}
        for m in ctx.members.values():
            self.members_by_tensor.setdefault(m.tensor, []).append(m)
        self.costs = ctx.costs
        self.macs_known = all(c.factor is not None for c in self.costs)

    def numel(self, tensor: str, count_of) -> int:
        shape = list(self.store.shape(tensor))
        for m in self.members_by_tensor.get(tensor, ()):
            shape[m.axis] = new_length(m.amap, count_of)
        return math.prod(shape)

    def node_macs(self, c, count_of) -> float:
        """MACs of one cost entry under ``count_of``."""
        if c.weight is not None:
            return c.factor * self.numel(c.weight, count_of)
        if c.amaps:
            return c.factor * math.prod(new_length(a, count_of) for a in c.amaps)
        return c.fixed

    def macs(self, count_of) -> float | None:
        if not self.macs_known:
            return None
        total = 0.0
        for c in self.costs:
            total += self.node_macs(c, count_of)
        return total

    def params(self, count_of) -> float:
        """Floating-point weights left (shared constants counted once per use: the analysis
        unties them, so ratios stay right where sharing is rare)."""
        return float(sum(self.numel(name, count_of) for name in self.weights))


__all__ = ["count_params", "count_macs", "macs_unknown_reason", "CostModel", "counter", "float_weights"]
