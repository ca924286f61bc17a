"""ONNX Runtime's fused transformer ops (domain ``com.microsoft``), as its transformer
optimizer writes them.

* ``FastGelu``, ``BiasGelu``, ``Gelu``, ``QuickGelu``: elementwise (``act(x + bias)``):
  channels pass through, a bias on the last axis is a member.
* ``EmbedLayerNormalization``: the hidden axis it creates is blocked unless
  ``prune_norm_spaces`` (then inexact, the word/position/segment tables' last axis and
  gamma/beta its members), with that reason.
* ``SkipLayerNormalization`` / ``SkipSimplifiedLayerNormalization``:
  ``LayerNorm(input + skip + bias)`` over the last axis — a residual Add (the operands'
  channels are unified) followed by a normalization across the channels, blocked unless
  ``prune_norm_spaces`` (then inexact, with gamma/beta/bias as members). Its extra
  ``input_skip_bias_sum`` output carries the same channels.
* ``Attention`` (one packed QKV weight ``(in, 3·H)``, ``num_heads``): its output channels
  are whole heads, created here; the weight's columns ``[Q | K | V]`` and the bias are
  members of that one space (three runs of the same heads), the output projection reads
  it, and ``num_heads`` is rewritten. Unequal ``qkv_hidden_sizes``, a weight that is not a
  constant or a head count that does not divide the hidden size block the heads.
* ``MultiHeadAttention`` (Q, K, V from separate projections, ``(B, S, H)`` each): the
  three channel axes are unified as whole heads (the projections' channels are made
  head-sized blocks, like a Reshape into heads) and ``num_heads`` is rewritten; packed
  QKV/KV layouts and 4-D keys/values block. The packed bias ``[Q | K | V]`` is a member.
* With ``head_mode="dims"`` both prune the same head dims inside every head instead
  (:mod:`.contrib_dims`).

Past key/value inputs and present outputs carry the heads on their head axis (constants
become members; a graph input or output blocks them); a per-head ``attention_bias``
constant is a member. MACs: the packed projection of ``Attention``, and Q·Kᵀ and P·V of
both (``2·B·S·T·H``, shrinking with the heads), as :func:`onnxprune.cost.count_macs`
counts them.
"""

from __future__ import annotations

import onnx

from ..context import BIAS, CONST, IN, NORM_BIAS, NORM_SCALE, OUT, Cost, Fixup, attr, node_key
from ..spaces import Seg, make_map
from . import register
from .elementwise import bind_broadcast

MS = "com.microsoft"


def _input(node, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _output(node, i: int) -> str:
    return node.output[i] if len(node.output) > i else ""


class SetNumHeads(Fixup):
    """``num_heads`` becomes the kept head count (``heads`` maps one position per head)."""

    def __init__(self, node_index: int, heads):
        self.node_index = node_index
        self.amaps = (heads,)

    def apply(self, surgery) -> None:
        surgery.set_attr(surgery.node(self.node_index), "num_heads", surgery.new_length(self.amaps[0]))


# ---- activations ---------------------------------------------------------------------
@register(f"{MS}:FastGelu", f"{MS}:BiasGelu", f"{MS}:Gelu", f"{MS}:QuickGelu")
def bias_activation(node: onnx.NodeProto, ctx) -> None:
    """``act(x [+ bias])``; the bias (1-D, the last axis) shrinks with the channels."""
    x, y = node.input[0], node.output[0]
    for axis, amap in ctx.tracked(x).items():
        ctx.set_amap(y, axis, amap)
    bias = _input(node, 1)
    if bias:
        bind_broadcast(node, ctx, bias, y)


# ---- skip + layer normalization -------------------------------------------------------
@register(f"{MS}:SkipLayerNormalization", f"{MS}:SkipSimplifiedLayerNormalization")
def skip_layer_norm(node: onnx.NodeProto, ctx) -> None:
    simplified = node.op_type == "SkipSimplifiedLayerNormalization"
    x, skip = node.input[0], node.input[1]
    gamma = _input(node, 2)
    beta = "" if simplified else _input(node, 3)
    bias = _input(node, 3 if simplified else 4)
    r, rs = ctx.rank(x), ctx.rank(skip)
    if r is None or rs is None:
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': operand ranks unknown")
        return
    outs = [o for o in (_output(node, 0), _output(node, 3)) if o]  # output, input_skip_bias_sum
    if any(o for o in node.output[1:3]):
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': mean/inv-std outputs are used")
        return
    label = f"{node.op_type} '{node.name}'"
    for axis in range(r):
        s_axis = axis - (r - rs)
        maps = [m for m in (ctx.amap(x, axis), ctx.amap(skip, s_axis) if s_axis >= 0 else None) if m is not None]
        if not maps:
            continue
        amap = maps[0]
        last = axis == r - 1
        if last and not ctx.options.prune_norm_spaces:
            ctx.block(amap, node, "normalizes across these channels (allow with --prune-norm-spaces)")
        if len(maps) == 2:
            ctx.table.unify(maps[0], maps[1], label)
        elif s_axis >= 0 and ctx.dim(skip, s_axis) != 1:
            # one side untracked: the other is bound (a constant member, or blocked)
            tracked_x = ctx.amap(x, axis) is not None
            ctx.bind(node, skip if tracked_x else x, s_axis if tracked_x else axis, amap, CONST)
        if last:
            if not ctx.options.prune_norm_spaces:
                continue
            ctx.table.mark_inexact(amap, f"{label} normalizes across these channels")
            for name, role in ((gamma, NORM_SCALE), (beta, NORM_BIAS), (bias, BIAS)):
                if name:
                    ctx.bind(node, name, 0, amap, role)
        for o in outs:
            ctx.set_amap(o, axis, amap)


@register(f"{MS}:EmbedLayerNormalization")
def embed_layer_norm(node: onnx.NodeProto, ctx) -> None:
    """Word + position + segment embeddings, LayerNorm. With ``prune_norm_spaces`` the
    hidden axis it creates is produced by the tables' last axis (members, like an
    embedding ``Gather``) with gamma/beta, and inexact; otherwise blocked with a reason."""
    y = node.output[0]
    hidden = ctx.dim(y, -1)
    if not isinstance(hidden, int):
        src = ctx.const_source(_input(node, 2))  # word_embedding (vocab, hidden)
        hidden = list(ctx.store.shape(src[0]))[-1] if src is not None and src[1] is None else None
    amap = ctx.new_space(node, y, 2, hidden)
    if not ctx.options.prune_norm_spaces:
        ctx.block(amap, node, "creates the hidden size from embedding tables, which are not pruned "
                              "(allow with --prune-norm-spaces)")
    else:
        ctx.table.mark_inexact(amap, f"EmbedLayerNormalization '{node.name}' normalizes across these channels")
        for i, role in ((2, OUT), (3, OUT), (4, OUT)):
            if _input(node, i):
                ctx.bind(node, node.input[i], 1, amap, role)
        for i, role in ((5, NORM_SCALE), (6, NORM_BIAS)):
            if _input(node, i):
                ctx.bind(node, node.input[i], 0, amap, role)
    for out in (y, _output(node, 2)):  # output, embedding_sum
        if out:
            ctx.set_amap(out, 2, amap)


# ---- attention --------------------------------------------------------------------------
def _heads_space(ctx, node, out: str, heads: int, head_size: int):
    """A fresh space of ``heads`` whole heads on the last axis of ``out``: the map of that
    axis (``Seg(s, heads, inner=head_size)``) and of a head axis (``Seg(s, heads)``)."""
    origin = f"{node_key(node)}:{out}:-1"
    if ctx.table.grains.get(origin, 1) < head_size:
        ctx.table.grains[origin] = head_size  # created whole-head from the start: no new pass
    amap = ctx.table.create(origin, heads * head_size)
    seg = amap[0]
    return amap, make_map([Seg(seg.space, seg.size)])


def _per_head_inputs(node, ctx, heads_axis_map, past: list[tuple[str, int]], attention_bias: str) -> None:
    """Past K/V (head axis given) and a per-head attention bias shrink with the heads."""
    for name, axis in past:
        if name:
            ctx.bind(node, name, axis, heads_axis_map, CONST)
    if attention_bias:
        d = ctx.dim(attention_bias, 1)
        if d is None:
            ctx.block(heads_axis_map, node, "attention bias with an unknown head axis")
        elif d != 1:
            ctx.bind(node, attention_bias, 1, heads_axis_map, CONST)


def _attention_cost(node, ctx, q: str, kv_len, amap, op: str) -> None:
    """Q·Kᵀ and P·V: ``2·B·S·T·H``, H shrinking with the heads (``amap``)."""
    dims = ctx.cost_dims(q)
    if dims is None or kv_len is None or len(dims) != 3:
        ctx.costs.append(Cost(node.name, op, None, None))
        return
    ctx.costs.append(Cost(node.name, op, None, float(2 * dims[0] * dims[1] * kv_len), amaps=(amap,)))


def _past_length(ctx, name: str, axis: int):
    if not name:
        return 0
    dims = ctx.cost_dims(name)
    return None if dims is None else dims[axis]


@register(f"{MS}:Attention")
def attention(node: onnx.NodeProto, ctx) -> None:
    x, w, y = node.input[0], _input(node, 1), node.output[0]
    bias, past, attention_bias = _input(node, 2), _input(node, 4), _input(node, 5)
    label = f"Attention '{node.name}'"
    src = ctx.const_source(w) if w else None
    heads = attr(node, "num_heads", 0)
    if src is None:
        ctx.block_inputs(node, f"{label}: the packed QKV weight is not a constant")
        return
    shape = list(ctx.store.shape(src[0]))
    wdims = shape if src[1] is None else [shape[p] for p in src[1]]
    sizes = attr(node, "qkv_hidden_sizes", None)
    hidden = wdims[1] // 3 if wdims[1] % 3 == 0 else None
    dims_x = ctx.cost_dims(x)
    if dims_x is not None and len(dims_x) == 3:
        ctx.costs.append(Cost(node.name, "Attention", src[0], float(dims_x[0] * dims_x[1])))
    else:
        ctx.costs.append(Cost(node.name, "Attention", src[0], None))
    if sizes is not None and len(set(sizes)) != 1:
        hidden = None
    ctx.bind(node, w, 0, ctx.amap(x, -1), IN)
    dims_x = ctx.cost_dims(x)
    p = _past_length(ctx, past, 3)
    kv_len = None if dims_x is None or p is None else dims_x[1] + p
    if not hidden or heads <= 0 or hidden % heads:
        # not prunable by heads: the weight's columns are a blocked group that says why
        amap = ctx.new_space(node, w, 1, wdims[1])
        ctx.bind(node, w, 1, amap, OUT)
        ctx.block(amap, node, "Q/K/V hidden sizes differ or do not divide into num_heads" if heads > 0
                  else "num_heads missing")
        if sizes is not None and dims_x is not None and kv_len is not None:
            fixed = dims_x[0] * dims_x[1] * kv_len * (sizes[0] + sizes[2])
            ctx.costs.append(Cost(node.name, "Attention", None, 1.0, float(fixed)))
        else:
            ctx.costs.append(Cost(node.name, "Attention", None, None))
        return
    if getattr(ctx.options, "head_mode", "heads") == "dims":
        from .contrib_dims import attention_dims

        attention_dims(node, ctx, heads, hidden // heads, kv_len)
        return
    amap, head_axis = _heads_space(ctx, node, y, heads, hidden // heads)
    seg = amap[0]
    packed = make_map([Seg(seg.space, seg.size, seg.inner, outer=3)])
    ctx.bind(node, w, 1, packed, OUT)
    if bias:
        ctx.bind(node, bias, 0, packed, BIAS)
    _per_head_inputs(node, ctx, head_axis, [(past, 2)], attention_bias)
    present = _output(node, 1)
    if present:
        ctx.set_amap(present, 2, head_axis)
    ctx.set_amap(y, (ctx.rank(y) or 3) - 1, amap)
    ctx.add_fixup(SetNumHeads(ctx.node_index[node.name], head_axis))
    _attention_cost(node, ctx, x, kv_len, amap, "Attention")


@register(f"{MS}:MultiHeadAttention")
def multi_head_attention(node: onnx.NodeProto, ctx) -> None:
    q, k, v = node.input[0], _input(node, 1), _input(node, 2)
    bias, attention_bias = _input(node, 3), _input(node, 5)
    past_k, past_v = _input(node, 6), _input(node, 7)
    label = f"MultiHeadAttention '{node.name}'"
    heads = attr(node, "num_heads", 0)
    dims_k = ctx.cost_dims(k) if k else None
    p = _past_length(ctx, past_k, 2)
    kv_len = None if dims_k is None or p is None or len(dims_k) != 3 else dims_k[1] + p
    operands = [q, k, v]
    if not (k and v) or any(ctx.rank(t) != 3 for t in operands):
        # Q·Kᵀ and P·V of packed layouts are not counted (neither does count_macs)
        ctx.block_inputs(node, f"{label}: packed QKV, packed KV or 4-D key/value layouts are not analyzed")
        return
    maps = [ctx.amap(t, -1) for t in operands]
    hidden = ctx.dim(q, -1)
    ok = isinstance(hidden, int) and heads > 0 and hidden % heads == 0 and \
        all(ctx.dim(t, -1) == hidden for t in operands)
    if not ok:
        ctx.block_inputs(node, f"{label}: Q, K and V hidden sizes differ or do not divide into num_heads")
    elif any(m is None for m in maps):
        ctx.block_inputs(node, f"{label}: Q, K and V do not all come from tracked channels (projections)")
        ok = False
    if ok and getattr(ctx.options, "head_mode", "heads") == "dims":
        from .contrib_dims import mha_dims

        if mha_dims(node, ctx, maps, heads, hidden // heads, kv_len):
            return
        ok = False
    pending = False
    if ok:
        hd = hidden // heads
        for m in maps:
            if len(m) != 1 or m[0].space is None or m[0].outer != 1 or hd % m[0].inner:
                ctx.block_inputs(node, f"{label}: Q/K/V channels are not one run of whole heads")
                ok = False
                break
            if m[0].inner < hd:
                ctx.table.request_grain(m[0].space, hd // m[0].inner)  # whole heads next pass
                pending = True
    if not ok or pending:
        fixed_mha_cost(node, ctx, kv_len)
        return
    for m in maps[1:]:
        ctx.table.unify(maps[0], m, label)
    amap = maps[0]
    seg = amap[0]
    head_axis = make_map([Seg(seg.space, seg.size)])
    if bias:
        ctx.bind(node, bias, 0, make_map([Seg(seg.space, seg.size, seg.inner, outer=3)]), BIAS)
    _per_head_inputs(node, ctx, head_axis, [(past_k, 1), (past_v, 1)], attention_bias)
    for i, axis in ((1, 1), (2, 1), (3, 1)):  # present_key, present_value, qk
        if _output(node, i):
            ctx.set_amap(node.output[i], axis, head_axis)
    ctx.set_amap(node.output[0], 2, amap)
    ctx.add_fixup(SetNumHeads(ctx.node_index[node.name], head_axis))
    _attention_cost(node, ctx, q, kv_len, amap, "MultiHeadAttention")


def fixed_mha_cost(node, ctx, kv_len) -> None:
    """MACs of a MultiHeadAttention that is not pruned here: B·S·T·(H_qk + H_v), as
    count_macs counts it."""
    dims_q, dims_v = ctx.cost_dims(node.input[0]), ctx.cost_dims(_input(node, 2))
    if dims_q is None or dims_v is None or kv_len is None:
        ctx.costs.append(Cost(node.name, "MultiHeadAttention", None, None))
    else:
        fixed = dims_q[0] * dims_q[1] * kv_len * (dims_q[2] + dims_v[2])
        ctx.costs.append(Cost(node.name, "MultiHeadAttention", None, 1.0, float(fixed)))
