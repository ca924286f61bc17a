"""Small opset-aware emitters shared by the rules (axes as attribute or input, etc.)."""

from __future__ import annotations

import numpy as np


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def reduce(b, op: str, x: str, axes, keepdims: bool = True, hint: str = "red") -> str:
    """ReduceSum/ReduceMean/... over ``axes`` (axes as input from opset 13 for ReduceSum,
    18 for the others)."""
    axes = [int(a) for a in axes]
    as_input = b.opset >= (13 if op == "ReduceSum" else 18)
    if as_input:
        return b.op(op, [x, b.ints(axes)], hint=hint, keepdims=int(keepdims))
    return b.op(op, [x], hint=hint, axes=axes, keepdims=int(keepdims))


def reshape(b, x: str, shape, hint: str = "rs") -> str:
    return b.op("Reshape", [x, b.ints(shape)], hint=hint)


def unbroadcast(b, g: str, gshape: list[int], xshape: list[int], hint: str = "ub") -> str:
    """Sum ``g`` (of shape ``gshape``) over the axes numpy broadcasting stretched ``xshape`` along."""
    if list(gshape) == list(xshape):
        return g
    lead = len(gshape) - len(xshape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(xshape) if d == 1 and gshape[lead + i] != 1]
    if axes:
        g = reduce(b, "ReduceSum", g, axes, keepdims=True, hint=hint)
    if lead or not axes:
        g = reshape(b, g, xshape, hint=hint)
    return g


def broadcast_shape(*shapes) -> list[int]:
    return list(np.broadcast_shapes(*[tuple(s) for s in shapes]))


def split(b, x: str, sizes: list[int], axis: int, hint: str = "sp") -> list[str]:
    if len(sizes) == 1:
        return [x]
    if b.opset >= 13:
        return b.op("Split", [x, b.ints(sizes)], hint=hint, n_out=len(sizes), axis=axis)
    return b.op("Split", [x], hint=hint, n_out=len(sizes), axis=axis, split=list(sizes))


def slice_(b, x: str, starts, ends, axes, steps=None, hint: str = "sl") -> str:
    inputs = [x, b.ints(starts), b.ints(ends), b.ints(axes)]
    if steps is not None:
        inputs.append(b.ints(steps))
    return b.op("Slice", inputs, hint=hint)


def pad(b, x: str, begins: list[int], ends: list[int], hint: str = "pad") -> str:
    """Zero padding (negative amounts crop), over every axis."""
    if not any(begins) and not any(ends):
        return x
    return b.op("Pad", [x, b.ints(list(begins) + list(ends))], hint=hint, mode="constant")


def transpose(b, x: str, perm, hint: str = "tr") -> str:
    perm = [int(p) for p in perm]
    if perm == sorted(perm):
        return x
    return b.op("Transpose", [x], hint=hint, perm=perm)


def mask_grad(b, cond: str, g: str, hint: str = "m") -> str:
    """``g`` where ``cond``, zero elsewhere (a multiply by the cast mask: ORT runs it about
    twice as fast as Where)."""
    return b.op("Mul", [g, b.op("Cast", [cond], hint="mask", to=b.elem(g))], hint=hint)


def mul(b, x: str, y: str, hint: str = "mul") -> str:
    return b.op("Mul", [x, y], hint=hint)


def scale(b, x: str, factor: float, hint: str = "sc") -> str:
    if factor == 1.0:
        return x
    if factor == -1.0:
        return b.op("Neg", [x], hint=hint)
    return b.op("Mul", [x, b.scalar(factor, x)], hint=hint)


def inverse_perm(perm) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv
