"""Layout ops: the gradient goes back through the inverse layout change (a reshape to the
input's shape, the inverse permutation, a sum over broadcast or tiled copies)."""

from __future__ import annotations

from ..ops import attr, inverse_perm, reduce, reshape, transpose, unbroadcast
from . import NoRule, only, register


@register("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape_like(node, b, gy, needs):
    only(needs, 0, what="target shape/axes")
    return {0: reshape(b, gy[0], b.shape(node.input[0]), hint="drs")}


@register("Transpose")
def transpose_(node, b, gy, needs):
    perm = attr(node, "perm", None)
    if perm is None:
        perm = list(range(b.rank(node.input[0])))[::-1]
    return {0: transpose(b, gy[0], inverse_perm(list(perm)), hint="dtr")}


@register("Expand")
def expand(node, b, gy, needs):
    only(needs, 0, what="target shape")
    return {0: unbroadcast(b, gy[0], b.shape(node.output[0]), b.shape(node.input[0]), hint="dexp")}


@register("Tile")
def tile(node, b, gy, needs):
    """y[r * d + j] = x[j] along every axis: view g as [r0, d0, r1, d1, ...], sum the r's."""
    only(needs, 0, what="repeats")
    xs = b.shape(node.input[0])
    reps = [int(v) for v in b.need_value(node.input[1], "repeats").reshape(-1)]
    if all(r == 1 for r in reps):
        return {0: gy[0]}
    split = [v for r, d in zip(reps, xs) for v in (r, d)]
    g = reshape(b, gy[0], split, hint="dtile")
    g = reduce(b, "ReduceSum", g, list(range(0, 2 * len(xs), 2)), keepdims=False, hint="dtile")
    return {0: g}


def _text(node, name, default):
    v = attr(node, name, default)
    return v.decode() if isinstance(v, bytes) else v


@register("DepthToSpace")
def depth_to_space(node, b, gy, needs):
    n, c, h, w = b.shape(node.input[0])
    bs = attr(node, "blocksize")
    if _text(node, "mode", "DCR") == "DCR":
        return {0: b.op("SpaceToDepth", [gy[0]], hint="dd2s", blocksize=bs)}
    # CRD: x [n, c', bs, bs, h, w] -> [n, c', h, bs, w, bs]
    g = reshape(b, gy[0], [n, c // (bs * bs), h, bs, w, bs])
    g = transpose(b, g, [0, 1, 3, 5, 2, 4])
    return {0: reshape(b, g, [n, c, h, w], hint="dd2s")}


@register("SpaceToDepth")
def space_to_depth(node, b, gy, needs):
    if b.rank(node.input[0]) != 4:
        raise NoRule("rank is not 4")
    return {0: b.op("DepthToSpace", [gy[0]], hint="ds2d", blocksize=attr(node, "blocksize"), mode="DCR")}
