"""Normalizations. BatchNormalization in inference mode is a per-channel affine map;
Instance/LayerNormalization normalize with statistics of the input itself:
dx = inv * (g' - mean(g') - xhat * mean(g' * xhat)) with g' = g * scale."""

from __future__ import annotations

from ..ops import attr, norm_axis, reduce, reshape
from . import NoRule, only, register


def _stats_outputs_unused(gy) -> None:
    if any(g is not None for g in gy[1:]):
        raise NoRule("gradient through the statistics outputs")


@register("BatchNormalization")
def batch_norm(node, b, gy, needs):
    """Inference mode: y = (x - mean) / sqrt(var + eps) * scale + B."""
    only(needs, 0, what="BatchNormalization parameters")
    _stats_outputs_unused(gy)
    training = attr(node, "training_mode", 0) if b.opset >= 14 else int(len([o for o in node.output if o]) > 1)
    if training:
        raise NoRule("training mode")
    x, sc, var = node.input[0], node.input[1], node.input[4]
    r = b.rank(x)
    inv = b.op("Sqrt", [b.op("Add", [var, b.scalar(attr(node, "epsilon", 1e-5), var)])])
    factor = b.op("Div", [sc, inv], hint="bnf")
    if r > 2:
        factor = reshape(b, factor, [b.shape(sc)[0]] + [1] * (r - 2), hint="bnf")
    return {0: b.op("Mul", [gy[0], factor])}


def normalized_grad(b, x: str, g: str, axes: list[int], eps: float, gamma: str | None) -> str:
    """dL/dx of y = (x - mean(x)) / sqrt(var(x) + eps) * gamma (+ beta), statistics over ``axes``."""
    def mean(t, hint):
        return reduce(b, "ReduceMean", t, axes, keepdims=True, hint=hint)

    xc = b.op("Sub", [x, mean(x, "mu")], hint="xc")
    var = mean(b.op("Mul", [xc, xc]), "var")
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.scalar(eps, x)])])], hint="inv")
    xhat = b.op("Mul", [xc, inv], hint="xhat")
    gs = g if gamma is None else b.op("Mul", [g, gamma])
    m1, m2 = mean(gs, "m1"), mean(b.op("Mul", [gs, xhat]), "m2")
    inner = b.op("Sub", [b.op("Sub", [gs, m1]), b.op("Mul", [xhat, m2])])
    return b.op("Mul", [inner, inv], hint="dnorm")


@register("InstanceNormalization")
def instance_norm(node, b, gy, needs):
    only(needs, 0, what="InstanceNormalization parameters")
    x, sc = node.input[0], node.input[1]
    r = b.rank(x)
    gamma = reshape(b, sc, [b.shape(sc)[0]] + [1] * (r - 2), hint="gamma")
    return {0: normalized_grad(b, x, gy[0], list(range(2, r)), attr(node, "epsilon", 1e-5), gamma)}


@register("LayerNormalization")
def layer_norm(node, b, gy, needs):
    only(needs, 0, what="LayerNormalization parameters")
    _stats_outputs_unused(gy)
    x = node.input[0]
    r = b.rank(x)
    axes = list(range(norm_axis(attr(node, "axis", -1), r), r))
    return {0: normalized_grad(b, x, gy[0], axes, attr(node, "epsilon", 1e-5), node.input[1])}
