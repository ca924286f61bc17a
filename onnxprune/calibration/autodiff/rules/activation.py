"""Activations: dx = g * f'(x), from the input or (cheaper) from the forward output; the
Softmax family along its axis."""

from __future__ import annotations

import math

from ..ops import attr, mask_grad, norm_axis, reduce, scale, unbroadcast
from . import only, register


def _mul(b, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = b.op("Mul", [out, x])
    return out


def _one_minus(b, x):
    return b.op("Sub", [b.scalar(1.0, x), x])


@register("Relu")
def relu(node, b, gy, needs):
    y = node.output[0]
    return {0: mask_grad(b, b.op("Greater", [y, b.scalar(0.0, y)]), gy[0])}


@register("LeakyRelu")
def leaky_relu(node, b, gy, needs):
    x, g = node.input[0], gy[0]
    pos = b.op("Greater", [x, b.scalar(0.0, x)])
    return {0: b.op("Where", [pos, g, scale(b, g, attr(node, "alpha", 0.01))])}


@register("PRelu")
def prelu(node, b, gy, needs):
    x, slope = node.input
    g, out = gy[0], {}
    pos = b.op("Greater", [x, b.scalar(0.0, x)])
    if needs[0]:
        out[0] = b.op("Where", [pos, g, b.op("Mul", [g, slope])])
    if needs[1]:
        t = b.op("Where", [pos, b.scalar(0.0, g), b.op("Mul", [g, x])])
        out[1] = unbroadcast(b, t, b.shape(node.output[0]), b.shape(slope))
    return out


@register("Clip")
def clip(node, b, gy, needs):
    """Passes strictly inside the bounds (as torch's hardtanh), read from the output only:
    the forward Conv+Clip fusion stays intact."""
    only(needs, 0, what="Clip bound")
    y = node.output[0]
    bounds = [node.input[k] if len(node.input) > k and node.input[k] else None for k in (1, 2)]
    if b.opset < 11:  # pragma: no cover - bounds as attributes before opset 11
        bounds = [None if attr(node, k) is None else b.scalar(attr(node, k), y) for k in ("min", "max")]
    tests = [b.op(op, [y, bound]) for op, bound in zip(("Greater", "Less"), bounds) if bound]
    if not tests:
        return {0: gy[0]}
    inside = tests[0] if len(tests) == 1 else b.op("And", tests)
    return {0: mask_grad(b, inside, gy[0])}


@register("ThresholdedRelu")
def thresholded_relu(node, b, gy, needs):
    x = node.input[0]
    return {0: mask_grad(b, b.op("Greater", [x, b.scalar(attr(node, "alpha", 1.0), x)]), gy[0])}


@register("Sigmoid")
def sigmoid(node, b, gy, needs):
    y = node.output[0]
    return {0: _mul(b, gy[0], y, _one_minus(b, y))}


@register("Tanh")
def tanh(node, b, gy, needs):
    y = node.output[0]
    return {0: b.op("Mul", [gy[0], _one_minus(b, b.op("Mul", [y, y]))])}


@register("HardSigmoid")
def hard_sigmoid(node, b, gy, needs):
    y = node.output[0]
    inside = b.op("And", [b.op("Greater", [y, b.scalar(0.0, y)]), b.op("Less", [y, b.scalar(1.0, y)])])
    return {0: mask_grad(b, inside, scale(b, gy[0], attr(node, "alpha", 0.2)))}


@register("HardSwish")
def hard_swish(node, b, gy, needs):
    """y = x * clip(x/6 + 1/2, 0, 1): 0 below -3, 1 above 3, x/3 + 1/2 between."""
    x = node.input[0]
    ramp = b.op("Add", [scale(b, x, 1.0 / 3.0), b.scalar(0.5, x)])
    d = b.op("Where", [b.op("Greater", [x, b.scalar(3.0, x)]), b.scalar(1.0, x), ramp])
    d = b.op("Where", [b.op("Less", [x, b.scalar(-3.0, x)]), b.scalar(0.0, x), d])
    return {0: b.op("Mul", [gy[0], d])}


@register("Erf")
def erf(node, b, gy, needs):
    x = node.input[0]
    e = b.op("Exp", [b.op("Mul", [x, b.op("Neg", [x])])])
    return {0: _mul(b, gy[0], e, b.scalar(2.0 / math.sqrt(math.pi), x))}


def gelu_derivative(b, x: str, tanh: bool) -> str:
    """d gelu(x) / dx, exact (erf) or with the tanh approximation."""
    s = lambda v: b.scalar(v, x)  # noqa: E731
    if tanh:
        # y = x/2 (1 + tanh(u)), u = c (x + k x^3): y' = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3k x^2)
        c, k = math.sqrt(2.0 / math.pi), 0.044715
        x2 = b.op("Mul", [x, x])
        u = _mul(b, x, b.op("Add", [s(1.0), b.op("Mul", [x2, s(k)])]), s(c))
        t = b.op("Tanh", [u])
        du = b.op("Mul", [b.op("Add", [s(1.0), b.op("Mul", [x2, s(3 * k)])]), s(0.5 * c)])
        return b.op("Add", [_mul(b, b.op("Add", [t, s(1.0)]), s(0.5)), _mul(b, x, _one_minus(b, b.op("Mul", [t, t])), du)])
    # y' = Phi(x) + x phi(x)
    cdf = _mul(b, b.op("Add", [b.op("Erf", [b.op("Mul", [x, s(1.0 / math.sqrt(2.0))])]), s(1.0)]), s(0.5))
    pdf = _mul(b, b.op("Exp", [_mul(b, x, x, s(-0.5))]), s(1.0 / math.sqrt(2.0 * math.pi)))
    return b.op("Add", [cdf, b.op("Mul", [x, pdf])])


@register("Gelu")
def gelu(node, b, gy, needs):
    d = gelu_derivative(b, node.input[0], attr(node, "approximate", "none") == "tanh")
    return {0: b.op("Mul", [gy[0], d])}


@register("Softplus")
def softplus(node, b, gy, needs):
    return {0: b.op("Mul", [gy[0], b.op("Sigmoid", [node.input[0]])])}


@register("Softsign")
def softsign(node, b, gy, needs):
    x = node.input[0]
    den = b.op("Add", [b.op("Abs", [x]), b.scalar(1.0, x)])
    return {0: b.op("Div", [gy[0], b.op("Mul", [den, den])])}


@register("Elu", "Selu", "Celu")
def elu_family(node, b, gy, needs):
    """Below zero the derivative follows from y: Elu y + a, Selu y + g*a, Celu y/a + 1."""
    x, y = node.input[0], node.output[0]
    a = attr(node, "alpha", {"Elu": 1.0, "Selu": 1.67326319217681884765625, "Celu": 1.0}[node.op_type])
    gamma = attr(node, "gamma", 1.05070102214813232421875) if node.op_type == "Selu" else 1.0
    if node.op_type == "Celu":
        neg = b.op("Add", [scale(b, y, 1.0 / a), b.scalar(1.0, y)])
    else:
        neg = b.op("Add", [y, b.scalar(a * gamma, y)])
    d = b.op("Where", [b.op("Greater", [x, b.scalar(0.0, x)]), b.scalar(gamma, x), neg])
    return {0: b.op("Mul", [gy[0], d])}


@register("Mish")
def mish(node, b, gy, needs):
    """y = x tanh(softplus(x)): y' = t + x sigmoid(x) (1 - t^2)."""
    x = node.input[0]
    t = b.op("Tanh", [b.op("Softplus", [x])])
    d = b.op("Add", [t, _mul(b, x, b.op("Sigmoid", [x]), _one_minus(b, b.op("Mul", [t, t])))])
    return {0: b.op("Mul", [gy[0], d])}


def _softmax_axes(node, b):
    r = b.rank(node.input[0])
    if b.opset >= 13:
        return [norm_axis(attr(node, "axis", -1), r)]
    return list(range(norm_axis(attr(node, "axis", 1), r), r))  # coerced to 2-D before opset 13


@register("Softmax")
def softmax(node, b, gy, needs):
    """dx = y * (g - sum(g * y))."""
    y, g = node.output[0], gy[0]
    s = reduce(b, "ReduceSum", b.op("Mul", [g, y]), _softmax_axes(node, b))
    return {0: b.op("Mul", [y, b.op("Sub", [g, s])])}


@register("LogSoftmax")
def log_softmax(node, b, gy, needs):
    """dx = g - exp(y) * sum(g)."""
    y, g = node.output[0], gy[0]
    s = reduce(b, "ReduceSum", g, _softmax_axes(node, b))
    return {0: b.op("Sub", [g, b.op("Mul", [b.op("Exp", [y]), s])])}
