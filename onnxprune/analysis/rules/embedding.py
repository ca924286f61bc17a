"""Embedding tables: constant float tables read row-wise (word/position/token-type
embeddings, a ViT class token).

With ``prune_norm_spaces`` (the hidden size is prunable only when the norms across it may
change), a ``Gather`` on a constant table along another axis than its last, a ``Slice`` of
one that leaves its last axis whole, or an ``Expand`` of one that does not broadcast its
last axis creates a channel space on the output's last axis: the table's last axis is its
producer (role ``OUT``), sliced by surgery like a projection's columns. The space then
joins the residual stream where it is added. A table used twice (a tied LM head reading
the same initializer through a Transpose) is untied by the analysis and both copies are
members of the same hidden space, so they are sliced alike and re-tied after surgery.

Without the option these ops keep their shape-only rules (the embedding output is not a
channel axis, and whatever adds it to a tracked stream blocks with a reason).
"""

from __future__ import annotations

import onnx

from ..context import OUT, attr, norm_axis


def _float_table(ctx, name: str):
    """(root, perm) of a float constant of rank >= 2, else None."""
    src = ctx.const_source(name) if name else None
    if src is None or len(ctx.store.shape(src[0])) < 2 or ctx.store.get(src[0]).dtype.kind != "f":
        return None
    return src


def table_output(node: onnx.NodeProto, ctx, untouched_last: bool) -> bool:
    """Make the last axis of ``node``'s output a fresh space produced by the last axis of
    its constant table (input 0). ``untouched_last``: the op keeps that axis whole. True
    when handled."""
    if not getattr(ctx.options, "prune_norm_spaces", False) or not untouched_last:
        return False
    data, y = node.input[0], node.output[0]
    if ctx.tracked(data) or _float_table(ctx, data) is None:
        return False
    r, ry = ctx.rank(data), ctx.rank(y)
    hidden = ctx.dim(data, -1)
    if r is None or ry is None or not isinstance(hidden, int) or ctx.dim(y, -1) not in (hidden, None):
        return False
    amap = ctx.new_space(node, y, ry - 1, hidden)
    if amap is None:
        return False
    ctx.bind(node, data, r - 1, amap, OUT)
    ctx.set_amap(y, ry - 1, amap)
    return True


def gather_table(node: onnx.NodeProto, ctx) -> bool:
    r = ctx.rank(node.input[0])
    return r is not None and table_output(node, ctx, norm_axis(attr(node, "axis", 0), r) != r - 1)


def slice_table(node: onnx.NodeProto, ctx, axes) -> bool:
    r = ctx.rank(node.input[0])
    return r is not None and axes is not None and \
        table_output(node, ctx, all(norm_axis(int(a), r) != r - 1 for a in axes))


def expand_table(node: onnx.NodeProto, ctx) -> bool:
    """An Expand that leaves the table's last axis alone (a class token broadcast over the
    batch): its last target entry is a literal 1, a literal equal to the table's size
    (rewritten with it), or shape arithmetic that folds to 1."""
    from ..fold import fold_partial
    from .shape_values import LIT, require_entry, shape_elements

    if len(node.input) < 2 or not getattr(ctx.options, "prune_norm_spaces", False):
        return False
    entries = shape_elements(ctx, node.input[1])
    if not entries:
        return False
    kind, value, loc = entries[-1]
    hidden = ctx.dim(node.input[0], -1)
    folded = fold_partial(ctx, node.input[1])
    ones = folded is not None and folded[0].size and not folded[1].reshape(-1)[-1] and \
        not folded[2].reshape(-1)[-1] and int(folded[0].reshape(-1)[-1]) == 1
    if not (kind == LIT and (value == 1 or (value == hidden and loc is not None)) or ones):
        return False
    if not table_output(node, ctx, True):
        return False
    if kind == LIT and value == hidden and value != 1:
        require_entry(node, ctx, entries[-1], ctx.amap(node.output[0], -1), None)
    ctx.claim(node, 1)
    return True
