"""Ops that move, merge or resize axes: Flatten, Reshape, Transpose, Squeeze/Unsqueeze,
Pad, Resize, Tile, Expand, Gather on a non-channel axis.

Reshape merges a channel axis with untracked neighbours (channel c becomes a block of
features) when its target shape can be proven and rewritten: a constant, or a
Shape→Gather→Concat chain whose entry for that axis is -1, a constant, or the size of the
same channels elsewhere. Splitting a channel axis (attention heads) is not supported yet
and blocks.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from ..context import Fixup, attr, norm_axis
from ..spaces import scale_map
from . import register

# ----------------------------------------------------------------- fixups


class SetConstElement(Fixup):
    """Entry ``index`` of a 1-D integer constant becomes the new length of ``amap``."""

    def __init__(self, tensor: str, index: int, amap):
        self.tensor, self.index = tensor, index
        self.amaps = (amap,)

    def apply(self, surgery) -> None:
        value = surgery.store.get(self.tensor).copy()
        flat = value.reshape(-1)
        flat[self.index] = surgery.new_length(self.amaps[0])
        surgery.store.set(self.tensor, value)


class SetInputElement(Fixup):
    """Entry ``k`` of input ``index`` (a constant or a folded value) becomes the new length
    of ``amap``; the input is rewritten as a constant."""

    def __init__(self, node_index: int, index: int, k: int, value, amap):
        self.node_index, self.index, self.k = node_index, index, k
        self.value = value
        self.amaps = (amap,)

    def apply(self, surgery) -> None:
        node = surgery.node(self.node_index)
        current = surgery.input_value(node, self.index)
        arr = (self.value if current is None else current).copy()
        arr.reshape(-1)[self.k] = surgery.new_length(self.amaps[0])
        surgery.set_input_value(node, self.index, arr, "sizes")


# --------------------------------------------------------- shape vectors

LIT, DIM, UNKNOWN = "lit", "dim", "unknown"


def shape_elements(ctx, name: str, depth: int = 0):
    """Symbolic value of a 1-D shape tensor: a list of (kind, value, location) per entry.

    kind LIT: an integer, with location (constant tensor, flat index) where it is stored;
    DIM: value (tensor, axis) read by a Shape op; UNKNOWN: anything else. None when even
    the length is unknown.
    """
    if depth > 32 or not name:
        return None
    src = ctx.const_source(name)
    if src is not None:
        value = ctx.store.get(src[0]).reshape(-1)
        loc_ok = src[1] is None
        return [(LIT, int(v), (src[0], k) if loc_ok else None) for k, v in enumerate(value)]
    node = ctx.producers.get(name)
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op == "Shape":
        t = node.input[0]
        r = ctx.rank(t)
        if r is None:
            return None
        start = norm_axis(attr(node, "start", 0), r)
        end = attr(node, "end", None)
        end = r if end is None else norm_axis(end, r)
        return [(DIM, (t, a), None) for a in range(max(0, start), min(r, end))]
    if op in ("Identity", "Cast", "Squeeze", "Unsqueeze"):
        return shape_elements(ctx, node.input[0], depth + 1)
    if op == "Concat":
        out = []
        for i in node.input:
            part = shape_elements(ctx, i, depth + 1)
            if part is None:
                return None
            out.extend(part)
        return out
    if op == "Gather" and attr(node, "axis", 0) == 0:
        data = shape_elements(ctx, node.input[0], depth + 1)
        idx = ctx.const(node.input[1])
        if data is None or idx is None:
            return None
        try:
            return [data[int(i)] for i in idx.reshape(-1)]
        except IndexError:
            return None
    if op == "Slice" and len(node.input) >= 3:
        data = shape_elements(ctx, node.input[0], depth + 1)
        starts, ends = ctx.const(node.input[1]), ctx.const(node.input[2])
        steps = ctx.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        if data is None or starts is None or ends is None:
            return None
        step = 1 if steps is None else int(steps.reshape(-1)[0])
        return data[slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]), step)]
    from ..fold import fold_partial

    got = fold_partial(ctx, name)
    if got is not None and got[0].ndim <= 1:
        return [(UNKNOWN, None, None) if got[1] or unknown else (LIT, int(v), None)
                for v, unknown in zip(got[0].reshape(-1), got[2].reshape(-1))]
    shape = ctx.shape(name)
    if shape == []:
        return [(UNKNOWN, None, None)]
    if shape is not None and len(shape) == 1 and isinstance(shape[0], int):
        return [(UNKNOWN, None, None)] * shape[0]
    return None


def require_entry(node, ctx, entry, amap, same_axis: tuple | None) -> bool:
    """Make sure a shape entry stays right once ``amap``'s channels shrink.

    ``same_axis``: (tensor, axis) whose size a 0 entry copies, when that copy is right.
    """
    kind, value, loc = entry
    if kind == LIT:
        if value == -1 or (value == 0 and same_axis is not None and not attr(node, "allowzero", 0)):
            return True
        if value > 0 and loc is not None:
            ctx.add_fixup(SetConstElement(loc[0], loc[1], amap))
            return True
        ctx.block(amap, node, f"target entry {value} cannot be rewritten")
        return False
    if kind == DIM and ctx.amap(*value) == amap:
        return True
    ctx.block(amap, node, "target shape is computed in a way that cannot be proven")
    return False


# ----------------------------------------------------------------- rules


def _ints(dims) -> bool:
    return all(isinstance(d, int) for d in dims)


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
    return [([k], [k]) for k in range(lo)] + middle + tail


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
    if groups is None:
        ctx.block_inputs(node, f"Reshape '{node.name}': cannot match input and output axes")
        return
    accepted = set()
    for axis, amap in tracked.items():
        ins, outs = next(g for g in groups if axis in g[0])
        if len(outs) != 1 and len(ins) > 1:
            ctx.block(amap, node, "reshapes a channel axis together with axes of unknown size or order "
                                  "(attention heads are not supported yet)")
            continue
        if len(outs) != 1:
            ctx.block(amap, node, "splits a channel axis into several (attention heads are not supported yet)")
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
