"""Per-position statistics of read points, reduced inside ONNX Runtime.

Only small tensors leave the session (ORT reduces multithreaded, and no activation is
copied out); the host accumulates them over batches in float64: memory is one batch plus
the statistics.

Statistics (per position of the read axis, over every other axis):

- ``sum``, ``sumsq``, ``abs``: Σa, Σa², Σ|a| over batch and spatial/token positions
- ``nonpos``: count of a ≤ 0 (APoZ: exactly the zeros after ReLU)
- ``pooled``: per sample, the mean over spatial/token positions (entropy of the pooled
  activation distribution); kept per sample, so memory grows with samples × channels
- ``ag``: per sample, Σ a·∂L/∂a (Taylor, Fisher) — needs the gradient graph

**Per-sample moments.** Where the channel axis is not the leading one (for a rank-2 tensor,
where the leading axis is the batch rather than token rows), the graph computes per row of
the leading axis and per channel the *mean* over the remaining axes of a few elementwise
transforms — ``x``, ``x·x``, ``relu(x)``, ``step(x)`` (1 where x > 0), ``x·g`` — and the host
derives every statistic from them in float64: Σa = S·Σₙ mean(x), Σa² = S·Σₙ mean(x²), Σ|a| = S·Σₙ (2·mean(relu x) − mean(x))
(S·Σₙ mean(x) when the producer is a ReLU or a Clip at 0), the a ≤ 0 count = Σₙ (S − S·mean(step x))
rounded (exact: a mean of zeros and ones), pooled = mean(x), Σ a·g = S·mean(x·g), with S
the elements per sample and position. Why means of transforms instead of ReduceL1 /
ReduceSum over batch and spatial axes: on NCHW channel read points the mean is a
GlobalAveragePool, and GlobalAveragePool, Relu, Mul of two same-shape tensors and
HardSigmoid are the ops ORT's CPU provider runs on its blocked (NCHWc) layout, so the
reductions read the activations where the convolutions left them instead of reordering
every read tensor back to NCHW first (MobileNetV2, batch 16, one thread: Σ|a| by ReduceL1
over batch and spatial axes ran at 1.48x inference, by these moments at 1.16x). ``step`` is
HardSigmoid(HardSigmoid(x, α=3e38), α=3e38): 0 for x ≤ 0, exactly 1 for any x > 0 down to
the smallest subnormal. Keeping the batch axis also lets a short last batch be padded and
its padding rows dropped on the host.

Other read points (channel axis 0, or rank 2 with token rows) are reduced over every other
axis in the graph (ReduceSum, ReduceSumSquare, ReduceL1, a ≤ 0 count).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

STATISTICS = ("sum", "sumsq", "abs", "nonpos", "pooled", "ag")
PER_SAMPLE = ("pooled", "ag")
STEP_SLOPE = 3e38  # HardSigmoid slope: any positive float32 maps to 1 in two steps


def moments_for(statistics, nonneg: bool = False) -> tuple:
    """The per-sample moments (``x``, ``xx``, ``relu``, ``step``, ``xg``) that ``statistics`` need."""
    need = []
    for stat in statistics:
        if stat in ("sum", "pooled"):
            need.append("x")
        elif stat == "sumsq":
            need.append("xx")
        elif stat == "abs":
            need += ["x"] if nonneg else ["x", "relu"]
        elif stat == "nonpos":
            need.append("step")
        elif stat == "ag":
            need.append("xg")
        else:
            raise KeyError(stat)
    return tuple(dict.fromkeys(need))


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

    def add_moments(self, statistics, moments: dict, size: float, nonneg: bool = False) -> None:
        """Accumulate from per-sample moments {name: (samples, length)} (means over ``size``
        elements per sample and position; padding rows already dropped)."""
        m = {k: np.asarray(v, dtype=np.float64) for k, v in moments.items()}
        n = next(iter(m.values())).shape[0]
        self.count += float(n) * size
        self.samples += n
        for stat in statistics:
            if stat == "sum":
                self.add(stat, m["x"].sum(0) * size)
            elif stat == "sumsq":
                self.add(stat, m["xx"].sum(0) * size)
            elif stat == "abs":
                mean_abs = m["x"] if nonneg else 2.0 * m["relu"] - m["x"]
                self.add(stat, mean_abs.sum(0) * size)
            elif stat == "nonpos":
                self.add(stat, (size - np.rint(m["step"] * size)).sum(0))
            elif stat == "pooled":
                self.add(stat, moments["x"])
            elif stat == "ag":
                self.add(stat, m["xg"] * size)

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

    def moment(self, kind: str, x: str, rank: int, axis: int, grad: str | None = None) -> str:
        """Per-sample mean over every axis but 0 and ``axis`` of a transform of float32
        ``x``: ``x``, ``xx`` (x·x), ``relu``, ``step`` (1 where x > 0, else 0), ``xg`` (x·grad)."""
        if kind == "x":
            t = x
        elif kind == "xx":
            t = self.node("Mul", [x, x])
        elif kind == "relu":
            t = self.node("Relu", [x])
        elif kind == "step":
            t = self.node("HardSigmoid", [self.node("HardSigmoid", [x], alpha=STEP_SLOPE, beta=0.0)],
                          alpha=STEP_SLOPE, beta=0.0)
        elif kind == "xg":
            t = self.node("Mul", [x, grad])
        else:
            raise KeyError(kind)
        if rank >= 3 and axis == 1:
            return self.node("GlobalAveragePool", [t])
        return self.reduce("ReduceMean", t, [a for a in range(1, rank) if a != axis])

    def statistic(self, stat: str, x: str, rank: int, axis: int, grad: str | None = None) -> str:
        """Output name of statistic ``stat`` of float32 tensor ``x`` (channel ``axis``),
        reduced over every other axis (per sample for ``pooled`` and ``ag``)."""
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
