"""Fold small integer subgraphs (shape arithmetic) to values.

Exporters compute Slice bounds, Pad amounts and Reshape targets at run time from
``Shape`` ops (``x.chunk(2, 1)`` becomes Shape→Gather→Div→Slice). Where every dim read
is static, the value is known now. Such a value is *channel-dependent* when it reads
the size of a channel axis: it changes once channels go, so a rule may use it only if it
rewrites it (Slice bounds become constants) and must block otherwise.
"""

from __future__ import annotations

import numpy as np

from ..model import WeightStore

MAX_ELEMENTS = 4096
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum}


UNKNOWN_DIM = -(2**40)


def fold(ctx, name: str):
    """(value, channel_dependent) or None (not foldable, or reads a dynamic dim)."""
    got = fold_partial(ctx, name)
    if got is None or got[2].any():
        return None
    return got[0], got[1]


def fold_partial(ctx, name: str, depth: int = 0):
    """(value, channel_dependent, unknown_mask): dynamic dims read by Shape propagate as
    unknown elements through gathers, slices and arithmetic."""
    cache = ctx.__dict__.setdefault("_fold_cache", {})
    if name in cache:
        return cache[name]
    result = _fold(ctx, name, depth)
    cache[name] = result
    return result


def _fold(ctx, name: str, depth: int):
    if not name or depth > 64:
        return None
    if name in ctx.store:
        value = ctx.store.get(name)
        return (value, False, np.zeros(value.shape, dtype=bool)) if value.size <= MAX_ELEMENTS else None
    node = ctx.producers.get(name)
    if node is None or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    op = node.op_type
    from .context import attr  # local: context imports nothing from here

    if op == "Shape":
        t = node.input[0]
        shape = ctx.shape(t)
        if shape is None:
            return None
        r = len(shape)
        start = attr(node, "start", 0)
        end = attr(node, "end", r)
        start, end = (start + r if start < 0 else start), (end + r if end < 0 else end)
        axes = range(max(0, start), min(r, end))
        dims = [shape[a] for a in axes]
        unknown = np.array([not isinstance(d, int) for d in dims], dtype=bool)
        dep = any(ctx.amap(t, a) is not None for a in axes)
        return np.array([d if isinstance(d, int) else UNKNOWN_DIM for d in dims], dtype=np.int64), dep, unknown
    args = []
    for i in node.input:
        if not i:
            args.append(None)
            continue
        got = fold_partial(ctx, i, depth + 1)
        if got is None:
            return None
        args.append(got)
    vals = [a[0] if a is not None else None for a in args]
    dep = any(a[1] for a in args if a is not None)
    masks = [a[2] if a is not None else None for a in args]
    try:
        out = _eval(node, op, vals, attr)
        if out is None or np.asarray(out).size > MAX_ELEMENTS:
            return None
        mask = _eval_mask(node, op, vals, masks, attr, np.shape(out))
    except Exception:  # anything unexpected: not foldable
        return None
    return np.asarray(out), dep, mask


def _eval_mask(node, op, vals, masks, attr, out_shape):
    """Which output elements depend on an unknown dim: the data op applied to the mask
    for layout ops, any-unknown broadcast for arithmetic."""
    if not any(m is not None and m.any() for m in masks):
        return np.zeros(out_shape, dtype=bool)
    if op in ("Gather", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Slice", "Identity", "Cast", "Concat"):
        if any(m is not None and m.any() for m in masks[1:]) and op != "Concat":
            return np.ones(out_shape, dtype=bool)
        mvals = [m.astype(np.int64) if m is not None else None for m in masks]
        if op != "Concat":
            mvals = [mvals[0]] + list(vals[1:])
        return np.asarray(_eval(node, "Identity" if op == "Cast" else op, mvals, attr)).astype(bool).reshape(out_shape)
    if op in _BINARY or op in ("Div", "Neg"):
        out = np.zeros(out_shape, dtype=bool)
        for m in masks:
            if m is not None:
                out = out | np.broadcast_to(m, out_shape)
        return out
    return np.ones(out_shape, dtype=bool)


def _eval(node, op, vals, attr):
    x = vals[0] if vals else None
    if op in ("Identity", "Cast"):
        if op == "Cast":
            import onnx

            return x.astype(onnx.helper.tensor_dtype_to_np_dtype(attr(node, "to")))
        return x
    if op in _BINARY:
        return _BINARY[op](vals[0], vals[1])
    if op == "Div":
        a, b = vals
        return a // b if a.dtype.kind in "iu" and b.dtype.kind in "iu" else a / b
    if op == "Neg":
        return -x
    if op == "Gather":
        return np.take(x, vals[1], axis=attr(node, "axis", 0))
    if op == "Unsqueeze":
        axes = attr(node, "axes", None) if len(vals) < 2 or vals[1] is None else vals[1].reshape(-1).tolist()
        out = x
        rank = x.ndim + len(axes)
        for a in sorted(a + rank if a < 0 else a for a in axes):
            out = np.expand_dims(out, a)
        return out
    if op == "Squeeze":
        axes = attr(node, "axes", None) if len(vals) < 2 or vals[1] is None else vals[1].reshape(-1).tolist()
        return np.squeeze(x, axis=None if axes is None else tuple(axes))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in vals], axis=attr(node, "axis", 0))
    if op == "Reshape":
        return x.reshape([int(d) if d != 0 else x.shape[k] for k, d in enumerate(vals[1].reshape(-1))])
    if op == "Transpose":
        return np.transpose(x, attr(node, "perm", None))
    if op == "ConstantOfShape":
        value = attr(node, "value", None)
        from onnx import numpy_helper

        fill = numpy_helper.to_array(value).reshape(-1)[0] if value is not None else np.float32(0)
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


__all__ = ["fold", "WeightStore"]
