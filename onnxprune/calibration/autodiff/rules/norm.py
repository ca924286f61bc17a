"""Normalizations. BatchNormalization in inference mode is a per-channel affine map;
Instance/LayerNormalization normalize with statistics of the input itself:
dx = inv * (g' - mean(g') - xhat * mean(g' * xhat)) with g' = g * scale. The parameter
gradients: d scale = sum(g * xhat), d bias = sum(g) over the axes the parameter is
broadcast along."""

from __future__ import annotations

from ..ops import attr, norm_axis, reduce, reshape, unbroadcast
from . import NoRule, only, register


def _stats_outputs_unused(gy) -> None:
    if any(g is not None for g in gy[1:]):
        raise NoRule("gradient through the statistics outputs")


@register("BatchNormalization")
def batch_norm(node, b, gy, needs):
    """Inference mode: y = (x - mean) / sqrt(var + eps) * scale + B.
    d scale = (sum(g x) - mean * sum(g)) / sqrt(var + eps), d B = sum(g), summed over all
    axes but 1; the running mean and var have no gradient here (NoGradient)."""
    only(needs, 0, 1, 2, what="BatchNormalization running mean/var: statistics, not trained parameters")
    _stats_outputs_unused(gy)
    training = attr(node, "training_mode", 0) if b.opset >= 14 else int(len([o for o in node.output if o]) > 1)
    if training:
        raise NoRule("training mode")
    x, sc, mean, var = node.input[0], node.input[1], node.input[3], node.input[4]
    g, out = gy[0], {}
    r = b.rank(x)
    c = b.shape(sc)[0]
    std = b.op("Sqrt", [b.op("Add", [var, b.scalar(attr(node, "epsilon", 1e-5), var)])])
    if needs[0]:
        factor = b.op("Div", [sc, std], hint="bnf")
        if r > 2:
            factor = reshape(b, factor, [c] + [1] * (r - 2), hint="bnf")
        out[0] = b.op("Mul", [g, factor])
    axes = [0] + list(range(2, r))
    gsum = reduce(b, "ReduceSum", g, axes, keepdims=False, hint="dbnB") if needs[1] or needs[2] else None
    if needs[1]:
        gx = reduce(b, "ReduceSum", b.op("Mul", [g, x]), axes, keepdims=False, hint="bngx")
        centred = b.op("Sub", [gx, b.op("Mul", [mean, gsum])], hint="bngxc")
        out[1] = b.op("Div", [centred, std], hint="dbnscale")
    if needs[2]:
        out[2] = gsum
    return out


def _normalized(b, x: str, axes: list[int], eps: float):
    """(xhat, 1 / sqrt(var + eps)), statistics over ``axes``."""
    def mean(t, hint):
        return reduce(b, "ReduceMean", t, axes, keepdims=True, hint=hint)

    xc = b.op("Sub", [x, mean(x, "mu")], hint="xc")
    var = mean(b.op("Mul", [xc, xc]), "var")
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, b.scalar(eps, x)])])], hint="inv")
    return b.op("Mul", [xc, inv], hint="xhat"), inv


def normalized_grad(b, x: str, g: str, axes: list[int], eps: float, gamma: str | None, stats=None) -> str:
    """dL/dx of y = (x - mean(x)) / sqrt(var(x) + eps) * gamma (+ beta), statistics over
    ``axes``; ``stats``: (xhat, inv) when already at hand."""
    def mean(t, hint):
        return reduce(b, "ReduceMean", t, axes, keepdims=True, hint=hint)

    xhat, inv = stats or _normalized(b, x, axes, eps)
    gs = g if gamma is None else b.op("Mul", [g, gamma])
    m1, m2 = mean(gs, "m1"), mean(b.op("Mul", [gs, xhat]), "m2")
    inner = b.op("Sub", [b.op("Sub", [gs, m1]), b.op("Mul", [xhat, m2])])
    return b.op("Mul", [inner, inv], hint="dnorm")


def _affine_grads(b, g, xhat, needs, shaped) -> dict:
    """d scale (input 1) and d bias (input 2) of y = xhat * scale + bias; ``shaped(k, t)``
    sums ``t`` (shaped like y) back to input k's shape."""
    out = {}
    if needs[1]:
        out[1] = shaped(1, b.op("Mul", [g, xhat], hint="gxhat"))
    if len(needs) > 2 and needs[2]:
        out[2] = shaped(2, g)
    return out


@register("InstanceNormalization")
def instance_norm(node, b, gy, needs):
    x, sc = node.input[0], node.input[1]
    r = b.rank(x)
    eps = attr(node, "epsilon", 1e-5)
    stats = _normalized(b, x, list(range(2, r)), eps)
    out = {}
    if needs[0]:
        gamma = reshape(b, sc, [b.shape(sc)[0]] + [1] * (r - 2), hint="gamma")
        out[0] = normalized_grad(b, x, gy[0], list(range(2, r)), eps, gamma, stats)

    def per_channel(k, t):
        return reduce(b, "ReduceSum", t, [0] + list(range(2, r)), keepdims=False, hint="dinorm")

    out.update(_affine_grads(b, gy[0], stats[0], needs, per_channel))
    return out


@register("LayerNormalization")
def layer_norm(node, b, gy, needs):
    _stats_outputs_unused(gy)
    x = node.input[0]
    xs = b.shape(x)
    axes = list(range(norm_axis(attr(node, "axis", -1), len(xs)), len(xs)))
    eps = attr(node, "epsilon", 1e-5)
    stats = _normalized(b, x, axes, eps)
    out = {}
    if needs[0]:
        out[0] = normalized_grad(b, x, gy[0], axes, eps, node.input[1], stats)

    def unbroad(k, t):
        return unbroadcast(b, t, xs, b.shape(node.input[k]), hint="dlnorm")

    out.update(_affine_grads(b, gy[0], stats[0], needs, unbroad))
    return out
