"""Concat/Split (each other's adjoint), Slice and Pad (zero padding and cropping are each
other's adjoint), Gather/GatherElements (scatters)."""

from __future__ import annotations

import math

import numpy as np

from ..ops import attr, norm_axis, pad, reshape, slice_, split
from . import NeedsOpset, NoRule, only, register


@register("Concat")
def concat(node, b, gy, needs):
    axis = norm_axis(attr(node, "axis"), b.rank(node.output[0]))
    sizes = [b.shape(i)[axis] for i in node.input]
    wanted = [k for k, need in enumerate(needs) if need]
    if len(wanted) > 1:
        parts = split(b, gy[0], sizes, axis, hint="dcat")
        return {k: parts[k] for k in wanted}
    k = wanted[0]
    start = sum(sizes[:k])
    return {k: slice_(b, gy[0], [start], [start + sizes[k]], [axis], hint="dcat")}


@register("Split")
def split_(node, b, gy, needs):
    only(needs, 0, what="split sizes")
    axis = norm_axis(attr(node, "axis", 0), b.rank(node.input[0]))
    parts = [g if g is not None else b.zeros(b.shape(o), node.input[0]) for g, o in zip(gy, node.output)]
    if len(parts) == 1:
        return {0: parts[0]}
    return {0: b.op("Concat", parts, hint="dsplit", axis=axis)}


def _slice_params(node, b, xs: list[int]):
    """Per sliced axis: (axis, first index, step), from the constant starts/axes/steps."""
    r = len(xs)
    starts = [int(v) for v in b.need_value(node.input[1], "Slice starts").reshape(-1)]
    given = [node.input[k] if len(node.input) > k and node.input[k] else None for k in (3, 4)]
    axes, steps = (None if t is None else b.need_value(t, f"Slice {what}") for t, what in zip(given, ("axes", "steps")))
    axes = list(range(len(starts))) if axes is None else [norm_axis(int(a), r) for a in axes.reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps.reshape(-1)]
    out = []
    for a, s, st in zip(axes, starts, steps):
        d = xs[a]
        s = s + d if s < 0 else s
        s = min(max(s, 0), d) if st > 0 else min(max(s, -1), d - 1)
        out.append((a, s, st))
    return out


@register("Slice")
def slice_grad(node, b, gy, needs):
    only(needs, 0, what="Slice starts/ends/axes/steps")
    if b.opset < 10:  # pragma: no cover - models here are opset 11+
        raise NoRule("Slice with attributes")
    xs, ys = b.shape(node.input[0]), b.shape(node.output[0])
    if math.prod(ys) == 0:
        return {0: b.zeros(xs, node.input[0])}
    g = gy[0]
    begins, ends = [0] * len(xs), [0] * len(xs)
    for a, s, st in _slice_params(node, b, xs):
        n = ys[a]
        if st < 0:  # reversed: flip g, then it is the ascending slice from the last index picked
            g = slice_(b, g, [-1], [-(2**63)], [a], [-1], hint="dsl_rev")
            s, st = s + (n - 1) * st, -st
        if st > 1:  # zero-insert: [.., n, ..] -> [.., n, st, ..] -> [.., n * st, ..]
            shape = ys[:a] + [n, 1] + ys[a + 1:]
            g = pad(b, reshape(b, g, shape), [0] * len(shape), [0] * (a + 1) + [st - 1] + [0] * (len(ys) - a - 1))
            g = reshape(b, g, ys[:a] + [n * st] + ys[a + 1:], hint="dsl_ins")
            n *= st
        begins[a], ends[a] = s, xs[a] - s - n
        ys = ys[:a] + [n] + ys[a + 1:]
    return {0: pad(b, g, begins, ends, hint="dslice")}


@register("Pad")
def pad_grad(node, b, gy, needs):
    """Constant-mode padding: the gradient is the same Pad with negated amounts (crop)."""
    only(needs, 0, what="Pad pads/value")
    mode = attr(node, "mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise NoRule(f"mode '{mode}'")
    if len(node.input) < 2:  # pragma: no cover - opset < 11
        raise NoRule("pads as attribute")
    inputs = [gy[0], b.op("Neg", [node.input[1]], hint="negpads")]
    if len(node.input) > 3 and node.input[3]:
        inputs += ["", node.input[3]]
    return {0: b.op("Pad", inputs, hint="dpad", mode="constant")}


def _scatter_add(b, xs, like, indices: str, updates: str, axis: int, unique: bool) -> str:
    if not unique and b.opset < 16:
        raise NeedsOpset(16, "repeated indices sum into ScatterElements")
    zeros = b.zeros(xs, like)
    return b.op("ScatterElements", [zeros, indices, updates], hint="dgather", axis=axis,
                reduction=None if unique else "add")


def _gather_scatter(b, xs, x, axis, flat_idx: str, m: int, upd: str, unique: bool) -> str:
    """Scatter ``upd`` (x's shape with ``m`` at ``axis``) to positions ``flat_idx`` of zeros."""
    ushape = xs[:axis] + [m] + xs[axis + 1:]
    idx = reshape(b, flat_idx, [1] * axis + [m] + [1] * (len(xs) - axis - 1))
    idx = b.op("Expand", [idx, b.ints(ushape)], hint="gidx")
    return _scatter_add(b, xs, x, idx, upd, axis, unique)


@register("Gather")
def gather(node, b, gy, needs):
    only(needs, 0, what="Gather indices")
    x, ind = node.input[0], node.input[1]
    xs = b.shape(x)
    axis = norm_axis(attr(node, "axis", 0), len(xs))
    m = math.prod(b.shape(ind))
    g = reshape(b, gy[0], xs[:axis] + [m] + xs[axis + 1:])
    value = b.value(ind)
    if value is None and axis == 0:  # a table lookup: ScatterND adds whole rows (2x faster than by element)
        if b.opset < 16:
            raise NeedsOpset(16, "repeated indices sum into ScatterND")
        rows = b.op("Mod", [reshape(b, ind, [m, 1]), b.const(np.asarray(xs[0], dtype=np.int64), hint="rows")],
                    hint="gidx")  # negative indices count from the end
        return {0: b.op("ScatterND", [b.zeros(xs, x), rows, g], hint="dgather", reduction="add")}
    if value is None:
        return {0: _gather_scatter(b, xs, x, axis, reshape(b, ind, [m]), m, g, False)}
    flat = value.reshape(-1).astype(np.int64)
    flat = np.where(flat < 0, flat + xs[axis], flat)
    if m and np.array_equal(flat, np.arange(flat[0], flat[0] + m)):  # a contiguous range: Pad
        begins, ends = [0] * len(xs), [0] * len(xs)
        begins[axis], ends[axis] = int(flat[0]), int(xs[axis] - flat[0] - m)
        return {0: pad(b, g, begins, ends, hint="dgather")}
    unique = len(set(flat.tolist())) == m
    if unique or b.opset >= 16:
        return {0: _gather_scatter(b, xs, x, axis, b.ints(flat), m, g, unique)}
    # before opset 16, repeated indices: round r scatters the r-th occurrence of each index
    rank = np.zeros(m, dtype=np.int64)
    seen: dict[int, int] = {}
    for j, v in enumerate(flat.tolist()):
        rank[j] = seen.get(v, 0)
        seen[v] = rank[j] + 1
    parts = []
    for r in range(int(rank.max()) + 1):
        pos = np.nonzero(rank == r)[0]
        part = b.op("Gather", [g, b.ints(pos)], hint="ground", axis=axis)
        parts.append(_gather_scatter(b, xs, x, axis, b.ints(flat[pos]), len(pos), part, True))
    return {0: b.op("Sum", parts, hint="dgather")}


@register("GatherElements")
def gather_elements(node, b, gy, needs):
    only(needs, 0, what="GatherElements indices")
    x, ind = node.input[0], node.input[1]
    xs = b.shape(x)
    axis = norm_axis(attr(node, "axis", 0), len(xs))
    value = b.value(ind)
    unique = False
    if value is not None:  # distinct target positions need no summing
        coords = np.indices(value.shape).reshape(value.ndim, -1)
        coords[axis] = np.where(value < 0, value + xs[axis], value).reshape(-1)
        unique = np.unique(coords, axis=1).shape[1] == value.size
    return {0: _scatter_add(b, xs, x, ind, gy[0], axis, unique)}
