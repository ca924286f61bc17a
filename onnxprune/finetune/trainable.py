"""Which weights a finetuning run trains, and the model it trains them in.

- BatchNormalization right after a Conv/ConvTranspose/Gemm is folded into it first (its
  statistics frozen at the values the model has; folding is exact in inference mode and
  leaves one weight and one bias to train instead of four vectors and an extra op).
- Trainable: float32 initializers read as *data* by an op that mixes them linearly or
  per channel — the weight and bias slots of Conv, ConvTranspose, Gemm, MatMul, Einsum,
  the scale and bias of the normalizations, PRelu slopes, embedding tables (Gather), and
  per-channel vectors (one dim > 1 at most) added or multiplied elementwise. Scalars,
  masks and other full-shape constants, shape and index tensors stay constants.
- The trainable initializers become graph inputs, so one ORT session runs every step
  with the current values fed in.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..registry import OpRegistry

# op type -> input slots holding trainable weights
SLOTS = OpRegistry("trainable slots")
for _op, _slots in (("Conv", (1, 2)), ("ConvTranspose", (1, 2)), ("Gemm", (0, 1, 2)), ("MatMul", (0, 1)),
                    ("Einsum", (0, 1)), ("BatchNormalization", (1, 2)), ("LayerNormalization", (1, 2)),
                    ("InstanceNormalization", (1, 2)), ("PRelu", (1,)), ("Gather", (0,))):
    SLOTS.register(_op)(_slots)
ELEMENTWISE = frozenset({"Add", "Sub", "Mul"})  # per-channel vectors only
FOLDABLE = frozenset({"Conv", "ConvTranspose", "Gemm"})


def _attr(node, name, default):
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


def fold_batchnorms(model: onnx.ModelProto) -> int:
    """Fold inference-mode BatchNormalization into the Conv/ConvTranspose/Gemm feeding it
    alone (in place); returns how many were folded."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    outputs = {o.name for o in g.output}
    producers = {o: n for n in g.node for o in n.output}
    folded, drop = 0, []
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
            continue
        if len([o for o in bn.output if o]) > 1 or _attr(bn, "training_mode", 0):
            continue
        prod = producers.get(bn.input[0])
        if prod is None or prod.op_type not in FOLDABLE or readers.get(bn.input[0], 0) != 1 or bn.input[0] in outputs:
            continue
        if any(i not in inits for i in bn.input[1:5]) or len(prod.input) < 2 or prod.input[1] not in inits:
            continue
        if prod.op_type == "Gemm" and _attr(prod, "alpha", 1.0) != 1.0:
            continue
        w = numpy_helper.to_array(inits[prod.input[1]])
        if w.dtype != np.float32:
            continue
        scale, b, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        k = scale / np.sqrt(var + _attr(bn, "epsilon", 1e-5))
        cout = k.shape[0]
        has_bias = len(prod.input) > 2 and prod.input[2] in inits
        bias = numpy_helper.to_array(inits[prod.input[2]]).astype(np.float64) if has_bias else np.zeros(cout)
        if prod.op_type == "Conv":
            w2 = w * k.reshape([-1] + [1] * (w.ndim - 1))
        elif prod.op_type == "ConvTranspose":
            grp = _attr(prod, "group", 1)
            ws = w.reshape(grp, w.shape[0] // grp, cout // grp, *w.shape[2:])
            w2 = (ws * k.reshape(grp, 1, cout // grp, *[1] * (w.ndim - 2))).reshape(w.shape)
        else:  # Gemm: output columns are B's columns (rows with transB)
            if bias.shape != (cout,) and bias.size not in (1, cout):
                continue
            bias = np.broadcast_to(bias, (cout,))
            w2 = w * (k[:, None] if _attr(prod, "transB", 0) else k[None, :])
        if readers.get(prod.input[1], 0) != 1 or (has_bias and readers.get(prod.input[2], 0) != 1):
            continue  # a shared weight would change elsewhere too
        new_bias = (bias - mean) * k + b
        inits[prod.input[1]].CopyFrom(numpy_helper.from_array(w2.astype(np.float32), prod.input[1]))
        bias_name = prod.input[2] if has_bias else f"{prod.input[1]}_bnbias"
        tensor = numpy_helper.from_array(new_bias.astype(np.float32), bias_name)
        if has_bias:
            inits[bias_name].CopyFrom(tensor)
        else:
            g.initializer.append(tensor)
            while len(prod.input) < 3:
                prod.input.append("")
            prod.input[2] = bias_name
        if prod.op_type == "Gemm":
            for a in prod.attribute:
                if a.name == "beta":
                    a.f = 1.0
        prod.output[0] = bn.output[0]
        drop.append(bn)
        folded += 1
    for bn in drop:
        g.node.remove(bn)
    if folded:
        used = {i for n in g.node for i in n.input} | {i.name for i in g.input}
        keep = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
    return folded


def trainable_names(model: onnx.ModelProto, freeze: str | None = None) -> list[str]:
    """Initializers a run trains (see the module docstring), in graph order; ``freeze``
    is a regular expression of names (tensor or node) to keep constant."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    pattern = re.compile(freeze) if freeze else None
    chosen: dict[str, None] = {}
    for node in g.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        slots = SLOTS.rule_for(node.op_type, node.domain)
        if slots is None and node.op_type in ELEMENTWISE:
            slots = (0, 1)
        for k in slots or ():
            name = node.input[k] if k < len(node.input) else ""
            t = inits.get(name)
            if t is None or t.data_type != onnx.TensorProto.FLOAT or _size(t) < 2:
                continue
            if node.op_type in ELEMENTWISE and sum(d > 1 for d in t.dims) > 1:
                continue
            if pattern is not None and (pattern.search(name) or pattern.search(node.name or "")):
                continue
            chosen[name] = None
    return list(chosen)


def _size(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims)) if len(t.dims) else 1


def as_inputs(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """Turn the ``names`` initializers into graph inputs of their own element type (in
    place); returns copies of their values (float32 for the trainable weights, which
    :func:`trainable_names` picks among float32 initializers only)."""
    g = model.graph
    wanted = set(names)
    values, types, keep = {}, {}, []
    for t in g.initializer:
        if t.name in wanted:
            values[t.name], types[t.name] = np.array(numpy_helper.to_array(t)), t.data_type
        else:
            keep.append(t)
    del g.initializer[:]
    g.initializer.extend(keep)
    declared = {i.name for i in g.input}
    for name in names:
        if name not in declared:
            g.input.append(helper.make_tensor_value_info(name, types[name], list(values[name].shape)))
    return {n: values[n] for n in names}


def write_back(model: onnx.ModelProto, params: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``model`` (the folded, not input-converted graph) with these initializer values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in params:
            t.CopyFrom(numpy_helper.from_array(params[t.name].astype(np.float32), t.name))
    return out
