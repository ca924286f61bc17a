"""The training graph: the student (pruned) model with its trainable weights as inputs,
distillation loss heads in the graph, and the backward nodes of
:func:`onnxprune.calibration.autodiff.build_backward` giving every weight's gradient.

Loss terms (each averaged over the batch, weights add up):

- ``kl`` on a classifier's logits [N, K]: T² · KL(softmax(t/T) ‖ softmax(s/T)) (Hinton et
  al. 2015); its seed at the logits is T·(softmax(s/T) − softmax(t/T)) / N. An output that
  is a Softmax/LogSoftmax over the last axis is distilled at that op's input.
- ``ce`` against labels (optional): cross-entropy of the same logits, seed
  (softmax(s) − onehot) / N.
- ``mse`` on any other tensor (embeddings, intermediate features): mean squared error
  divided by the teacher tensor's variance (fixed from the first batch), so terms of
  different scales weigh alike.

The teacher's targets enter as graph inputs (one per term), so one ORT run gives the
student outputs and all gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..calibration.autodiff import build_backward
from ..errors import BadArgumentError
from ..shapes import infer_shapes, with_input_shapes

TARGET_PREFIX = "onnxprune_target_"


@dataclass
class Term:
    tensor: str  # the student tensor the loss reads (logits for kl)
    kind: str  # kl | mse
    teacher: str  # the teacher's tensor giving the target (a dense-model name)
    weight: float = 1.0
    from_probs: bool = False  # the teacher tensor holds probabilities (a Softmax output)
    from_logprobs: bool = False
    kept: tuple | None = None  # (axis, positions): the teacher channels the student kept
    scale: float = 1.0  # mse: 1 / teacher variance, set from the first batch
    input: str = ""  # the graph input holding the target
    classes: int = 0  # ce: number of classes (the target is one-hot)

    def target(self, teacher_value: np.ndarray, temperature: float) -> np.ndarray:
        """The array fed to :attr:`input` for this teacher value (for ``ce``: the labels)."""
        if self.kind == "ce":
            return np.eye(self.classes, dtype=np.float32)[teacher_value.astype(np.int64)]
        t = teacher_value.astype(np.float32)
        if self.kept is not None:
            t = np.take(t, self.kept[1], axis=self.kept[0])
        if self.kind == "kl":
            return softmax(self.teacher_logits(t) / temperature)
        return t

    def teacher_logits(self, t: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(t, 1e-30)) if self.from_probs else t

    def loss(self, student: np.ndarray, target: np.ndarray, temperature: float) -> float:
        n = student.shape[0]
        if self.kind == "ce":
            logq = log_softmax(student.astype(np.float64))
            return float(-self.weight * np.sum(target * logq) / n)
        if self.kind == "kl":
            logq = log_softmax(student.astype(np.float64) / temperature)
            p = target.astype(np.float64)
            return float(self.weight * temperature ** 2 * np.sum(p * (np.log(np.maximum(p, 1e-30)) - logq)) / n)
        diff = student.astype(np.float64) - target
        return float(self.weight * self.scale * np.mean(diff * diff))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def output_terms(student: onnx.ModelProto, shapes: dict, output_loss: str = "auto") -> list[Term]:
    """One term per float output: ``kl`` for classifier logits, ``mse`` otherwise.

    ``auto`` reads [N, K] outputs as logits when a linear layer (Gemm/MatMul, maybe plus a
    bias Add) or a Softmax/LogSoftmax makes them; a pooled or normalized [N, K] output (a
    sentence embedding: ReduceMean, Div...) is matched by MSE instead."""
    producers = {o: n for n in student.graph.node for o in n.output}
    terms = []
    for out in student.graph.output:
        if out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue
        dims = shapes.get(out.name) or []
        prod = producers.get(out.name)
        classifier = len(dims) == 2 and isinstance(dims[1], int) and dims[1] >= 2
        if output_loss == "mse" or (output_loss == "auto" and not (classifier and _makes_logits(prod, producers))):
            terms.append(Term(out.name, "mse", out.name))
        elif prod is not None and prod.op_type in ("Softmax", "LogSoftmax") and _last_axis(prod):
            terms.append(Term(prod.input[0], "kl", out.name, from_probs=prod.op_type == "Softmax",
                              from_logprobs=prod.op_type == "LogSoftmax"))
        else:
            terms.append(Term(out.name, "kl", out.name))
    if not terms:
        raise BadArgumentError("finetune: the model has no float32 output to distil")
    return terms


def _makes_logits(node, producers) -> bool:
    if node is None:
        return False
    if node.op_type in ("Gemm", "MatMul", "Softmax", "LogSoftmax"):
        return True
    if node.op_type == "Add":
        return any(producers.get(i) is not None and producers[i].op_type in ("Gemm", "MatMul") for i in node.input)
    return False


def _last_axis(node) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    return axis in (None, -1, 1)


@dataclass
class TrainGraph:
    model: onnx.ModelProto
    grads: dict  # weight name -> graph output holding its gradient
    unavailable: dict  # weight name -> why it gets no gradient (kept frozen)
    outputs: list  # student tensors fetched each step (the terms' tensors)


def build_train_graph(student: onnx.ModelProto, weights: list[str], terms: list[Term], feeds_shapes: dict,
                      temperature: float) -> TrainGraph:
    """``student`` has ``weights`` as graph inputs already; ``feeds_shapes`` gives the
    data inputs' concrete dims (the batch the graph is built for)."""
    m = onnx.ModelProto()
    m.CopyFrom(student)
    g = m.graph
    batch = next(iter(feeds_shapes.values()))[0]
    shapes_in = dict(feeds_shapes)
    shapes = infer_shapes(with_input_shapes(m, shapes_in))
    seeds, outputs = {}, []
    for k, term in enumerate(terms):
        dims = shapes.get(term.tensor)
        if dims is None or not all(isinstance(d, int) for d in dims):
            raise BadArgumentError(f"finetune: the shape of '{term.tensor}' is unknown for the batch shape")
        term.input = f"{TARGET_PREFIX}{k}"
        g.input.append(helper.make_tensor_value_info(term.input, onnx.TensorProto.FLOAT, dims))
        shapes_in[term.input] = dims
        seed = _seed(g, term, dims, batch, temperature, k, _default_opset(m))
        if term.tensor in seeds:  # two terms on one tensor (distillation and labels): their seeds add
            name = f"onnxprune_loss{k}_sum"
            g.node.append(helper.make_node("Add", [seeds[term.tensor], seed], [name], name=name))
            seed = name
        seeds[term.tensor] = seed
        outputs.append(term.tensor)
    have = {o.name for o in g.output}
    for t in outputs:
        if t not in have:
            g.output.append(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, shapes.get(t)))
            have.add(t)
    shapes = infer_shapes(with_input_shapes(m, shapes_in))
    concrete = {k: v for k, v in shapes.items() if v is not None and all(isinstance(d, int) for d in v)}
    result = build_backward(m, weights, seeds, concrete)
    return TrainGraph(result.model, result.grads, result.unavailable, outputs)


def _seed(g: onnx.GraphProto, term: Term, dims: list, batch: int, temperature: float, k: int, opset: int) -> str:
    def const(name, value):
        g.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(op, inputs, name, **attrs):
        g.node.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    p = f"onnxprune_loss{k}_"
    if term.kind in ("kl", "ce"):  # ce: labels as the target distribution, at temperature 1
        temperature = 1.0 if term.kind == "ce" else temperature
        z = term.tensor
        if temperature != 1.0:
            z = node("Div", [z, const(p + "T", temperature)], p + "scaled")
        q = node("Softmax", [z], p + "q", axis=-1 if opset >= 13 else 1)
        diff = node("Sub", [q, term.input], p + "diff")
        return node("Mul", [diff, const(p + "c", temperature * term.weight / batch)], p + "seed")
    per = math.prod(dims)
    diff = node("Sub", [term.tensor, term.input], p + "diff")
    return node("Mul", [diff, const(p + "c", 2.0 * term.weight * term.scale / per)], p + "seed")


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
