"""Normalization ops.

BatchNormalization and InstanceNormalization act per channel: their parameters are
members and channels pass through. LayerNormalization and GroupNormalization compute
statistics *across* channels, so removing a channel changes every other channel's output:
their spaces are blocked unless ``prune_norm_spaces`` is set, and then marked inexact.
"""

from __future__ import annotations

import onnx

from ..context import NORM_BIAS, NORM_SCALE, NORM_STAT, attr, norm_axis
from ..spaces import has_spaces
from . import register


def _pass_through(ctx, x: str, y: str) -> None:
    for axis, amap in ctx.tracked(x).items():
        ctx.set_amap(y, axis, amap)


def _block_used_extra_outputs(node, ctx, reason: str) -> bool:
    extra = [o for o in node.output[1:] if o]
    if extra:
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': {reason}")
    return bool(extra)


@register("BatchNormalization")
def batch_norm(node: onnx.NodeProto, ctx) -> None:
    if _block_used_extra_outputs(node, ctx, "training-mode outputs are used"):
        return
    x, y = node.input[0], node.output[0]
    amap = ctx.amap(x, 1)
    roles = (NORM_SCALE, NORM_BIAS, NORM_STAT, NORM_STAT)
    for name, role in zip(node.input[1:5], roles):
        ctx.bind(node, name, 0, amap, role)
    _pass_through(ctx, x, y)


@register("InstanceNormalization")
def instance_norm(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    for axis, amap in ctx.tracked(x).items():
        if axis >= 2:
            ctx.block(amap, node, "channels on a normalized spatial axis")
    amap = ctx.amap(x, 1)
    ctx.bind(node, node.input[1], 0, amap, NORM_SCALE)
    ctx.bind(node, node.input[2], 0, amap, NORM_BIAS)
    _pass_through(ctx, x, y)


@register("LayerNormalization")
def layer_norm(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    r = ctx.rank(x)
    if r is None:
        ctx.block_inputs(node, f"LayerNormalization '{node.name}': rank unknown")
        return
    if _block_used_extra_outputs(node, ctx, "mean/inv-std outputs are used"):
        return
    first = norm_axis(attr(node, "axis", -1), r)
    params = [(n, role) for n, role in zip(node.input[1:3], (NORM_SCALE, NORM_BIAS)) if n]
    for axis, amap in ctx.tracked(x).items():
        if axis < first:
            ctx.set_amap(y, axis, amap)
            continue
        if not ctx.options.prune_norm_spaces:
            ctx.block(amap, node, "normalizes across these channels (allow with --prune-norm-spaces)")
            continue
        ctx.table.mark_inexact(amap, f"LayerNormalization '{node.name}' normalizes across these channels")
        for name, role in params:
            pr = ctx.rank(name)
            if pr is not None and axis - (r - pr) >= 0:
                ctx.bind(node, name, axis - (r - pr), amap, role)
        ctx.set_amap(y, axis, amap)


@register("GroupNormalization")
def group_norm(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    amap = ctx.amap(x, 1)
    for axis, other in ctx.tracked(x).items():
        if axis != 1:
            ctx.block(other, node, "channels on a normalized spatial axis")
    if not has_spaces(amap):
        return
    if not ctx.options.prune_norm_spaces:
        ctx.block(amap, node, "normalizes across the channels of each group (allow with --prune-norm-spaces)")
        return
    g = attr(node, "num_groups")
    c = ctx.dim(x, 1)
    if not isinstance(c, int) or not g or c % g:
        ctx.block(amap, node, "channel count does not divide into num_groups")
        return
    table = ctx.table
    parts = [table.slice_map(amap, j * (c // g), (j + 1) * (c // g), f"GroupNormalization '{node.name}'")
             for j in range(g)]
    if any(p is None for p in parts):
        return
    if any(len(p) != 1 or p[0].space is None or p[0].inner != 1 or p[0].outer != 1 for p in parts):
        ctx.block(amap, node, "channel groups do not map onto whole spaces")
        return
    table.tie([p[0].space for p in parts])
    table.mark_inexact(amap, f"GroupNormalization '{node.name}' normalizes across channels of a group")
    for name, role in zip(node.input[1:3], (NORM_SCALE, NORM_BIAS)):
        if ctx.dim(name, 0) == c:
            ctx.bind(node, name, 0, amap, role)
    _pass_through(ctx, x, y)
