"""Gemm and MatMul with a constant weight on either side."""

from __future__ import annotations

import math

import onnx

from ..context import IN, OUT, Cost, attr, norm_axis
from ..spaces import has_spaces, map_length, map_spaces
from . import register
from .elementwise import bind_broadcast


def _weight_dims(ctx, name):
    src = ctx.const_source(name)
    if src is None:
        return None
    shape = list(ctx.store.shape(src[0]))
    return shape if src[1] is None else [shape[p] for p in src[1]]


@register("Gemm")
def gemm(node: onnx.NodeProto, ctx) -> None:
    a, b, y = node.input[0], node.input[1], node.output[0]
    c = node.input[2] if len(node.input) > 2 and node.input[2] else None
    ta, tb = attr(node, "transA", 0), attr(node, "transB", 0)
    a_k, a_m = (0, 1) if ta else (1, 0)
    b_k, b_n = (1, 0) if tb else (0, 1)
    a_dims, b_dims = _weight_dims(ctx, a), _weight_dims(ctx, b)
    cost_a = ctx.cost_dims(a)
    if b_dims is not None and a_dims is None:
        ctx.bind(node, b, b_k, ctx.amap(a, a_k), IN)
        ymap = ctx.new_space(node, y, 1, b_dims[b_n])
        ctx.bind(node, b, b_n, ymap, OUT)
        ctx.set_amap(y, 1, ymap)
        ctx.set_amap(y, 0, ctx.amap(a, a_m))
        ctx.costs.append(Cost(node.name, "Gemm", ctx.const_source(b)[0], None if cost_a is None else cost_a[a_m]))
    elif a_dims is not None and b_dims is None:
        ctx.bind(node, a, a_k, ctx.amap(b, b_k), IN)
        ymap = ctx.new_space(node, y, 0, a_dims[a_m])
        ctx.bind(node, a, a_m, ymap, OUT)
        ctx.set_amap(y, 0, ymap)
        ctx.set_amap(y, 1, ctx.amap(b, b_n))
        cost_b = ctx.cost_dims(b)
        ctx.costs.append(Cost(node.name, "Gemm", ctx.const_source(a)[0], None if cost_b is None else cost_b[b_n]))
    else:
        ctx.block_inputs(node, f"Gemm '{node.name}': needs exactly one constant operand")
        return
    if c:
        bind_broadcast(node, ctx, c, y)


@register("MatMul")
def matmul(node: onnx.NodeProto, ctx) -> None:
    a, b, y = node.input[0], node.input[1], node.output[0]
    ra, rb, ry = ctx.rank(a), ctx.rank(b), ctx.rank(y)
    if ra is None or rb is None or ry is None or ra < 2 or rb < 2:
        ctx.block_inputs(node, f"MatMul '{node.name}': operand ranks unknown or 1-D")
        return
    a_is_w, b_is_w = ctx.const_source(a) is not None, ctx.const_source(b) is not None
    if b_is_w and not a_is_w and rb == 2:
        n = _weight_dims(ctx, b)[1]
        ctx.bind(node, b, 0, ctx.amap(a, -1), IN)
        ymap = ctx.new_space(node, y, ry - 1, n)
        ctx.bind(node, b, 1, ymap, OUT)
        ctx.set_amap(y, ry - 1, ymap)
        for axis, amap in ctx.tracked(a).items():
            if axis != ra - 1:
                ctx.set_amap(y, axis + ry - ra, amap)
        dims = ctx.cost_dims(a)
        ctx.costs.append(Cost(node.name, "MatMul", ctx.const_source(b)[0],
                              None if dims is None else float(math.prod(dims[:-1]))))
    elif a_is_w and not b_is_w and ra == 2:
        m = _weight_dims(ctx, a)[0]
        ctx.bind(node, a, 1, ctx.amap(b, -2), IN)
        ymap = ctx.new_space(node, y, ry - 2, m)
        ctx.bind(node, a, 0, ymap, OUT)
        ctx.set_amap(y, ry - 2, ymap)
        for axis, amap in ctx.tracked(b).items():
            if axis != rb - 2:
                ctx.set_amap(y, axis + ry - rb, amap)
        dims = ctx.cost_dims(b)
        ctx.costs.append(Cost(node.name, "MatMul", ctx.const_source(a)[0],
                              None if dims is None else float(math.prod(dims)) / dims[-2]))
    else:
        if a_is_w or b_is_w:
            ctx.block_inputs(node, f"MatMul '{node.name}': constant operand of rank > 2")
        else:
            _activation_matmul(node, ctx, a, b, y, ra, rb, ry)
        _activation_cost(node, ctx, a, y)


def _activation_cost(node, ctx, a, y) -> None:
    """MACs of a product of two activations, scaled by the channel axes of its output
    (heads): ``prod(y) * k``, each tracked axis of ``y`` shrinking with its channels, and
    ``k`` with them when it is head dims (Q·Kᵀ in ``head_mode="dims"``)."""
    dims_a, dims_y = ctx.cost_dims(a), ctx.cost_dims(y)
    if dims_a is None or dims_y is None:
        ctx.costs.append(Cost(node.name, "MatMul", None, None))
        return
    total = math.prod(dims_y) * dims_a[-1]
    amaps = tuple(m for ax, m in sorted(ctx.tracked(y).items()) if map_length(m) == dims_y[ax])
    contracted = ctx.amap(a, -1)
    if contracted is not None and map_length(contracted) == dims_a[-1] and \
            has_spaces(contracted) and ctx.table.periodic(map_spaces(contracted)[0]):
        amaps += (contracted,)  # head dims of Q·Kᵀ
    per = math.prod(map_length(m) for m in amaps)
    if amaps and total % per == 0:
        ctx.costs.append(Cost(node.name, "MatMul", None, float(total // per), amaps=amaps))
    else:
        ctx.costs.append(Cost(node.name, "MatMul", None, 1.0, float(total)))


def _activation_matmul(node, ctx, a, b, y, ra, rb, ry) -> None:
    """MatMul of two activations (attention scores Q·Kᵀ, context P·V).

    Batch axes broadcast like an elementwise op: their channels (attention heads) are
    unified across both operands and the output. The rows of ``a`` and the columns of
    ``b`` pass through. The contracted axis mixes the two operands' channels, so channels
    there block, except head dims (``head_mode="dims"``) on both sides: Q and K then lose
    the same dims of every head, which drops whole terms of each score. Heads laid out at different granularities (grouped-query attention: K/V
    heads repeated for several query heads) make the finer side's origins coarser.
    """
    ka, kb = ctx.amap(a, ra - 1), ctx.amap(b, rb - 2)
    if has_spaces(ka) and has_spaces(kb) and ctx.table.periodic(map_spaces(ka)[0]):
        # the same head dims on both sides (Q·Kᵀ): dropping dim d drops the term q_d·k_d
        if ctx.table.unify(ka, kb, f"MatMul '{node.name}'"):
            ctx.table.contracted.update(map_spaces(ka))
            ctx.contractions.append((node.name, [(a, ra - 1), (b, rb - 2)]))
    else:
        for amap in (ka, kb):
            if amap is not None:
                ctx.block(amap, node, "contracts channels between two activations")
    rows, cols = ctx.amap(a, ra - 2), ctx.amap(b, rb - 1)
    if rows is not None:
        ctx.set_amap(y, ry - 2, rows)
    if cols is not None:
        ctx.set_amap(y, ry - 1, cols)
    for out_axis in range(ry - 2):
        located = [(t, out_axis - (ry - r)) for t, r in ((a, ra), (b, rb))]
        maps = [ctx.amap(t, ax) for t, ax in located if ax >= 0]
        tracked = [m for m in maps if m is not None]
        if not tracked:
            continue
        amap = tracked[0]
        if len(tracked) == 2 and not unify_heads(ctx, tracked[0], tracked[1], f"MatMul '{node.name}'"):
            continue
        for t, ax in located:
            if ax >= 0 and ctx.amap(t, ax) is None and ctx.dim(t, ax) != 1:
                ctx.block(amap, node, f"axis {ax} of '{t}' broadcasts against channels")
        ctx.set_amap(y, out_axis, amap)


def unify_heads(ctx, x, z, why: str) -> bool:
    """Unify two head axes; when one is one run of channels ``r`` times finer than the
    other's (query heads vs shared K/V heads), ask for coarser channels (next pass) and
    return False."""
    if len(x) == 1 and len(z) == 1 and x[0].space is not None and z[0].space is not None:
        sx, sz = x[0], z[0]
        if sx.outer == sz.outer == 1 and sx.length == sz.length and sx.inner != sz.inner:
            fine, coarse = (sx, sz) if sx.inner < sz.inner else (sz, sx)
            if coarse.inner % fine.inner == 0:
                ctx.table.request_grain(fine.space, coarse.inner // fine.inner)
                return False
    return ctx.table.unify(x, z, why)


__all__ = ["gemm", "matmul", "norm_axis"]
