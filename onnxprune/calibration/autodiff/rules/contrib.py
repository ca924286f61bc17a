"""ONNX Runtime's fused transformer ops (domain ``com.microsoft``), as its transformer
optimizer writes them. The backward graph uses default-domain ops only.

* ``Gelu`` (exact), ``FastGelu`` (tanh approximation, optional bias), ``BiasGelu`` (exact,
  with bias): dx = g * gelu'(x + bias), d bias = the same summed over the leading axes.
* ``QuickGelu``: y = x * sigmoid(alpha x): y' = s + alpha x s (1 - s).
* ``SkipLayerNormalization``: s = input + skip (+ bias), y = LayerNorm(s) * gamma (+ beta)
  over the last axis; its fourth output is s itself, so its gradient adds to dL/ds.
  ``SkipSimplifiedLayerNormalization`` is the RMS form: y = s / sqrt(mean(s²) + eps) * gamma.
  The mean and inv-std outputs must not need a gradient.

``Attention`` and ``MultiHeadAttention`` have their rules in :mod:`.attention`.
"""

from __future__ import annotations

from ..ops import attr, reduce, unbroadcast
from . import NoRule, register
from .activation import gelu_derivative
from .norm import _normalized, normalized_grad

MS = "com.microsoft"


def _input(node, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _biased(node, b, bias: str) -> str:
    """x + bias (the pre-activation), or x."""
    return b.op("Add", [node.input[0], bias]) if bias else node.input[0]


def _bias_activation(node, b, gy, needs, d) -> dict:
    """dx = g * d; d bias = g * d summed to the bias's shape."""
    gx = b.op("Mul", [gy[0], d])
    out = {}
    if needs[0]:
        out[0] = gx
    if len(needs) > 1 and needs[1]:
        out[1] = unbroadcast(b, gx, b.shape(node.output[0]), b.shape(node.input[1]), hint="dbias")
    return out


@register(f"{MS}:Gelu")
def ms_gelu(node, b, gy, needs):
    return _bias_activation(node, b, gy, needs, gelu_derivative(b, node.input[0], tanh=False))


@register(f"{MS}:BiasGelu")
def bias_gelu(node, b, gy, needs):
    return _bias_activation(node, b, gy, needs, gelu_derivative(b, _biased(node, b, _input(node, 1)), tanh=False))


@register(f"{MS}:FastGelu")
def fast_gelu(node, b, gy, needs):
    return _bias_activation(node, b, gy, needs, gelu_derivative(b, _biased(node, b, _input(node, 1)), tanh=True))


@register(f"{MS}:QuickGelu")
def quick_gelu(node, b, gy, needs):
    x = node.input[0]
    alpha = attr(node, "alpha", 1.702)
    sig = b.op("Sigmoid", [b.op("Mul", [x, b.scalar(alpha, x)])])
    one_minus = b.op("Sub", [b.scalar(1.0, sig), sig])
    d = b.op("Add", [sig, b.op("Mul", [b.op("Mul", [x, b.scalar(alpha, x)]), b.op("Mul", [sig, one_minus])])])
    return {0: b.op("Mul", [gy[0], d])}


def _rms_grad(b, s: str, g: str, eps: float, gamma: str, axes: list[int]):
    """(dL/ds, xhat) of y = s * inv * gamma, inv = 1 / sqrt(mean(s²) + eps) over the last axis:
    ds = inv * (g' - xhat * mean(g' * xhat)), g' = g * gamma."""
    ms = reduce(b, "ReduceMean", b.op("Mul", [s, s]), axes, keepdims=True, hint="ms")
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [ms, b.scalar(eps, s)])])], hint="inv")
    xhat = b.op("Mul", [s, inv], hint="xhat")
    gs = b.op("Mul", [g, gamma])
    m = reduce(b, "ReduceMean", b.op("Mul", [gs, xhat]), axes, keepdims=True, hint="m2")
    return b.op("Mul", [b.op("Sub", [gs, b.op("Mul", [xhat, m])]), inv], hint="drms"), xhat


@register(f"{MS}:SkipLayerNormalization", f"{MS}:SkipSimplifiedLayerNormalization")
def skip_layer_norm(node, b, gy, needs):
    simplified = node.op_type == "SkipSimplifiedLayerNormalization"
    if any(g is not None for g in gy[1:3]):
        raise NoRule("gradient through the mean/inv-std outputs")
    x, skip, gamma = node.input[0], node.input[1], node.input[2]
    beta = "" if simplified else _input(node, 3)
    bias = _input(node, 3 if simplified else 4)
    eps = attr(node, "epsilon", 1e-12 if not simplified else 1e-6)
    s = b.op("Add", [x, skip], hint="skipsum")
    if bias:
        s = b.op("Add", [s, bias], hint="skipsum")
    axes = [len(b.shape(x)) - 1]
    g = gy[0]
    out = {}
    xhat = None
    ds = None
    if g is not None:
        if simplified:
            ds, xhat = _rms_grad(b, s, g, eps, gamma, axes)
        else:
            stats = _normalized(b, s, axes, eps)
            xhat = stats[0]
            ds = normalized_grad(b, s, g, axes, eps, gamma, stats)
    g_sum = gy[3] if len(gy) > 3 else None
    if g_sum is not None:
        ds = g_sum if ds is None else b.op("Add", [ds, g_sum])
    ys = b.shape(x)
    index = {0: x, 1: skip, 2: gamma, 3 if simplified else 4: bias}
    if not simplified:
        index[3] = beta
    for i, name in index.items():
        if i >= len(needs) or not needs[i] or not name:
            continue
        if i in (0, 1) or name == bias:
            out[i] = None if ds is None else unbroadcast(b, ds, ys, b.shape(name), hint="dskip")
        elif name == gamma:
            out[i] = None if g is None else unbroadcast(b, b.op("Mul", [g, xhat]), ys, b.shape(name), hint="dgamma")
        else:  # beta
            out[i] = None if g is None else unbroadcast(b, g, ys, b.shape(name), hint="dbeta")
    return out
