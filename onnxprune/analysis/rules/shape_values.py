"""Shape values as data: reading the entries of a Reshape target (constants, and
Shape→Gather→Unsqueeze→Concat chains) back to the tensor axes they measure, and the
fixups that rewrite a constant entry or a computed one when channels are pruned."""

from __future__ import annotations

import numpy as np

from ..context import Fixup, attr, norm_axis
from ..spaces import scale_map

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
SCALED = "scaled"  # value ((tensor, axis), factor): a dim read by a Shape op times a constant


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
    if op == "Mul" and len(node.input) == 2:  # num_key_value_heads * n_rep
        parts = [shape_elements(ctx, i, depth + 1) for i in node.input]
        if all(p is not None and len(p) == 1 for p in parts):
            kinds = sorted((p[0] for p in parts), key=lambda e: e[0] != DIM)
            if kinds[0][0] == DIM and kinds[1][0] == LIT and kinds[1][1] > 0:
                return [(SCALED, (kinds[0][1], kinds[1][1]), None)]
    if op == "Reshape" and ctx.rank(name) == 1:  # a shape vector reshaped to [-1]
        return shape_elements(ctx, node.input[0], depth + 1)
    if op == "Where" and len(node.input) == 3:
        picked = _where_minus_one(ctx, node, depth)
        if picked is not None:
            return picked
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


def _where_minus_one(ctx, node, depth: int):
    """``Where(Equal(s, -1), other, s)`` (TorchScript's expand with -1 entries): the
    entries of ``s``, where a literal -1 becomes unknown (a read dim is never -1)."""
    cond = ctx.producers.get(node.input[0])
    if cond is None or cond.op_type != "Equal" or node.input[2] not in cond.input:
        return None
    other = cond.input[1] if cond.input[0] == node.input[2] else cond.input[0]
    minus = ctx.const(other)
    if minus is None or not np.all(minus == -1):
        return None
    data = shape_elements(ctx, node.input[2], depth + 1)
    if data is None:
        return None
    return [(UNKNOWN, None, None) if kind == LIT and value == -1 else (kind, value, loc)
            for kind, value, loc in data]


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
    if kind == DIM and ctx.table.same(ctx.amap(*value), amap):
        return True
    if kind == SCALED:
        read = ctx.amap(*value[0])
        if read is not None and ctx.table.same(scale_map(read, inner=value[1]), amap):
            return True
    ctx.block(amap, node, "target shape is computed in a way that cannot be proven")
    return False


# ----------------------------------------------------------------- rules


def _ints(dims) -> bool:
    return all(isinstance(d, int) for d in dims)
