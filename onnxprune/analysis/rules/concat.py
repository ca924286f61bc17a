"""Concat builds a channel axis out of segments; Split and Slice take ranges of one.

A range that cuts a space in the middle makes the analysis cut that space (and
everything unified with it) at that point and run again, so each range ends up as whole
spaces. Split sizes and Slice bounds are rewritten to the new lengths.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..context import CONST, Fixup, attr, norm_axis
from ..spaces import fixed_map, has_spaces, make_map
from . import register
from .embedding import slice_table


@register("Concat")
def concat(node: onnx.NodeProto, ctx) -> None:
    y = node.output[0]
    inputs = [n for n in node.input if n]
    r = ctx.rank(y)
    if r is None or any(ctx.rank(n) != r for n in inputs):
        ctx.block_inputs(node, f"Concat '{node.name}': ranks unknown")
        return
    axis = norm_axis(attr(node, "axis", 0), r)
    segs = []
    for n in inputs:
        amap = ctx.amap(n, axis)
        if amap is None:
            d = ctx.dim(n, axis)
            if not isinstance(d, int):
                ctx.block_inputs(node, f"Concat '{node.name}': size of '{n}' along axis {axis} unknown")
                return
            amap = fixed_map(d)
        segs.extend(amap)
    ctx.set_amap(y, axis, make_map(segs))
    for other in range(r):
        if other == axis:
            continue
        maps = [ctx.amap(n, other) for n in inputs]
        tracked = [m for m in maps if m is not None]
        if not tracked:
            continue
        for m in tracked[1:]:
            ctx.table.unify(tracked[0], m, f"Concat '{node.name}'")
        for n, m in zip(inputs, maps):
            if m is None and ctx.dim(n, other) != 1:
                ctx.bind(node, n, other, tracked[0], CONST)
        ctx.set_amap(y, other, tracked[0])


class SetSplitSizes(Fixup):
    """Split's sizes become the new lengths of its parts (attribute before opset 13,
    an input from 13; ``num_outputs`` is replaced by explicit sizes)."""

    def __init__(self, node_index: int, parts):
        self.node_index = node_index
        self.amaps = tuple(parts)

    def apply(self, surgery) -> None:
        node = surgery.node(self.node_index)
        sizes = np.array([surgery.new_length(p) for p in self.amaps], dtype=np.int64)
        if surgery.opset < 13:
            surgery.set_attr(node, "split", [int(s) for s in sizes])
            return
        surgery.remove_attr(node, "num_outputs")
        surgery.set_input_value(node, 1, sizes, "split_sizes")


def _split_sizes(node, ctx, dim):
    if ctx.opset < 13:
        sizes = attr(node, "split", None)
    elif len(node.input) > 1 and node.input[1]:
        value = ctx.value(node.input[1], allow_channel_dependent=True)
        if value is None:
            return None
        sizes = [int(v) for v in value.reshape(-1)]
    else:
        sizes = None
    if sizes:
        return list(sizes)
    if not isinstance(dim, int):
        return None
    n = attr(node, "num_outputs", None) or len(node.output)
    chunk = -(-dim // n)
    return [min(chunk, dim - k * chunk) for k in range(n)]


@register("Split")
def split(node: onnx.NodeProto, ctx) -> None:
    x = node.input[0]
    tracked = ctx.tracked(x)
    if not tracked:
        return
    r = ctx.rank(x)
    axis = norm_axis(attr(node, "axis", 0), r)
    for a, amap in tracked.items():
        if a != axis:
            for out in node.output:
                ctx.set_amap(out, a, amap)
            continue
        sizes = _split_sizes(node, ctx, ctx.dim(x, axis))
        if sizes is None or len(sizes) != len(node.output):
            ctx.block(amap, node, "split sizes are not constant")
            continue
        parts, offset = [], 0
        for s in sizes:
            parts.append(ctx.table.slice_map(amap, offset, offset + s, f"Split '{node.name}'"))
            offset += s
        if any(p is None for p in parts):
            continue  # cuts requested: the next pass sees whole spaces
        for out, p in zip(node.output, parts):
            ctx.set_amap(out, axis, p)
        ctx.add_fixup(SetSplitSizes(ctx.node_index[node.name], parts))
        ctx.claim(node, 1)  # sizes are rewritten whole


class SetSliceBounds(Fixup):
    """The k-th sliced axis gets start = new length before the range, end = start + new
    length of the range. Bounds computed at run time from a channel size become
    constants."""

    def __init__(self, node_index: int, k: int, before, inside, starts, ends):
        self.node_index, self.k = node_index, k
        self.starts, self.ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
        self.amaps = (before, inside)

    def apply(self, surgery) -> None:
        node = surgery.node(self.node_index)
        start = surgery.new_length(self.amaps[0])
        end = start + surgery.new_length(self.amaps[1])
        if surgery.opset < 10:  # attributes
            for name, value in (("starts", start), ("ends", end)):
                vals = list(surgery.get_attr(node, name))
                vals[self.k] = value
                surgery.set_attr(node, name, vals)
            return
        for index, default, value in ((1, self.starts, start), (2, self.ends, end)):
            current = surgery.input_value(node, index)
            arr = (default if current is None else current).astype(np.int64).copy()
            arr.reshape(-1)[self.k] = value
            surgery.set_input_value(node, index, arr, "slice_bounds")


def _slice_params(node, ctx):
    """(starts, ends, axes, steps) as int lists (None where absent), or None if a bound
    cannot be computed."""
    if ctx.opset < 10:
        return attr(node, "starts", None), attr(node, "ends", None), attr(node, "axes", None), None
    vals = []
    for k in range(1, 5):
        if len(node.input) > k and node.input[k]:
            v = ctx.value(node.input[k], allow_channel_dependent=k <= 2)
            if v is None:
                return None
            vals.append([int(e) for e in v.reshape(-1)])
        else:
            vals.append(None)
    return tuple(vals)


def _slice_axes(node, ctx):
    """The axes a Slice cuts (ints), known when they are constant even if its bounds are
    computed at run time (a position table cut to the sequence length), else None."""
    if ctx.opset < 10:
        axes, starts = attr(node, "axes", None), attr(node, "starts", None)
        return list(axes) if axes is not None else None if starts is None else list(range(len(starts)))
    if len(node.input) > 3 and node.input[3]:
        v = ctx.value(node.input[3])
        return None if v is None else [int(e) for e in v.reshape(-1)]
    n = ctx.dim(node.input[1], 0)
    return list(range(n)) if isinstance(n, int) else None


@register("Slice")
def slice_(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    tracked = ctx.tracked(x)
    r = ctx.rank(x)
    if not tracked:
        axes = None if r is None else _slice_axes(node, ctx)
        if axes is not None:  # a position-embedding table (prune_norm_spaces); its bounds may be run-time
            slice_table(node, ctx, axes)
        return
    params = None if r is None else _slice_params(node, ctx)
    if params is None or params[0] is None:
        ctx.block_inputs(node, f"Slice '{node.name}': bounds are not constant")
        return
    starts, ends, axes, steps = params
    axes = list(range(len(starts))) if axes is None else [norm_axis(a, r) for a in axes]
    rewritten = set()
    for a, amap in tracked.items():
        if a not in axes:
            ctx.set_amap(y, a, amap)
            continue
        k = axes.index(a)
        dim = ctx.dim(x, a)
        step = 1 if steps is None else steps[k]
        if step != 1 or not isinstance(dim, int):
            ctx.block(amap, node, "slices a channel axis with a step (or unknown size)")
            continue
        lo, hi, _ = slice(starts[k], ends[k]).indices(dim)
        hi = max(lo, hi)
        before = ctx.table.slice_map(amap, 0, lo, f"Slice '{node.name}'") if lo > 0 else ()
        inside = ctx.table.slice_map(amap, lo, hi, f"Slice '{node.name}'")
        if before is None or inside is None:
            continue
        ctx.set_amap(y, a, inside)
        if has_spaces(amap):
            ctx.add_fixup(SetSliceBounds(ctx.node_index[node.name], k, before, inside, starts, ends))
            rewritten.add(k)
    for index in (1, 2):  # bounds read from a channel count are fine where they are rewritten
        dep = ctx.dependent_elements(node.input[index]) if ctx.opset >= 10 else None
        if dep is not None and all(k in rewritten for k in np.flatnonzero(dep)):
            ctx.claim(node, index)
