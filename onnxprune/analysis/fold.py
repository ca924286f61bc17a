"""Fold small integer subgraphs (shape arithmetic) to values.

Exporters compute Slice bounds, Pad amounts and Reshape targets at run time from
``Shape`` ops (``x.chunk(2, 1)`` becomes Shape→Gather→Div→Slice). Where every dim read
is static, the value is known now. An element is *channel-dependent* when it reads the
size of a channel axis: it changes once channels go, so it may only reach a place that a
rule rewrites or proves consistent (the rule *claims* that input); anywhere else it
blocks the spaces it reads (:func:`check_channel_dependent_values`).

Values carry two element masks: ``dep`` (reads a channel axis size) and ``unknown``
(reads a dynamic dim); layout ops move the masks like the data, arithmetic ORs them.
"""

from __future__ import annotations

import numpy as np
import onnx

UNKNOWN_DIM = -(2**40)
MAX_ELEMENTS = 4096
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum}
_LAYOUT = ("Gather", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Slice", "Identity", "Cast", "Concat")
FOLDABLE = set(_BINARY) | set(_LAYOUT) | {"Div", "Neg", "ConstantOfShape", "Range", "Shape", "Equal", "Where"}


def fold(ctx, name: str):
    """(value, channel_dependent) when fully known, else None."""
    got = fold_partial(ctx, name)
    if got is None or got[2].any():
        return None
    return got[0], bool(got[1].any())


def fold_partial(ctx, name: str):
    """(value, dep_mask, unknown_mask) or None when not shape arithmetic."""
    cache = ctx.__dict__.setdefault("_fold_cache", {})
    if name not in cache:
        cache[name] = None  # guards against cycles in malformed graphs
        cache[name] = _fold(ctx, name)
    return cache[name]


def _zeros(shape):
    return np.zeros(shape, dtype=bool)


def _fold(ctx, name: str):
    if not name:
        return None
    if name in ctx.store:
        value = ctx.store.get(name)
        return (value, _zeros(value.shape), _zeros(value.shape)) if value.size <= MAX_ELEMENTS else None
    node = ctx.producers.get(name)
    if node is None or node.domain not in ("", "ai.onnx") or len(node.output) != 1 or node.op_type not in FOLDABLE:
        return None
    if node.op_type == "Shape":
        return _fold_shape(ctx, node)
    args = []
    for i in node.input:
        got = fold_partial(ctx, i) if i else None
        if i and got is None:
            return None
        args.append(got)
    vals = [a[0] if a is not None else None for a in args]
    try:
        out = np.asarray(_eval(node, node.op_type, vals))
        if out.size > MAX_ELEMENTS:
            return None
        dep = _eval_mask(node, vals, [a[1] if a is not None else None for a in args], out.shape)
        unknown = _eval_mask(node, vals, [a[2] if a is not None else None for a in args], out.shape)
    except Exception:  # anything unexpected: not foldable
        return None
    return out, dep, unknown


def _fold_shape(ctx, node):
    from .context import attr

    t = node.input[0]
    shape = ctx.shape(t)
    if shape is None:
        return None
    r = len(shape)
    start, end = attr(node, "start", 0), attr(node, "end", r)
    start, end = (start + r if start < 0 else start), (end + r if end < 0 else end)
    axes = list(range(max(0, start), min(r, end)))
    dims = [shape[a] for a in axes]
    unknown = np.array([not isinstance(d, int) for d in dims], dtype=bool)
    dep = np.array([ctx.amap(t, a) is not None for a in axes], dtype=bool)
    return np.array([d if isinstance(d, int) else UNKNOWN_DIM for d in dims], dtype=np.int64), dep, unknown


def _eval_mask(node, vals, masks, out_shape):
    """Which output elements inherit a flagged input element."""
    if not any(m is not None and m.any() for m in masks):
        return _zeros(out_shape)
    op = node.op_type
    if op in _LAYOUT:
        if op != "Concat" and any(m is not None and m.any() for m in masks[1:]):
            return np.ones(out_shape, dtype=bool)  # flagged indices/shape: everything may move
        if op == "Concat":
            mvals = [m.astype(np.int64) for m in masks]
        else:
            mvals = [masks[0].astype(np.int64)] + list(vals[1:])
        return np.asarray(_eval(node, "Identity" if op == "Cast" else op, mvals)).astype(bool).reshape(out_shape)
    if op in _BINARY or op in ("Div", "Neg", "Equal", "Where"):
        out = _zeros(out_shape)
        for m in masks:
            if m is not None:
                out = out | np.broadcast_to(m, out_shape)
        return out
    return np.ones(out_shape, dtype=bool)


def _eval(node, op, vals):
    from .context import attr

    x = vals[0] if vals else None
    if op == "Identity":
        return x
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(attr(node, "to")))
    if op in _BINARY:
        return _BINARY[op](vals[0], vals[1])
    if op == "Div":
        a, b = vals
        return a // b if a.dtype.kind in "iu" and b.dtype.kind in "iu" else a / b
    if op == "Neg":
        return -x
    if op == "Equal":
        return np.equal(vals[0], vals[1])
    if op == "Where":  # expand(..., -1, ...) as exported: Where(Equal(shape, -1), ones, shape)
        return np.where(vals[0].astype(bool), vals[1], vals[2])
    if op == "Gather":
        return np.take(x, vals[1], axis=attr(node, "axis", 0))
    if op in ("Unsqueeze", "Squeeze"):
        axes = attr(node, "axes", None) if len(vals) < 2 or vals[1] is None else vals[1].reshape(-1).tolist()
        if op == "Squeeze":
            return np.squeeze(x, axis=None if axes is None else tuple(axes))
        rank = x.ndim + len(axes)
        for a in sorted(a + rank if a < 0 else a for a in axes):
            x = np.expand_dims(x, a)
        return x
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in vals], axis=attr(node, "axis", 0))
    if op == "Reshape":
        return x.reshape([int(d) if d != 0 else x.shape[k] for k, d in enumerate(vals[1].reshape(-1))])
    if op == "Transpose":
        return np.transpose(x, attr(node, "perm", None))
    if op == "ConstantOfShape":
        value = attr(node, "value", None)
        fill = onnx.numpy_helper.to_array(value).reshape(-1)[0] if value is not None else np.float32(0)
        return np.full(x.astype(np.int64).tolist(), fill)
    if op == "Range":
        return np.arange(vals[0].item(), vals[1].item(), vals[2].item())
    if op == "Slice":
        starts, ends = vals[1].reshape(-1), vals[2].reshape(-1)
        axes = vals[3].reshape(-1) if len(vals) > 3 and vals[3] is not None else range(len(starts))
        steps = vals[4].reshape(-1) if len(vals) > 4 and vals[4] is not None else [1] * len(starts)
        sl = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            sl[int(a)] = slice(int(s), int(e), int(st))
        return x[tuple(sl)]
    return None


SHAPE_OPS = FOLDABLE | {"Floor", "Ceil", "Sqrt", "Abs", "Mod", "Equal", "Less", "Greater", "Where", "Not",
                        "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin"}


def check_channel_dependent_values(ctx) -> None:
    """Block the spaces whose sizes flow, through shape arithmetic, into an input that no
    rule claimed (a Reshape of another tensor, a Slice bound on an untracked axis, ...).

    Forward taint from every Shape that reads a channel axis: through shape arithmetic it
    propagates (element-precise where the value folds), at a claimed input it stops, at
    any other input it blocks the spaces it came from.
    """
    taint: dict[str, list] = {}

    def dependent(name: str) -> bool:
        got = fold_partial(ctx, name)
        return got is None or bool(got[1].any())

    for node in ctx.model.graph.node:
        if node.op_type == "Shape":
            maps = list(ctx.tracked(node.input[0]).values())
            if maps and node.output and dependent(node.output[0]):
                taint[node.output[0]] = maps
            continue
        sources = []
        for i, name in enumerate(node.input):
            if name in taint and (node.name, i) not in ctx.claimed:
                sources.extend(taint[name])
        if not sources:
            continue
        shape_like = all(not n or n in taint or fold_partial(ctx, n) is not None for n in node.input)
        if node.op_type in SHAPE_OPS and shape_like:
            for out in node.output:
                if out and dependent(out):
                    taint[out] = sources
        else:
            for amap in sources:
                ctx.block(amap, node, "reads a value computed from this channel count that is not rewritten")
