"""``head_mode="dims"`` for ONNX Runtime's fused ``Attention`` and ``MultiHeadAttention``:
the same head-dim positions removed inside every head, ``num_heads`` unchanged.

Q and K dims are one space (read only by Q·Kᵀ: a contracted space, like the unfused
``attention-head-dims(qk)``), V dims another (read by the output projection). Both ops
accept a V head size other than the Q/K one; ``Attention`` then needs
``qkv_hidden_sizes``, rewritten here. The softmax scale is pinned to its dense value
(``scale = 1/sqrt(dense head size)`` unless the node sets one): pruning removes dims, it
does not retune the temperature. Past/present state blocks in this mode (its K and V
halves would need different dims).
"""

from __future__ import annotations

import math

from ..context import BIAS, OUT, Cost, Fixup, node_key
from ..spaces import Seg, make_map


class SetHeadDims(Fixup):
    """``scale`` pinned to the dense value; for ``Attention`` ``qkv_hidden_sizes`` becomes
    the kept (Q, K, V) widths."""

    def __init__(self, node_index: int, qk, v, dense_head: int, sizes: bool):
        self.node_index, self.dense_head, self.sizes = node_index, dense_head, sizes
        self.amaps = (qk, v)

    def apply(self, surgery) -> None:
        node = surgery.node(self.node_index)
        if surgery.get_attr(node, "scale") is None:
            surgery.set_attr(node, "scale", 1.0 / math.sqrt(self.dense_head))
        if self.sizes:
            qk, v = (surgery.new_length(a) for a in self.amaps)
            surgery.set_attr(node, "qkv_hidden_sizes", [qk, qk, v])


def _periodic_space(ctx, node, tag: str, heads: int, hd: int):
    origin = f"{node_key(node)}:{tag}"
    ctx.table.periods[(origin, 0)] = hd  # created as head dims from the start: no new pass
    return ctx.table.create(origin, heads * hd)


def _costs(node, ctx, q: str, kv_len, qk, v) -> None:
    """Q·Kᵀ shrinks with the Q/K dims, P·V with the V dims: B·S·T each per position."""
    dims = ctx.cost_dims(q)
    if dims is None or kv_len is None or len(dims) != 3:
        ctx.costs.append(Cost(node.name, node.op_type, None, None))
        return
    for amap in (qk, v):
        ctx.costs.append(Cost(node.name, node.op_type, None, float(dims[0] * dims[1] * kv_len), amaps=(amap,)))


def _block_state(node, ctx, maps, names) -> bool:
    if any(names):
        for m in maps:
            ctx.block(m, node, "past/present state with head-dim pruning (its K and V halves differ)")
        return True
    return False


def attention_dims(node, ctx, heads: int, hd: int, kv_len) -> None:
    x, w, y = node.input[0], node.input[1], node.output[0]
    bias = node.input[2] if len(node.input) > 2 else ""
    qk = _periodic_space(ctx, node, "qk", heads, hd)
    v = _periodic_space(ctx, node, "v", heads, hd)
    packed = make_map([Seg(qk[0].space, hd, outer=2 * heads), Seg(v[0].space, hd, outer=heads)])
    ctx.bind(node, w, 1, packed, OUT)
    if bias:
        ctx.bind(node, bias, 0, packed, BIAS)
    ctx.table.contracted.update([qk[0].space])
    _block_state(node, ctx, (qk, v), [node.input[4] if len(node.input) > 4 else "",
                                      node.output[1] if len(node.output) > 1 else ""])
    ctx.set_amap(y, (ctx.rank(y) or 3) - 1, v)
    ctx.add_fixup(SetHeadDims(ctx.node_index[node.name], qk, v, hd, sizes=True))
    _costs(node, ctx, x, kv_len, qk, v)


def mha_dims(node, ctx, maps, heads: int, hd: int, kv_len) -> bool:
    """Q, K, V projections' channels as head dims (asked for next pass when they are still
    plain runs). False when they cannot be: the caller blocks and counts fixed MACs."""
    label = f"MultiHeadAttention '{node.name}'"
    pending = False
    for m in maps:
        seg = m[0]
        if len(m) != 1 or seg.space is None or seg.inner != 1:
            ctx.block_inputs(node, f"{label}: Q/K/V channels are not one run of head dims")
            return False
        if seg.size == hd and ctx.table.periodic(seg.space):
            continue
        if seg.outer == 1 and seg.size % hd == 0 and ctx.table.request_period(seg.space, hd):
            pending = True
            continue
        ctx.block_inputs(node, f"{label}: Q/K/V channels do not divide into heads of {hd}")
        return False
    if pending:
        from .contrib import fixed_mha_cost

        fixed_mha_cost(node, ctx, kv_len)
        return True
    q, k, v = maps
    ctx.table.unify(q, k, label)
    ctx.table.contracted.update([q[0].space])
    bias = node.input[3] if len(node.input) > 3 else ""
    if bias:
        segs = [Seg(m[0].space, hd, outer=heads) for m in maps]
        ctx.bind(node, bias, 0, make_map(segs), BIAS)
    outs = [node.output[i] if len(node.output) > i else "" for i in (1, 2)]
    _block_state(node, ctx, maps, [node.input[i] if len(node.input) > i else "" for i in (6, 7)] + outs)
    if len(node.output) > 3 and node.output[3]:
        ctx.block(q, node, "the qk output with head-dim pruning")
    ctx.set_amap(node.output[0], 2, v)
    ctx.add_fixup(SetHeadDims(ctx.node_index[node.name], q, v, hd, sizes=False))
    _costs(node, ctx, node.input[0], kv_len, q, v)
    return True
