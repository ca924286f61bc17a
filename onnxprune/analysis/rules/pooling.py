"""Pooling, reductions and ops that normalize along one axis (Softmax family).

Channels survive an op that works within each channel. An op that mixes values along a
channel axis (a reduction over it, a softmax over it) would change when a channel goes,
so it blocks that axis's spaces, except a ReduceMean that keeps its dims under
``prune_norm_spaces`` (RMSNorm's mean of squares): then the spaces are marked inexact.
"""

from __future__ import annotations

import onnx

from ..context import attr, norm_axis
from . import register

POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "MaxRoiPool")
REDUCES = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@register(*POOLS)
def pool(node: onnx.NodeProto, ctx) -> None:
    x = node.input[0]
    if len(node.output) > 1 and node.output[1]:
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': its Indices output encodes channel positions")
        return
    for axis, amap in ctx.tracked(x).items():
        if axis == 1:
            ctx.set_amap(node.output[0], 1, amap)
        else:
            ctx.block(amap, node, f"pools over channel-carrying axis {axis}")


def _reduce_axes(node, ctx, rank: int):
    if len(node.input) > 1 and node.input[1]:
        value = ctx.const(node.input[1])
        if value is None:
            return None
        axes = [int(a) for a in value.reshape(-1)]
    else:
        axes = attr(node, "axes", None)
        axes = None if axes is None else list(axes)
    if not axes:
        if attr(node, "noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted({norm_axis(a, rank) for a in axes})


@register(*REDUCES)
def reduce(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    r = ctx.rank(x)
    if r is None:
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': rank unknown")
        return
    axes = _reduce_axes(node, ctx, r)
    if axes is None:
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': reduction axes are not constant")
        return
    keep = attr(node, "keepdims", 1)
    for axis, amap in ctx.tracked(x).items():
        if axis in axes and node.op_type == "ReduceMean" and keep and ctx.options.prune_norm_spaces:
            # a norm statistic (RMSNorm's mean of squares): the mean is over fewer channels after pruning
            ctx.table.mark_inexact(amap, f"ReduceMean '{node.name}' averages across these channels")
        elif axis in axes:
            ctx.block(amap, node, "reduces over these channels" + (
                " (a ReduceMean keeping dims is allowed with --prune-norm-spaces)" if node.op_type == "ReduceMean"
                and keep else ""))
        else:
            ctx.set_amap(y, axis if keep else axis - sum(a < axis for a in axes), amap)


@register("Softmax", "LogSoftmax", "Hardmax", "LpNormalization")
def along_axis(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    r = ctx.rank(x)
    if r is None:
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': rank unknown")
        return
    coerce_2d = node.op_type != "LpNormalization" and ctx.opset < 13
    default = 1 if coerce_2d else -1
    axis = norm_axis(attr(node, "axis", default), r)
    for a, amap in ctx.tracked(x).items():
        if a == axis or (coerce_2d and a > axis):
            ctx.block(amap, node, "normalizes across these channels")
        else:
            ctx.set_amap(y, a, amap)


@register("ArgMax", "ArgMin")
def arg_reduce(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    r = ctx.rank(x)
    if r is None:
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': rank unknown")
        return
    axis = norm_axis(attr(node, "axis", 0), r)
    keep = attr(node, "keepdims", 1)
    for a, amap in ctx.tracked(x).items():
        if a == axis:
            ctx.block(amap, node, "takes an index over these channels")
        else:
            ctx.set_amap(y, a if keep or a < axis else a - 1, amap)
