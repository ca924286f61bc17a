"""A Conv/Gemm/MatMul as the linear map the repair fits: its weights in one "math form"
W (d inputs, c outputs) plus bias b, the design rows its input gives (im2col patches for
Conv), its output rows, and writing a new (W, b) back into the model in its dtype
(creating the bias when the node had none).

Also what the layer's output feeds: a BatchNormalization and then a residual Add, so the
fit can target the Add's dense output minus the pruned skip input (the layer absorbs the
error that reaches the Add through the skip path)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graphs import GraphIndex, match_rows, set_const_input, unique_name
from .gram import channels_last, conv_pads, im2col


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


@dataclass
class Chain:
    """Per-channel affine BN after the layer (y = a·u + c) and a residual Add after that."""

    bn: str | None = None
    a: np.ndarray | None = None
    c: np.ndarray | None = None
    add: str | None = None  # the Add node
    skip: str | None = None  # its other input (pruned model)
    add_out: str | None = None


class Linear:
    """One Conv (group 1), Gemm (transA any) or MatMul (constant 2-D right operand)."""

    def __init__(self, index: GraphIndex, name: str, kept_in=None, kept_out=None):
        node = index.node[name]
        self.name, self.op = name, node.op_type
        self.x = node.input[0]
        self.wname = node.input[1]
        self.kept_in, self.kept_out = kept_in, kept_out
        w = index.const(self.wname)
        self.dtype = w.dtype
        self.wshape = w.shape
        self.out = node.output[0]
        self.bias_add = None  # MatMul: the Add holding its bias (node name, slot)
        if self.op == "Conv":
            self.kernel = list(w.shape[2:])
            k = len(self.kernel)
            self.strides = attr(node, "strides", [1] * k)
            self.dilations = attr(node, "dilations", [1] * k)
            self.pads = attr(node, "pads", None)
            ap = attr(node, "auto_pad", b"NOTSET")
            self.auto_pad = ap.decode() if isinstance(ap, bytes) else ap
            self.axis = 1
        elif self.op == "Gemm":
            self.alpha = float(attr(node, "alpha", 1.0))
            self.beta = float(attr(node, "beta", 1.0))
            self.transA = int(attr(node, "transA", 0))
            self.transB = int(attr(node, "transB", 0))
            self.axis = 1
        else:  # MatMul
            self.axis = -1
            r = index.sole_reader(self.out)
            if r is not None and r.op_type == "Add" and len(r.input) == 2:
                slot = 1 if r.input[0] == self.out else 0
                other = r.input[slot]
                if other != self.out and index.is_const(other):
                    b = index.const(other)
                    if b.size == w.shape[1] and b.shape[-1:] == (w.shape[1],):
                        self.bias_add = (r.name, slot)
                        self.out = r.output[0]

    # ---- checks -------------------------------------------------------------------------
    @staticmethod
    def unsupported(index: GraphIndex, name: str) -> str | None:
        """Why ``name`` cannot be refitted (None when it can)."""
        node = index.node.get(name)
        if node is None:
            return "node not found in the pruned model"
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            return f"{node.op_type} is not refitted"
        if len(node.input) < 2 or not index.is_const(node.input[1]):
            return "its weight is not a constant of the pruned model"
        if index.is_const(node.input[0]):
            return "its data input is a constant"
        w = index.const(node.input[1])
        if w.dtype.kind != "f":
            return f"{w.dtype} weights are not refitted"
        if node.op_type == "Conv":
            if int(attr(node, "group", 1)) != 1:
                return "grouped convolution"
            if len(node.input) > 2 and node.input[2] and not index.is_const(node.input[2]):
                return "its bias is not a constant"
        if node.op_type == "Gemm":
            if len(node.input) > 2 and node.input[2]:
                if not index.is_const(node.input[2]):
                    return "its bias C is not a constant"
                n = w.shape[0] if int(attr(node, "transB", 0)) else w.shape[1]
                c = index.const(node.input[2])
                if c.size not in (1, n) or c.shape[-1:] not in ((n,), (1,)):
                    return "its bias C is not one value per output"
        if node.op_type == "MatMul" and w.ndim != 2:
            return "MatMul with a weight that is not 2-D"
        return None

    # ---- weights ------------------------------------------------------------------------
    def math_weight(self, w: np.ndarray) -> np.ndarray:
        """(d, c) float64 matrix of a weight tensor of this layer's kind."""
        w = np.asarray(w, dtype=np.float64)
        if self.op == "Conv":
            return w.reshape(w.shape[0], -1).T
        if self.op == "Gemm":
            return self.alpha * (w.T if self.transB else w)
        return w

    def weights(self, index: GraphIndex) -> tuple[np.ndarray, np.ndarray]:
        node = index.node[self.name]
        W = self.math_weight(index.const(node.input[1]))
        c = W.shape[1]
        b = np.zeros(c)
        if self.op == "Conv" and len(node.input) > 2 and node.input[2]:
            b = np.asarray(index.const(node.input[2]), np.float64).reshape(c)
        elif self.op == "Gemm" and len(node.input) > 2 and node.input[2]:
            b = self.beta * np.broadcast_to(np.asarray(index.const(node.input[2]), np.float64).reshape(-1), (c,))
        elif self.op == "MatMul" and self.bias_add is not None:
            add = index.node[self.bias_add[0]]
            b = np.asarray(index.const(add.input[self.bias_add[1]]), np.float64).reshape(c)
        return W, b.copy()

    def taps(self) -> int:
        return int(np.prod(self.kernel)) if self.op == "Conv" else 1

    def write(self, model: onnx.ModelProto, index: GraphIndex, W: np.ndarray, b: np.ndarray) -> None:
        node = index.node[self.name]
        if self.op == "Conv":
            w = W.T.reshape(self.wshape)
        elif self.op == "Gemm":
            w = W / self.alpha
            w = w.T if self.transB else w
        else:
            w = W
        set_const_input(model, index, node, 1, w, self.dtype, "weight")
        if self.op == "Conv":
            set_const_input(model, index, node, 2, b, self.dtype, "bias")
        elif self.op == "Gemm":
            beta = self.beta
            if beta == 0.0:  # C was ignored: it becomes the bias
                keep = [a for a in node.attribute if a.name != "beta"]
                del node.attribute[:]
                node.attribute.extend(keep + [helper.make_attribute("beta", 1.0)])
                beta = self.beta = 1.0
            old = index.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            shape = old.shape if old is not None and old.size == b.size else b.shape
            set_const_input(model, index, node, 2, (b / beta).reshape(shape), self.dtype, "bias")
        elif self.bias_add is not None:
            add = index.node[self.bias_add[0]]
            old = index.const(add.input[self.bias_add[1]])
            set_const_input(model, index, add, self.bias_add[1], b.reshape(old.shape), self.dtype, "bias")
        else:
            self._insert_bias_add(model, index, b)

    def _insert_bias_add(self, model, index: GraphIndex, b: np.ndarray) -> None:
        """MatMul without bias: its output is renamed and an Add of the new bias produces
        the original name (readers and graph outputs are untouched)."""
        node = index.node[self.name]
        graph = model.graph
        raw = unique_name(index, f"{self.out}_nobias")
        bname = unique_name(index, f"{self.name}_bias", {raw})
        graph.initializer.append(numpy_helper.from_array(np.asarray(b).astype(self.dtype), bname))
        add = helper.make_node("Add", [raw, bname], [self.out], name=unique_name(index, f"{self.name}_bias_add"))
        node.output[0] = raw
        pos = next(i for i, n in enumerate(graph.node) if n.name == self.name)
        graph.node.insert(pos + 1, add)

    # ---- rows ---------------------------------------------------------------------------
    def in_axis(self, ndim: int) -> int:
        """The data input's channel axis (the one the weight contracts)."""
        if self.op == "Gemm":
            return 0 if self.transA else 1
        return 1 if self.op == "Conv" else ndim - 1

    def sample_axis(self) -> int:
        return 1 if self.op == "Gemm" and self.transA else 0

    def design(self, x: np.ndarray) -> np.ndarray:
        """Design rows (float64) of an input batch (pruned model: only kept inputs)."""
        if self.op == "Conv":
            pads = conv_pads(self.auto_pad, x.shape[2:], self.kernel, self.strides, self.dilations, self.pads)
            return im2col(x, self.kernel, self.strides, pads, self.dilations)
        if self.op == "Gemm":
            x = x.T if self.transA else x
            return np.asarray(x, np.float64)
        return np.asarray(x, np.float64).reshape(-1, x.shape[-1])

    def rows(self, y: np.ndarray, kept: np.ndarray | None = None) -> np.ndarray:
        """Output rows (float64) of a tensor shaped like this layer's output."""
        return channels_last(y, self.axis % y.ndim, kept)

    def rows_per_sample(self, x: np.ndarray) -> int:
        return max(1, self.design(x[:1] if self.sample_axis() == 0 else x[:, :1]).shape[0])


def find_chain(index: GraphIndex, unit: Linear, c: int) -> Chain:
    """BatchNormalization (inference form) then Add with a non-constant other input."""
    chain = Chain()
    t = unit.out
    r = index.sole_reader(t)
    if r is not None and r.op_type == "BatchNormalization" and len(r.output) == 1 and unit.op == "Conv" \
            and not attr(r, "training_mode", 0) and all(index.is_const(i) for i in r.input[1:5]):
        scale, bias, mean, var = (np.asarray(index.const(i), np.float64).reshape(-1) for i in r.input[1:5])
        a = scale / np.sqrt(var + float(attr(r, "epsilon", 1e-5)))
        if len(a) == c:
            chain.bn, chain.a, chain.c = r.name, a, bias - a * mean
            t = r.output[0]
            r = index.sole_reader(t)
    if r is not None and r.op_type == "Add" and len(r.input) == 2 and t in r.input:
        other = r.input[1] if r.input[0] == t else r.input[0]
        if other != t and not index.is_const(other) and (chain.a is None or np.all(np.abs(chain.a) > 1e-12)):
            chain.add, chain.skip, chain.add_out = r.name, other, r.output[0]
    return chain


def _rows_out(op: str, node, w: np.ndarray) -> np.ndarray:
    """The weight with one row per output channel."""
    if op == "Conv":
        return w.reshape(w.shape[0], -1)
    if op == "Gemm" and int(attr(node, "transB", 0)):
        return w
    return w.T


def downstream_targets(index: GraphIndex, dense: GraphIndex, targets: dict) -> dict:
    """Every refittable layer downstream of ``targets`` whose own inputs were not cut (its
    input still changed): all inputs kept, surviving outputs found by matching its weight
    rows with the dense layer's."""
    from .targets import RepairTarget

    out = {}
    for name in sorted(index.descendants(list(targets)) - set(targets), key=index.order.get):
        if Linear.unsupported(index, name) or name not in dense.node:
            continue
        node, dnode = index.node[name], dense.node[name]
        w, wd = index.const(node.input[1]), dense.const(dnode.input[1])
        rows, drows = _rows_out(node.op_type, node, w), _rows_out(node.op_type, dnode, wd)
        if rows.shape[1] != drows.shape[1]:
            continue
        kept = match_rows(drows, rows)
        if kept is None:
            continue
        length = w.shape[1] if node.op_type == "Conv" else (
            w.shape[1] if node.op_type == "Gemm" and int(attr(node, "transB", 0)) else w.shape[0])
        out[name] = RepairTarget(name, node.op_type, node.input[1], length, np.arange(length),
                                 None if len(kept) == drows.shape[0] else kept)
    return out
