"""Loss heads for the gradient criteria: the seed ∂L/∂y of every model output, built
inside the graph so one ORT run gives activations and gradients together.

- ``ce``: cross-entropy of a classifier's logits [N, K] against labels (a graph input
  ``onnxprune_labels``) or, without labels, against the model's own prediction
  (argmax): ∂L/∂z = softmax(z) − onehot. An output that is already a Softmax/LogSoftmax
  over the last axis is seeded at that op's input (the logits).
- ``projection``: for any other float output, L = ⟨R, y⟩ / √(elements per sample) with a
  fixed random R (seeded): the output-sensitivity of each channel along a random
  direction, the same for every sample.

``auto`` picks ``ce`` for rank-2 float outputs with at least two classes, ``projection``
otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from ..errors import BadArgumentError

LOSSES = ("auto", "ce", "projection")
LABELS_INPUT = "onnxprune_labels"
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def output_kind(dims: list, elem_type: int, loss: str) -> str | None:
    if elem_type not in FLOAT_TYPES:
        return None
    if loss != "auto":
        return loss
    return "ce" if len(dims) == 2 and isinstance(dims[1], int) and dims[1] >= 2 else "projection"


def add_loss_heads(model: onnx.ModelProto, shapes: dict, build, loss: str = "auto", labels: bool = False,
                   seed: int = 0) -> tuple[dict, list[str]]:
    """Append the seed nodes for every float output; returns ({tensor: seed tensor},
    [descriptions]). ``build`` is a :class:`~onnxprune.calibration.stats.ReductionBuilder`
    on ``model.graph`` (names and constants). With ``labels`` a cross-entropy head reads
    them from the graph input :data:`LABELS_INPUT` (added only when one does)."""
    if loss not in LOSSES:
        raise BadArgumentError(f"unknown loss '{loss}' (choose from {', '.join(LOSSES)})")
    producers = {o: n for n in model.graph.node for o in n.output}
    rng = np.random.default_rng(seed)
    seeds, described = {}, []
    for out in model.graph.output:
        et = out.type.tensor_type.elem_type
        dims = shapes.get(out.name)
        if dims is None:
            continue
        kind = output_kind(dims, et, loss)
        if kind is None:
            continue
        if kind == "ce":
            if len(dims) != 2:
                raise BadArgumentError(f"loss 'ce' needs [batch, classes] outputs; '{out.name}' has shape {dims}")
            target, seed_name = _cross_entropy(out.name, dims, et, producers.get(out.name), build, labels)
            described.append(f"cross-entropy on '{out.name}' against {'labels' if labels else 'its own prediction'}")
        else:
            if any(not isinstance(d, int) for d in dims[1:]):
                raise BadArgumentError(f"output '{out.name}': its shape {dims} must be known for the projection loss "
                                       "(give --input-shape)")
            target, seed_name = out.name, _projection(out.name, dims, et, build, rng)
            described.append(f"random projection of '{out.name}'")
        seeds[target] = seed_name
    return seeds, described


def _cross_entropy(name, dims, elem_type, producer, build, labels: bool):
    target, probs = name, None
    if producer is not None and producer.op_type in ("Softmax", "LogSoftmax") and _last_axis(producer, 2):
        target = producer.input[0]
        probs = name if producer.op_type == "Softmax" else build.node("Exp", [name])
    if probs is None:
        probs = build.node("Softmax", [name], axis=-1 if build.opset >= 13 else 1)
    if labels:
        index = LABELS_INPUT
        if not any(i.name == LABELS_INPUT for i in build.graph.input):
            build.graph.input.append(helper.make_tensor_value_info(LABELS_INPUT, onnx.TensorProto.INT64, [None]))
    else:
        index = build.node("ArgMax", [name], axis=1, keepdims=0)
    depth = build.const([dims[1]])
    values = build.const(np.array([0, 1]), np.int64)
    onehot = build.node("Cast", [build.node("OneHot", [index, depth, values], axis=-1)], to=elem_type)
    return target, build.node("Sub", [probs, onehot])


def _projection(name, dims, elem_type, build, rng):
    per_sample = math.prod(dims[1:]) if len(dims) > 1 else 1
    r = rng.standard_normal([1] + list(dims[1:])) / math.sqrt(max(per_sample, 1))
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    shape = build.node("Shape", [name])
    return build.node("Expand", [build.const(r.astype(np.float32), np.float32) if dtype == np.float32
                                 else build.const(r.astype(dtype), dtype), shape])


def _last_axis(node, rank: int) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    if axis is None:  # opset < 13 defaults to 1 (== last for rank 2), 13+ to -1
        return True
    return axis in (-1, rank - 1)
