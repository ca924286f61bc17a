"""Ops that move, merge or resize axes: Flatten, Reshape, Transpose, Squeeze/Unsqueeze,
Pad, Resize, Tile, Expand, Gather on a non-channel axis.

Reshape merges a channel axis with untracked neighbours (channel c becomes a block of
features) when its target shape can be proven and rewritten: a constant, or a
Shape→Gather→Concat chain whose entry for that axis is -1, a constant, or the size of the
same channels elsewhere. Splitting a channel axis into (heads, head_dim) makes whole heads
the channels (see :func:`_split_heads`), or, with ``head_mode="dims"``, the head-dim
positions shared by every head (:func:`_split_head_dims`); any other split blocks.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from ..context import attr, norm_axis
from ..spaces import Seg, scale_map
from . import register
from .embedding import expand_table, gather_table
from .shape_values import DIM, LIT, SetInputElement, _ints, require_entry, shape_elements

@register("Flatten")
def flatten(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    shape = ctx.shape(x)
    if shape is None:
        ctx.block_inputs(node, f"Flatten '{node.name}': input shape unknown")
        return
    r = len(shape)
    split = norm_axis(attr(node, "axis", 1), r)
    tracked = ctx.tracked(x)
    for lo, hi, out_axis in ((0, split, 0), (split, r, 1)):
        inside = [a for a in tracked if lo <= a < hi]
        if len(inside) > 1:
            for a in inside:
                ctx.block(tracked[a], node, "merges two channel axes")
            continue
        if not inside:
            continue
        a = inside[0]
        before, after = shape[lo:a], shape[a + 1 : hi]
        if not (_ints(before) and _ints(after)):
            ctx.block(tracked[a], node, "merges the channel axis with a dynamic axis")
            continue
        ctx.set_amap(y, out_axis, scale_map(tracked[a], inner=math.prod(after), outer=math.prod(before)))


def _same(a, b) -> bool:
    return a is not None and a == b


def match_dims(src: list, dst: list):
    """Group the axes of a reshape: [(src_axes, dst_axes)] with equal products, or None.

    Equal dims at either end map onto each other whatever happens between them (row-major
    order), so they are peeled off first; this keeps a channel axis through a reshape
    that merges or splits dynamic leading axes ((B*N, C) -> (B, N, C)). What stays
    unmatched in the middle becomes one group, which blocks any channel axis inside it.
    """
    lo, hi_s, hi_d = 0, len(src), len(dst)
    while lo < min(hi_s, hi_d) and _same(src[lo], dst[lo]):
        lo += 1
    tail = []
    while hi_s > lo and hi_d > lo and _same(src[hi_s - 1], dst[hi_d - 1]):
        hi_s, hi_d = hi_s - 1, hi_d - 1
        tail.insert(0, ([hi_s], [hi_d]))
    middle = _match_middle(src, dst, lo, hi_s, hi_d)
    if len(middle) == 1 and hi_s - lo > 1:
        middle = _match_suffix(src, dst, lo, hi_s, hi_d) or middle
    return [([k], [k]) for k in range(lo)] + middle + tail


def _match_suffix(src, dst, lo, hi_s, hi_d):
    """Group trailing static axes with equal products (row-major: the leading rest then
    has equal products too, whatever its dynamic dims); the rest is one group. For
    (?, ?, 32) -> (?, ?, 4, 8) when the dynamic dims cannot be matched one by one."""
    groups, i, j = [], hi_s - 1, hi_d - 1
    while i >= lo and j >= lo and isinstance(src[i], int) and isinstance(dst[j], int):
        ii, jj, pa, pb = [i], [j], src[i], dst[j]
        while pa != pb:
            if pa < pb:
                i -= 1
                if i < lo or not isinstance(src[i], int):
                    return None
                ii.insert(0, i)
                pa *= src[i]
            else:
                j -= 1
                if j < lo or not isinstance(dst[j], int):
                    return None
                jj.insert(0, j)
                pb *= dst[j]
        groups.insert(0, (ii, jj))
        i, j = i - 1, j - 1
    if not groups:
        return None
    rest = (list(range(lo, i + 1)), list(range(lo, j + 1)))
    return ([rest] if rest[0] or rest[1] else []) + groups


def _match_middle(src, dst, lo, hi_s, hi_d):
    groups, i, j = [], lo, lo
    while i < hi_s and j < hi_d:
        a, b = src[i], dst[j]
        if _same(a, b):
            groups.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        if not (isinstance(a, int) and isinstance(b, int)):
            return [(list(range(lo, hi_s)), list(range(lo, hi_d)))]
        ii, jj, pa, pb = [i], [j], a, b
        while pa != pb:
            if pa < pb:
                i += 1
                if i >= hi_s or not isinstance(src[i], int):
                    return [(list(range(lo, hi_s)), list(range(lo, hi_d)))]
                ii.append(i)
                pa *= src[i]
            else:
                j += 1
                if j >= hi_d or not isinstance(dst[j], int):
                    return [(list(range(lo, hi_s)), list(range(lo, hi_d)))]
                jj.append(j)
                pb *= dst[j]
        groups.append((ii, jj))
        i, j = i + 1, j + 1
    if any(d != 1 for d in src[i:hi_s]) or any(d != 1 for d in dst[j:hi_d]):
        return [(list(range(lo, hi_s)), list(range(lo, hi_d)))]
    return groups + [([k], []) for k in range(i, hi_s)] + [([], [k]) for k in range(j, hi_d)]


def _target_dims(ctx, node, src: list, entries: list):
    """Output dims from the traced target when shape inference left some unknown."""
    dims = []
    for k, (kind, value, _) in enumerate(entries):
        if kind == LIT and value > 0:
            dims.append(value)
        elif kind == LIT and value == 0 and not attr(node, "allowzero", 0) and k < len(src):
            dims.append(src[k])
        elif kind == DIM:
            dims.append(ctx.dim(*value))
        elif kind == LIT and value == -1:
            dims.append(-1)
        else:
            return None
    if dims.count(-1) > 1 or any(d is None for d in dims):
        return None
    if -1 in dims:
        sym_src = sorted(str(d) for d in src if not isinstance(d, int))
        sym_dst = sorted(str(d) for d in dims if not isinstance(d, int))
        known = math.prod(d for d in dims if isinstance(d, int) and d != -1)
        total = math.prod(d for d in src if isinstance(d, int))
        if sym_src == sym_dst and known and total % known == 0:
            dims[dims.index(-1)] = total // known
        elif len(sym_src) == 1 and not sym_dst and known == total:
            dims[dims.index(-1)] = sym_src[0]  # x.view(-1, C*H*W): the -1 is the batch
        else:
            return None
    return dims


@register("Reshape")
def reshape(node: onnx.NodeProto, ctx) -> None:
    x, target, y = node.input[0], node.input[1], node.output[0]
    tracked = ctx.tracked(x)
    if not tracked:
        return
    src, dst = ctx.shape(x), ctx.shape(y)
    entries = shape_elements(ctx, target)
    if entries is None or (dst is not None and len(entries) != len(dst)):
        ctx.block_inputs(node, f"Reshape '{node.name}': target shape cannot be traced")
        return
    if src is not None and (dst is None or any(d is None for d in dst)):
        dst = _target_dims(ctx, node, src, entries) or dst
    groups = None if src is None or dst is None else match_dims(src, dst)
    if groups is not None and any(len(g[0]) > 1 and len(g[1]) > 1 and any(a in tracked for a in g[0])
                                  for g in groups):
        groups = _match_by_traced_dims(ctx, x, src, dst, entries) or groups
    if groups is None:
        ctx.block_inputs(node, f"Reshape '{node.name}': cannot match input and output axes")
        return
    accepted = set()
    for axis, amap in tracked.items():
        ins, outs = next(g for g in groups if axis in g[0])
        if len(outs) != 1 and len(ins) > 1:
            ctx.block(amap, node, "reshapes a channel axis together with axes of unknown size or order")
            continue
        if len(outs) != 1:
            if len(ins) != 1 or ins[0] != len(src) - 1 or outs[-1] != len(dst) - 1:
                ctx.block(amap, node, "splits a channel axis into several (only the last axis into "
                                      "(heads, head_dim) is supported)")
            elif _split_heads(node, ctx, amap, dst, outs, entries):
                accepted.add(outs[1] if getattr(ctx.options, "head_mode", "heads") == "dims" else outs[0])
            continue
        others = [a for a in ins if a != axis]
        if any(a in tracked for a in others):
            ctx.block(amap, node, "merges two channel axes")
            continue
        before, after = src[ins[0] : axis], src[axis + 1 : ins[-1] + 1]
        if not (_ints(before) and _ints(after)):
            ctx.block(amap, node, "merges the channel axis with a dynamic axis")
            continue
        new = scale_map(amap, inner=math.prod(after), outer=math.prod(before))
        o = outs[0]
        if require_entry(node, ctx, entries[o], new, (x, o) if ins == [o] else None):
            ctx.set_amap(y, o, new)
            accepted.add(o)
    _claim_entries(node, ctx, 1, accepted)


def _match_by_traced_dims(ctx, x, src, dst, entries):
    """Match a reshape's axes when shape inference lost its dynamic dims, by where the
    dims are read from: an Expand's output (K/V repeated for grouped-query attention)
    and the target both take (batch, seq) from one tensor's Shape, so those entries are
    equal whatever their size."""
    producer = ctx.producers.get(x)
    if producer is None or producer.op_type != "Expand":
        return None
    src_entries = shape_elements(ctx, producer.input[1])
    if src_entries is None or len(src_entries) != len(src):
        return None

    def token(dim, entry):
        if isinstance(dim, int):
            return dim
        kind, value, _ = entry
        if kind == DIM:
            d = ctx.dim(*value)
            return d if isinstance(d, int) else ("dim",) + tuple(value)
        if kind == LIT and value > 0:
            return value
        return None

    return match_dims([token(d, e) for d, e in zip(src, src_entries)],
                      [token(d, e) for d, e in zip(dst, entries)])


def _split_heads(node, ctx, amap, dst, outs, entries) -> bool:
    """(..., H) -> (..., heads, head_dim): the channels become whole heads.

    The channel axis must be one space whose channels are blocks of ``g`` positions. When
    ``g`` is a multiple of head_dim the heads axis gets ``Seg(space, n, inner=g // head_dim)``
    (several heads per channel: grouped-query attention) and head_dim stays fixed; when
    head_dim is a multiple of ``g`` the space's origins are asked for coarser channels
    (next pass). The heads entry of the target is rewritten (or is -1)."""
    if len(outs) != 2:
        ctx.block(amap, node, "splits a channel axis into more than two axes")
        return False
    if getattr(ctx.options, "head_mode", "heads") == "dims":
        return _split_head_dims(node, ctx, amap, dst, outs, entries)
    hd = dst[outs[1]]
    if len(amap) != 1 or amap[0].space is None or amap[0].outer != 1 or not isinstance(hd, int) or hd <= 0:
        ctx.block(amap, node, "splits a channel axis whose layout is not one run of whole heads")
        return False
    seg = amap[0]
    if seg.inner % hd == 0:
        heads = (Seg(seg.space, seg.size, seg.inner // hd),)
        entry = entries[outs[1]]
        if entry[0] == DIM:
            ctx.block(amap, node, "head size is read from a tensor's shape")
            return False
        if require_entry(node, ctx, entries[outs[0]], heads, None):
            ctx.set_amap(node.output[0], outs[0], heads)
            return True
        return False
    if hd % seg.inner == 0 and (seg.size * seg.inner) % hd == 0:
        ctx.table.request_grain(seg.space, hd // seg.inner)
        return False
    ctx.block(amap, node, f"splits channels into heads of {hd} that do not align with its channel blocks")
    return False


def _split_head_dims(node, ctx, amap, dst, outs, entries) -> bool:
    """(..., H) -> (..., heads, head_dim) in ``head_mode="dims"``: the channels are the
    head_dim positions, the same in every head (``Seg(space, head_dim, outer=heads)``).

    A plain run of channels asks its origins for that period (next pass); once periodic,
    the heads axis stays fixed and the head_dim axis carries the space, its target entry
    rewritten (or -1). The attention scale (1/sqrt(head_dim)) is left at its dense value:
    pruning removes dims, it does not retrain the softmax temperature."""
    hd = dst[outs[1]]
    if len(amap) != 1 or amap[0].space is None or amap[0].inner != 1 or not isinstance(hd, int) or hd <= 0:
        ctx.block(amap, node, "splits a channel axis whose layout is not one run of head dims")
        return False
    seg = amap[0]
    if ctx.table.periodic(seg.space) and hd % seg.size == 0 and seg.length % hd == 0:
        dims = (Seg(seg.space, seg.size, outer=hd // seg.size),)  # outer 2: rotary pairs (i, i + hd/2)
        if entries[outs[1]][0] == DIM and ctx.amap(*entries[outs[1]][1]) != dims:
            ctx.block(amap, node, "head size is read from a tensor's shape")
            return False
        if require_entry(node, ctx, entries[outs[1]], dims, None):
            ctx.set_amap(node.output[0], outs[1], dims)
            return True
        return False
    if seg.outer == 1 and seg.size % hd == 0 and ctx.table.request_period(seg.space, hd):
        return False  # next pass: channels are head dims
    ctx.block(amap, node, f"splits channels into heads of {hd} that do not align with its channel runs")
    return False


def _claim_entries(node, ctx, index: int, accepted: set, offset: int = 0) -> None:
    """Claim a shape input whose channel-dependent entries all sit where this rule
    proved them right."""
    dep = ctx.dependent_elements(node.input[index])
    if dep is not None and all(k + offset in accepted for k in np.flatnonzero(dep)):
        ctx.claim(node, index)


@register("Transpose")
def transpose(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    tracked = ctx.tracked(x)
    if not tracked:
        return
    r = ctx.rank(x)
    perm = attr(node, "perm", None)
    if perm is None:
        if r is None:
            ctx.block_inputs(node, f"Transpose '{node.name}': rank unknown")
            return
        perm = list(range(r))[::-1]
    for out_axis, in_axis in enumerate(perm):
        if in_axis in tracked:
            ctx.set_amap(y, out_axis, tracked[in_axis])


def _axes_operand(node, ctx):
    if len(node.input) > 1 and node.input[1]:
        value = ctx.const(node.input[1])
        return None if value is None else [int(a) for a in value.reshape(-1)]
    return attr(node, "axes", None)


@register("Squeeze")
def squeeze(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    tracked = ctx.tracked(x)
    if not tracked:
        return
    shape = ctx.shape(x)
    axes = _axes_operand(node, ctx)
    if shape is None or (axes is None and len(node.input) > 1 and node.input[1]):
        ctx.block_inputs(node, f"Squeeze '{node.name}': axes or shape unknown")
        return
    r = len(shape)
    axes = sorted(norm_axis(a, r) for a in axes) if axes else [a for a, d in enumerate(shape) if d == 1]
    for a, amap in tracked.items():
        if a in axes:
            ctx.block(amap, node, "squeezes a channel axis")
        else:
            ctx.set_amap(y, a - sum(s < a for s in axes), amap)


@register("Unsqueeze")
def unsqueeze(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    tracked = ctx.tracked(x)
    if not tracked:
        return
    axes, r = _axes_operand(node, ctx), ctx.rank(x)
    if axes is None or r is None:
        ctx.block_inputs(node, f"Unsqueeze '{node.name}': axes or rank unknown")
        return
    out_rank = r + len(axes)
    inserted = sorted(norm_axis(a, out_rank) for a in axes)
    kept = [k for k in range(out_rank) if k not in inserted]
    for a, amap in tracked.items():
        ctx.set_amap(y, kept[a], amap)


def _per_axis_const(node, ctx, index: int):
    if len(node.input) > index and node.input[index]:
        value = ctx.const(node.input[index])
        return None if value is None else value.reshape(-1)
    return None


@register("Pad")
def pad(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    tracked = ctx.tracked(x)
    if not tracked:
        return
    r = ctx.rank(x)
    if ctx.opset < 11:
        pads = attr(node, "pads", None)
    else:
        pads = _per_axis_const(node, ctx, 1)
    axes = _per_axis_const(node, ctx, 3)
    if pads is None or r is None:
        ctx.block_inputs(node, f"Pad '{node.name}': pads are not constant")
        return
    axes = list(range(r)) if axes is None else [norm_axis(int(a), r) for a in axes]
    n = len(axes)
    padded = {a for k, a in enumerate(axes) if pads[k] != 0 or pads[k + n] != 0}
    for a, amap in tracked.items():
        if a in padded:
            ctx.block(amap, node, "pads a channel axis")
        else:
            ctx.set_amap(y, a, amap)


@register("Resize", "Upsample")
def resize(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    tracked = ctx.tracked(x)
    if not tracked:
        return
    r = ctx.rank(x)
    scale_index = 1 if node.op_type == "Upsample" or ctx.opset < 11 else 2
    scales = _per_axis_const(node, ctx, scale_index)
    sizes = _per_axis_const(node, ctx, 3) if node.op_type == "Resize" and ctx.opset >= 11 else None
    has_sizes = node.op_type == "Resize" and ctx.opset >= 11 and len(node.input) > 3 and node.input[3]
    entries = shape_elements(ctx, node.input[3]) if has_sizes else None  # sizes read from Shape ops
    axes = attr(node, "axes", None)
    axes = list(range(r or 0)) if axes is None else [norm_axis(a, r) for a in axes]
    accepted = set()
    for a, amap in tracked.items():
        if a not in axes:
            ctx.set_amap(y, a, amap)
            continue
        k = axes.index(a)
        entry = entries[k] if entries is not None and len(entries) == len(axes) else None
        if scales is not None and len(scales) == len(axes) and scales[k] == 1:
            ctx.set_amap(y, a, amap)
        elif entry is not None and entry[0] == DIM and ctx.amap(*entry[1]) == amap:
            ctx.set_amap(y, a, amap)  # the size is read from these very channels: stays right
            accepted.add(k)
        elif sizes is not None and len(sizes) == len(axes) and sizes[k] == ctx.dim(x, a):
            ctx.add_fixup(SetInputElement(ctx.node_index[node.name], 3, k, sizes, amap))
            ctx.set_amap(y, a, amap)
            accepted.add(k)
        else:
            ctx.block(amap, node, "resizes a channel axis (or its scales are not constant)")
    if has_sizes:
        _claim_entries(node, ctx, 3, accepted)


@register("Tile")
def tile(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    repeats = _per_axis_const(node, ctx, 1)
    for a, amap in ctx.tracked(x).items():
        if repeats is not None and a < len(repeats) and repeats[a] == 1:
            ctx.set_amap(y, a, amap)
        else:
            ctx.block(amap, node, "repeats a channel axis (or repeats are not constant)")


@register("Expand")
def expand(node: onnx.NodeProto, ctx) -> None:
    x, y = node.input[0], node.output[0]
    tracked = ctx.tracked(x)
    if not tracked:
        expand_table(node, ctx)  # a class token (with prune_norm_spaces)
        return
    r, ry = ctx.rank(x), ctx.rank(y)
    entries = shape_elements(ctx, node.input[1])
    if r is None or ry is None or entries is None or len(entries) > ry:
        ctx.block_inputs(node, f"Expand '{node.name}': target shape cannot be traced")
        return
    accepted = set()
    for a, amap in tracked.items():
        out_axis = a + ry - r
        k = out_axis - (ry - len(entries))
        if k >= 0 and not (entries[k][0] == LIT and entries[k][1] == 1):
            if not require_entry(node, ctx, entries[k], amap, None):
                continue
            accepted.add(k)
        ctx.set_amap(y, out_axis, amap)
    _claim_entries(node, ctx, 1, accepted)


@register("Gather")
def gather(node: onnx.NodeProto, ctx) -> None:
    data, idx, y = node.input[0], node.input[1], node.output[0]
    for amap in ctx.tracked(idx).values():
        ctx.block(amap, node, "channels used as indices")
    tracked = ctx.tracked(data)
    if not tracked:
        gather_table(node, ctx)  # an embedding table (with prune_norm_spaces)
        return
    r, q = ctx.rank(data), ctx.rank(idx)
    if r is None or q is None:
        ctx.block_inputs(node, f"Gather '{node.name}': ranks unknown")
        return
    axis = norm_axis(attr(node, "axis", 0), r)
    for a, amap in tracked.items():
        if a == axis:
            ctx.block(amap, node, "gathers along a channel axis")
        else:
            ctx.set_amap(y, a if a < axis else a + q - 1, amap)


@register("Shape", "Size", "Constant", "ConstantOfShape", "Range")
def no_channels(node: onnx.NodeProto, ctx) -> None:
    """Outputs carry no channels; reading a tensor's shape does not constrain pruning."""
