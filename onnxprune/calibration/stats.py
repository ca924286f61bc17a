"""Per-position statistics of read points, reduced inside ONNX Runtime.

Each statistic is a small reduction appended to the graph, so only vectors leave the
session (ORT runs them multithreaded, and no activation is copied out). The host side
accumulates them over batches in float64: memory is one batch plus the statistics.

Statistics (per position of the read axis, over every other axis):

- ``sum``, ``sumsq``, ``abs``: Σa, Σa², Σ|a| over batch and spatial/token positions
- ``nonpos``: count of a ≤ 0 (APoZ: exactly the zeros after ReLU)
- ``pooled``: per sample, the mean over spatial/token positions (entropy of the pooled
  activation distribution); kept per sample, so memory grows with samples × channels
- ``ag``: per sample, Σ a·∂L/∂a (Taylor, Fisher) — needs the gradient graph
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

STATISTICS = ("sum", "sumsq", "abs", "nonpos", "pooled", "ag")
PER_SAMPLE = ("pooled", "ag")


@dataclass
class PointStats:
    """Accumulated statistics of one read point."""

    length: int
    count: float = 0.0  # elements per position seen so far
    samples: int = 0
    sums: dict = field(default_factory=dict)  # statistic -> float64 (length,)
    per_sample: dict = field(default_factory=dict)  # statistic -> list of (batch, length)

    def add(self, stat: str, value: np.ndarray) -> None:
        if stat in PER_SAMPLE:
            self.per_sample.setdefault(stat, []).append(np.asarray(value, dtype=np.float32).reshape(-1, self.length))
        else:
            v = np.asarray(value, dtype=np.float64).reshape(self.length)
            self.sums[stat] = self.sums.get(stat, 0.0) + v

    def samples_of(self, stat: str) -> np.ndarray:
        parts = self.per_sample.get(stat, [])
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, self.length), np.float32)

    def mean(self) -> np.ndarray:
        return self.sums["sum"] / max(self.count, 1.0)

    def variance(self) -> np.ndarray:
        m = self.mean()
        return np.maximum(self.sums["sumsq"] / max(self.count, 1.0) - m * m, 0.0)


class ReductionBuilder:
    """Appends reduction nodes to a graph, at the graph's opset (axes as attribute or input)."""

    def __init__(self, graph: onnx.GraphProto, opset: int, prefix: str = "onnxprune_stat"):
        self.graph, self.opset, self.prefix = graph, opset, prefix
        self.counter = 0

    def name(self, base: str) -> str:
        self.counter += 1
        return f"{self.prefix}/{base}/{self.counter}"

    def node(self, op: str, inputs: list, **attrs) -> str:
        out = self.name(op)
        self.graph.node.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, values, dtype=np.int64) -> str:
        name = self.name("const")
        self.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def reduce(self, op: str, x: str, axes: list[int], keepdims: int = 0) -> str:
        if not axes:
            return self.node("Identity", [x])
        axes_as_input = self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13)
        if axes_as_input:
            return self.node(op, [x, self.const(axes)], keepdims=keepdims)
        return self.node(op, [x], axes=list(axes), keepdims=keepdims)

    def float32(self, x: str, elem_type: int) -> str:
        return x if elem_type == onnx.TensorProto.FLOAT else self.node("Cast", [x], to=onnx.TensorProto.FLOAT)

    def statistic(self, stat: str, x: str, rank: int, axis: int, grad: str | None = None) -> str:
        """Output name of statistic ``stat`` of float32 tensor ``x`` (channel ``axis``)."""
        others = [a for a in range(rank) if a != axis]
        within = [a for a in others if a != 0] if axis != 0 else others  # per sample: keep axis 0
        if stat == "sum":
            return self.reduce("ReduceSum", x, others)
        if stat == "sumsq":
            return self.reduce("ReduceSumSquare", x, others)
        if stat == "abs":
            return self.reduce("ReduceL1", x, others)
        if stat == "nonpos":
            zero = self.const(np.zeros((), np.float32), np.float32)
            mask = self.node("Cast", [self.node("LessOrEqual" if self.opset >= 12 else "Greater", [x, zero])],
                             to=onnx.TensorProto.FLOAT)
            if self.opset < 12:  # count of a > 0, turned into a ≤ 0 on the host
                mask = self.node("Sub", [self.const(np.ones((), np.float32), np.float32), mask])
            return self.reduce("ReduceSum", mask, others)
        if stat == "pooled":
            return self.reduce("ReduceMean", x, within)
        if stat == "ag":
            return self.reduce("ReduceSum", self.node("Mul", [x, grad]), within)
        raise KeyError(stat)
