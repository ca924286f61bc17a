"""Conv and ConvTranspose: plain, depthwise (channel passes through) and grouped
(equal channel counts per group, tied across groups)."""

from __future__ import annotations

import math

import onnx

from ..context import BIAS, DW, IN, OUT, Cost, Fixup, attr
from ..spaces import has_spaces, scale_map
from . import register


class SetGroupAttr(Fixup):
    """Depthwise conv: ``group`` becomes the new input channel count."""

    def __init__(self, node_index: int, amap):
        self.node_index = node_index
        self.amaps = (amap,)

    def apply(self, surgery) -> None:
        node = surgery.node(self.node_index)
        surgery.set_attr(node, "group", surgery.new_length(self.amaps[0]))


def _weight_shape(node, ctx):
    src = ctx.const_source(node.input[1])
    if src is None:
        return None
    shape = list(ctx.store.shape(src[0]))
    if src[1] is not None:
        shape = [shape[p] for p in src[1]]
    return shape


def _spatial_factor(ctx, name: str) -> float | None:
    dims = ctx.cost_dims(name)
    return None if dims is None else float(math.prod(dims[:1] + dims[2:]))


def _block_non_channel_axes(node, ctx, x: str) -> None:
    for axis, amap in ctx.tracked(x).items():
        if axis != 1:
            ctx.block(amap, node, f"channels on spatial axis {axis}")


@register("Conv")
def conv(node: onnx.NodeProto, ctx) -> None:
    x, w, y = node.input[0], node.input[1], node.output[0]
    b = node.input[2] if len(node.input) > 2 and node.input[2] else None
    xmap = ctx.amap(x, 1)
    wshape = _weight_shape(node, ctx)
    if wshape is None:
        ctx.block_inputs(node, f"Conv '{node.name}': weight is not a constant")
        return
    _block_non_channel_axes(node, ctx, x)
    ctx.costs.append(Cost(node.name, node.op_type, ctx.const_source(w)[0], _spatial_factor(ctx, y)))
    m, cg = wshape[0], wshape[1]
    g = attr(node, "group", 1)
    if g == 1:
        ctx.bind(node, w, 1, xmap, IN)
        ymap = ctx.new_space(node, y, 1, m)
        ctx.bind(node, w, 0, ymap, OUT)
    elif cg == 1 and m % g == 0:  # depthwise (with optional channel multiplier)
        if not has_spaces(xmap):
            return  # fixed input: output count must stay a multiple of the fixed group count
        ymap = scale_map(xmap, inner=m // g)
        ctx.bind(node, w, 0, ymap, DW)
        ctx.add_fixup(SetGroupAttr(ctx.node_index[node.name], xmap))
    else:
        ymap = _grouped(node, ctx, xmap, w, y, m, cg, g)
        if ymap is None:
            return
    if b:
        ctx.bind(node, b, 0, ymap, BIAS)
    ctx.set_amap(y, 1, ymap)


def _grouped(node, ctx, xmap, w, y, m, cg, g):
    """Grouped conv: each group keeps the same number of input and of output channels."""
    table = ctx.table
    if m % g:
        ctx.block(xmap, node, f"{m} output channels do not divide into {g} groups")
        return None
    mg = m // g
    origin = f"{node.name}:{y}:1"
    table.cuts.setdefault(origin, set()).update(j * mg for j in range(1, g))
    ymap = ctx.new_space(node, y, 1, m)
    out_parts = [table.slice_map(ymap, j * mg, (j + 1) * mg) for j in range(g)]
    if any(p is None or len(p) != 1 for p in out_parts):
        table.block(ymap, f"Conv '{node.name}': output groups are split further")
        return None
    table.tie([p[0].space for p in out_parts])
    if has_spaces(xmap):
        in_parts = [table.slice_map(xmap, j * cg, (j + 1) * cg) for j in range(g)]
        if any(p is None for p in in_parts):
            return None  # cuts requested; resolved in the next pass
        if any(len(p) != 1 or p[0].space is None or p[0].inner != 1 or p[0].outer != 1 for p in in_parts):
            table.block(xmap, f"Conv '{node.name}': input channel groups do not map onto whole spaces")
            table.block(ymap, f"Conv '{node.name}': input channel groups do not map onto whole spaces")
            return None
        table.tie([p[0].space for p in in_parts])
        ctx.bind(node, w, 1, in_parts[0], IN, groups=in_parts)
    ctx.bind(node, w, 0, ymap, OUT)
    return ymap


@register("ConvTranspose")
def conv_transpose(node: onnx.NodeProto, ctx) -> None:
    x, w, y = node.input[0], node.input[1], node.output[0]
    b = node.input[2] if len(node.input) > 2 and node.input[2] else None
    xmap = ctx.amap(x, 1)
    wshape = _weight_shape(node, ctx)
    if wshape is None:
        ctx.block_inputs(node, f"ConvTranspose '{node.name}': weight is not a constant")
        return
    _block_non_channel_axes(node, ctx, x)
    ctx.costs.append(Cost(node.name, node.op_type, ctx.const_source(w)[0], _spatial_factor(ctx, x)))
    cin, mg = wshape[0], wshape[1]
    g = attr(node, "group", 1)
    if g == 1:
        ctx.bind(node, w, 0, xmap, IN)
        ymap = ctx.new_space(node, y, 1, mg)
        ctx.bind(node, w, 1, ymap, OUT)
    elif mg == 1 and g == cin:
        if not has_spaces(xmap):
            return
        ymap = xmap
        ctx.bind(node, w, 0, ymap, DW)
        ctx.add_fixup(SetGroupAttr(ctx.node_index[node.name], xmap))
    else:
        ctx.block(xmap, node, f"grouped ConvTranspose (group={g}) is not supported")
        return
    if b:
        ctx.bind(node, b, 0, ymap, BIAS)
    ctx.set_amap(y, 1, ymap)
