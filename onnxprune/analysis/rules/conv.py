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


def _prologue(node: onnx.NodeProto, ctx, spatial_of_output: bool):
    """(x, w, y, bias or None, input axis map, weight shape), or None when the weight is
    not a constant (then the inputs are blocked). Records the node's MACs."""
    x, w, y = node.input[0], node.input[1], node.output[0]
    b = node.input[2] if len(node.input) > 2 and node.input[2] else None
    wshape = _weight_shape(node, ctx)
    if wshape is None:
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': weight is not a constant")
        return None
    _block_non_channel_axes(node, ctx, x)
    factor = _spatial_factor(ctx, y if spatial_of_output else x)
    ctx.costs.append(Cost(node.name, node.op_type, ctx.const_source(w)[0], factor))
    return x, w, y, b, ctx.amap(x, 1), wshape


@register("Conv")
def conv(node: onnx.NodeProto, ctx) -> None:
    parts = _prologue(node, ctx, spatial_of_output=True)
    if parts is None:
        return
    x, w, y, b, xmap, wshape = parts
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
        if ymap is None:  # every input channel stays, so nothing upstream may remove one
            ctx.block(xmap, node, "grouped conv whose channel groups cannot be kept equal")
            return
    if b:
        ctx.bind(node, b, 0, ymap, BIAS)
    ctx.set_amap(y, 1, ymap)


def _parts(ctx, node, amap, g: int, per: int):
    """``amap`` cut into ``g`` runs of ``per`` channels, each one whole space; None when
    cuts were requested (next pass) or impossible (then blocked)."""
    parts = [ctx.table.slice_map(amap, j * per, (j + 1) * per, f"{node.op_type} '{node.name}'") for j in range(g)]
    if any(p is None for p in parts):
        return None
    if any(len(p) != 1 or p[0].space is None or p[0].inner != 1 or p[0].outer != 1 for p in parts):
        ctx.block(amap, node, "channel groups do not map onto whole spaces")
        return None
    ctx.table.tie([p[0].space for p in parts])
    return parts


def _grouped_output(ctx, node, y: str, m: int, g: int):
    """A fresh output space pre-cut into ``g`` equal, tied groups."""
    ctx.table.cuts.setdefault(f"{node.name}:{y}:1", set()).update(j * (m // g) for j in range(1, g))
    ymap = ctx.new_space(node, y, 1, m)
    return ymap, _parts(ctx, node, ymap, g, m // g)


def _grouped(node, ctx, xmap, w, y, m, cg, g):
    """Grouped conv: each group keeps the same number of input and of output channels."""
    if m % g:
        ctx.block(xmap, node, f"{m} output channels do not divide into {g} groups")
        return None
    ymap, out_parts = _grouped_output(ctx, node, y, m, g)
    if out_parts is None:
        return None
    if has_spaces(xmap):
        in_parts = _parts(ctx, node, xmap, g, cg)
        if in_parts is None:
            ctx.table.block(ymap, f"Conv '{node.name}': input channel groups do not map onto whole spaces")
            return None
        ctx.bind(node, w, 1, in_parts[0], IN, groups=in_parts)
    ctx.bind(node, w, 0, ymap, OUT)
    return ymap


@register("ConvTranspose")
def conv_transpose(node: onnx.NodeProto, ctx) -> None:
    parts = _prologue(node, ctx, spatial_of_output=False)
    if parts is None:
        return
    x, w, y, b, xmap, wshape = parts
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
    else:  # grouped: weight rows are input channels, group j's columns its outputs
        if cin % g:
            ctx.block(xmap, node, f"{cin} input channels do not divide into {g} groups")
            return
        if has_spaces(xmap):
            if _parts(ctx, node, xmap, g, cin // g) is None:
                ctx.block(xmap, node, "grouped conv whose channel groups cannot be kept equal")
                return
            ctx.bind(node, w, 0, xmap, IN)
        ymap, out_parts = _grouped_output(ctx, node, y, mg * g, g)
        if out_parts is None:
            ctx.block(xmap, node, "grouped conv whose channel groups cannot be kept equal")
            return
        ctx.bind(node, w, 1, out_parts[0], OUT, groups=out_parts)
    if b:
        ctx.bind(node, b, 0, ymap, BIAS)
    ctx.set_amap(y, 1, ymap)
