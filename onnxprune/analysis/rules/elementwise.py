"""Elementwise ops: unary activations pass channels through; n-ary ops with numpy
broadcasting unify the channel maps of their operands, and constant operands that span a
channel axis become members sliced with it."""

from __future__ import annotations

import onnx

from ..context import BIAS, CONST
from . import register

UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "Erf", "Tanh", "Sigmoid", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Exp", "Log", "Abs", "Neg", "Sqrt",
    "Reciprocal", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Not", "IsNaN", "IsInf", "Identity", "Cast",
    "CastLike", "Clip", "Dropout", "Shrink", "BitwiseNot",
)
BROADCAST = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Mod", "PRelu", "Where", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
)


@register(*UNARY)
def unary(node: onnx.NodeProto, ctx) -> None:
    """Same channels out as in (Clip's min/max, Dropout's ratio are scalars)."""
    for out in node.output:
        if out:
            for axis, amap in ctx.tracked(node.input[0]).items():
                ctx.set_amap(out, axis, amap)


def _operands(node: onnx.NodeProto) -> list[str]:
    if node.op_type == "CastLike":
        return [node.input[0]]
    return [n for n in node.input if n]


@register(*BROADCAST)
def broadcast(node: onnx.NodeProto, ctx) -> None:
    y = node.output[0]
    ry = ctx.rank(y)
    operands = _operands(node)
    ranks = [ctx.rank(n) for n in operands]
    if ry is None or any(r is None for r in ranks):
        ctx.block_inputs(node, f"{node.op_type} '{node.name}': operand ranks unknown")
        return
    for out_axis in range(ry):
        located = [(n, out_axis - (ry - r)) for n, r in zip(operands, ranks)]
        maps = [ctx.amap(n, ax) for n, ax in located if ax >= 0]
        tracked = [m for m in maps if m is not None]
        if not tracked:
            if out_axis == ry - 1 and getattr(ctx.options, "head_mode", "heads") == "dims":
                _constant_channels(node, ctx, located, y, out_axis)
            continue
        amap = tracked[0]
        for other in tracked[1:]:
            ctx.table.unify(amap, other, f"{node.op_type} '{node.name}'")
        for n, ax in located:
            if ax < 0 or ctx.amap(n, ax) is not None:
                continue
            d = ctx.dim(n, ax)
            if d == 1:
                continue
            if d is None:
                ctx.block(amap, node, f"size of axis {ax} of '{n}' unknown")
                continue
            ctx.bind(node, n, ax, amap, CONST)
        ctx.set_amap(y, out_axis, amap)


def _constant_channels(node, ctx, located, y: str, out_axis: int) -> None:
    """``head_mode="dims"``: a float constant vector broadcast against size-1 axes (rotary
    embeddings' ``positions * inv_freq``) makes a space of its own on the last axis, the
    constant its member; it meets the head dims where the cos/sin tables multiply Q and K,
    so the frequencies are sliced with the rotary pairs they drive."""
    consts = [(n, ax) for n, ax in located if ax >= 0 and ctx.dim(n, ax) not in (1, None)]
    if len(consts) != 1 or any(ax >= 0 and ctx.dim(n, ax) is None for n, ax in located):
        return
    name, ax = consts[0]
    src = ctx.const_source(name)
    if src is None or ctx.store.get(src[0]).dtype.kind != "f":
        return
    amap = ctx.new_space(node, y, out_axis, ctx.dim(name, ax))
    if amap is not None and ctx.bind(node, name, ax, amap, CONST):
        ctx.set_amap(y, out_axis, amap)


def bind_broadcast(node: onnx.NodeProto, ctx, operand: str, y: str, role: str = BIAS) -> None:
    """Bind an operand broadcast onto ``y`` (a Gemm's C) to ``y``'s channel axes."""
    r, ry = ctx.rank(operand), ctx.rank(y)
    if r is None or ry is None:
        for amap in ctx.tracked(y).values():
            ctx.block(amap, node, f"rank of '{operand}' unknown")
        return
    for out_axis, amap in list(ctx.tracked(y).items()):
        ax = out_axis - (ry - r)
        if ax < 0 or ctx.dim(operand, ax) == 1:
            continue
        ctx.bind(node, operand, ax, amap, role)
