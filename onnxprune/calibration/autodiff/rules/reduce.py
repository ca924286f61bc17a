"""Reductions: the output gradient (re-expanded to the kept-dims shape) spread back over
each reduced window; Max/Min split it evenly among the maxima (minima)."""

from __future__ import annotations

import functools
import math

from ..ops import attr, reduce, reshape
from . import only, register


def reduced_axes(node, b, rank: int) -> list[int]:
    if len(node.input) > 1 and node.input[1]:
        v = b.need_value(node.input[1], "reduction axes")
        axes = [int(a) for a in v.reshape(-1)]
    else:
        axes = attr(node, "axes", None)
        axes = None if axes is None else list(axes)
    if not axes:
        return [] if attr(node, "noop_with_empty_axes", 0) else list(range(rank))
    return sorted({a + rank if a < 0 else a for a in axes})


def _kept(node, b, g: str, xs: list[int], axes: list[int]) -> str:
    """``g`` reshaped to the keepdims shape."""
    if attr(node, "keepdims", 1):
        return g
    return reshape(b, g, [1 if i in axes else d for i, d in enumerate(xs)], hint="gk")


def noop(fn):
    """With ``noop_with_empty_axes`` and no axes the output is the input: g passes."""
    @functools.wraps(fn)
    def rule(node, b, gy, needs):
        only(needs, 0, what="reduction axes")
        if not reduced_axes(node, b, b.rank(node.input[0])):
            return {0: gy[0]}
        return fn(node, b, gy, needs)

    return rule


@register("ReduceSum", "ReduceMean")
@noop
def reduce_sum_mean(node, b, gy, needs):
    x = node.input[0]
    xs = b.shape(x)
    axes = reduced_axes(node, b, len(xs))
    g = _kept(node, b, gy[0], xs, axes)
    if node.op_type == "ReduceMean":
        g = b.op("Mul", [g, b.scalar(1.0 / math.prod(xs[a] for a in axes), g)])
    return {0: b.op("Expand", [g, b.ints(xs)], hint="dred")}


@register("ReduceMax", "ReduceMin")
@noop
def reduce_max_min(node, b, gy, needs):
    x = node.input[0]
    xs = b.shape(x)
    axes = reduced_axes(node, b, len(xs))
    g = _kept(node, b, gy[0], xs, axes)
    y = _kept(node, b, node.output[0], xs, axes)
    hit = b.op("Equal", [x, y], hint="hit")
    count = reduce(b, "ReduceSum", b.op("Cast", [hit], to=b.elem(x)), axes, keepdims=True, hint="nhit")
    return {0: b.op("Where", [hit, b.op("Div", [g, count]), b.scalar(0.0, g)], hint="dred")}


@register("ReduceSumSquare")
@noop
def reduce_sum_square(node, b, gy, needs):
    x = node.input[0]
    xs = b.shape(x)
    g = _kept(node, b, gy[0], xs, reduced_axes(node, b, len(xs)))
    return {0: b.op("Mul", [b.op("Mul", [x, g]), b.scalar(2.0, x)], hint="dred")}


@register("ReduceL2")
@noop
def reduce_l2(node, b, gy, needs):
    x = node.input[0]
    xs = b.shape(x)
    axes = reduced_axes(node, b, len(xs))
    g = _kept(node, b, gy[0], xs, axes)
    y = _kept(node, b, node.output[0], xs, axes)
    return {0: b.op("Mul", [x, b.op("Div", [g, y])], hint="dred")}


@register("ReduceLogSumExp")
@noop
def reduce_log_sum_exp(node, b, gy, needs):
    x = node.input[0]
    xs = b.shape(x)
    axes = reduced_axes(node, b, len(xs))
    g = _kept(node, b, gy[0], xs, axes)
    y = _kept(node, b, node.output[0], xs, axes)
    return {0: b.op("Mul", [g, b.op("Exp", [b.op("Sub", [x, y])])], hint="dred")}
