"""Arithmetic with numpy broadcasting (gradients summed back to each operand's shape),
simple unary math, pass-through ops."""

from __future__ import annotations

import numpy as np

from ..ops import attr, mask_grad, scale, unbroadcast
from . import NoRule, only, register


def _ub(b, node, g, k):
    """``g`` (shaped like the output) summed back to input ``k``'s shape."""
    return unbroadcast(b, g, b.shape(node.output[0]), b.shape(node.input[k]))


@register("Add", "Sub")
def add_sub(node, b, gy, needs):
    g, out = gy[0], {}
    for k in (0, 1):
        if needs[k]:
            gk = _ub(b, node, g, k)
            out[k] = b.op("Neg", [gk]) if k == 1 and node.op_type == "Sub" else gk
    return out


@register("Sum")
def sum_(node, b, gy, needs):
    return {k: _ub(b, node, gy[0], k) for k, need in enumerate(needs) if need}


@register("Mean")
def mean(node, b, gy, needs):
    g = scale(b, gy[0], 1.0 / len([i for i in node.input if i]))
    return {k: _ub(b, node, g, k) for k, need in enumerate(needs) if need}


@register("Mul")
def mul(node, b, gy, needs):
    x = list(node.input)
    return {k: _ub(b, node, b.op("Mul", [gy[0], x[1 - k]]), k) for k in (0, 1) if needs[k]}


@register("Div")
def div(node, b, gy, needs):
    d = node.input[1]
    g, out = gy[0], {}
    if needs[0]:
        out[0] = _ub(b, node, b.op("Div", [g, d]), 0)
    if needs[1]:  # d(a/d)/dd = -y/d
        t = b.op("Div", [b.op("Mul", [g, node.output[0]]), d])
        out[1] = b.op("Neg", [_ub(b, node, t, 1)])
    return out


@register("Neg")
def neg(node, b, gy, needs):
    return {0: b.op("Neg", [gy[0]])}


@register("Identity", "Dropout")
def identity(node, b, gy, needs):
    only(needs, 0, what="Dropout ratio/mode")
    if node.op_type == "Dropout":
        if len(node.input) > 2 and node.input[2]:
            mode = b.value(node.input[2])
            if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
                raise NoRule("Dropout in training mode")
    return {0: gy[0]}


@register("Cast", "CastLike")
def cast(node, b, gy, needs):
    only(needs, 0, what="CastLike target")
    return {0: b.op("Cast", [gy[0]], to=b.elem(node.input[0]))}


@register("Exp")
def exp(node, b, gy, needs):
    return {0: b.op("Mul", [gy[0], node.output[0]])}


@register("Log")
def log(node, b, gy, needs):
    return {0: b.op("Div", [gy[0], node.input[0]])}


@register("Sqrt")
def sqrt(node, b, gy, needs):
    return {0: scale(b, b.op("Div", [gy[0], node.output[0]]), 0.5)}


@register("Reciprocal")
def reciprocal(node, b, gy, needs):
    y = node.output[0]
    return {0: b.op("Neg", [b.op("Mul", [gy[0], b.op("Mul", [y, y])])])}


@register("Abs")
def abs_(node, b, gy, needs):
    return {0: b.op("Mul", [gy[0], b.op("Sign", [node.input[0]])])}


@register("Sin")
def sin(node, b, gy, needs):
    return {0: b.op("Mul", [gy[0], b.op("Cos", [node.input[0]])])}


@register("Cos")
def cos(node, b, gy, needs):
    return {0: b.op("Neg", [b.op("Mul", [gy[0], b.op("Sin", [node.input[0]])])])}


@register("Pow")
def pow_(node, b, gy, needs):
    x, e = node.input[0], node.input[1]
    g, out = gy[0], {}
    if needs[0]:
        ev = b.value(e)
        if ev is not None and ev.size == 1 and float(ev.reshape(-1)[0]) == 2.0:
            d = scale(b, x, 2.0)
        elif ev is not None:
            d = b.op("Mul", [b.op("Pow", [x, b.const(ev - 1, b.elem(x))]), b.const(ev, b.elem(x))])
        else:
            ex = e if b.elem(e) == b.elem(x) else b.op("Cast", [e], to=b.elem(x))
            d = b.op("Mul", [b.op("Pow", [x, b.op("Sub", [ex, b.scalar(1.0, x)])]), ex])
        out[0] = _ub(b, node, b.op("Mul", [g, d]), 0)
    if needs[1]:  # d(x^e)/de = y * log(x)
        t = b.op("Mul", [g, b.op("Mul", [node.output[0], b.op("Log", [x])])])
        out[1] = _ub(b, node, t, 1)
    return out


@register("Where")
def where(node, b, gy, needs):
    c = node.input[0]
    g, out = gy[0], {}
    zero = b.scalar(0.0, g)
    if needs[1]:
        out[1] = _ub(b, node, b.op("Where", [c, g, zero]), 1)
    if needs[2]:
        out[2] = _ub(b, node, b.op("Where", [c, zero, g]), 2)
    return out


@register("Max", "Min")
def max_min(node, b, gy, needs):
    """The output's gradient goes to the first operand equal to the output."""
    y = node.output[0]
    out, taken = {}, None
    for k, x in enumerate(node.input):
        eq = b.op("Equal", [x, y])
        first = eq if taken is None else b.op("And", [eq, b.op("Not", [taken])])
        if needs[k]:
            out[k] = _ub(b, node, mask_grad(b, first, gy[0]), k)
        taken = eq if taken is None else b.op("Or", [taken, eq])
    return out


@register("CumSum")
def cumsum(node, b, gy, needs):
    only(needs, 0, what="CumSum axis")
    rev = 1 - attr(node, "reverse", 0)
    return {0: b.op("CumSum", [gy[0], node.input[1]], exclusive=attr(node, "exclusive", 0), reverse=rev)}
