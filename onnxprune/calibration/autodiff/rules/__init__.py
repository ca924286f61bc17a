"""Backward (vector-Jacobian product) rules, one module per op family, registered by op type.

A rule is ``fn(node, b, gy, needs) -> {input index: gradient name or None}``:

- ``node``: the forward NodeProto;
- ``b``: the :class:`~..graph.Builder` that emits backward nodes and knows shapes, dtypes,
  constant values and the opset;
- ``gy``: per output, the name of dL/d(output), or None where that output reaches no seed
  (its gradient is zero);
- ``needs``: per input, whether dL/d(input) is wanted: activations (importance criteria)
  and parameters (a finetuning loop asks for float initializers or graph inputs: weights,
  biases, norm scales, embedding tables). Rules give weight gradients for Conv,
  ConvTranspose, Gemm, MatMul, Einsum, Batch/Instance/LayerNormalization, PRelu, the
  broadcasting arithmetic and Gather tables. Inputs without one (BatchNormalization
  running statistics, Clip bounds, shape inputs) are named by :class:`NoGradient`.

The result has an entry for every needed input (None: the gradient is zero). A rule that
cannot apply (unknown shape, unsupported attribute) raises :class:`NoRule`; every
gradient that would pass through the node is then unavailable, with the reason. One that
has no gradient for some inputs only raises :class:`NoGradient` naming them (``only``
does): those are unavailable and the rule runs again without them.
"""

from __future__ import annotations

from ....registry import OpRegistry

RULES = OpRegistry("backward rule")

# Float-valued outputs whose derivative is zero almost everywhere: no gradient flows
# through them, and they block nothing.
NON_DIFFERENTIABLE = frozenset({
    "Floor", "Ceil", "Round", "Sign", "EyeLike", "RandomNormalLike", "RandomUniformLike", "Bernoulli",
    "Multinomial", "Shape", "Size", "ConstantOfShape",
})


class NoRule(Exception):
    """The rule cannot produce this node's input gradient; the message says why."""


class NoGradient(NoRule):
    """No gradient for the inputs ``indices`` (a BatchNormalization running mean, a Clip
    bound, a shape): only they are unavailable; the node's other inputs still get theirs."""

    def __init__(self, indices, reason: str):
        super().__init__(reason)
        self.indices = list(indices)


class NeedsOpset(NoRule):
    """The formulation needs a newer default-domain opset than the model has."""

    def __init__(self, version: int, reason: str):
        super().__init__(f"{reason} (needs opset {version})")
        self.version = version


register = RULES.register
rule_for = RULES.rule_for


def only(needs, *supported: int, what: str = "this input") -> None:
    """Raise NoGradient when inputs outside ``supported`` need a gradient."""
    bad = [i for i, need in enumerate(needs) if need and i not in supported]
    if bad:
        raise NoGradient(bad, f"no gradient w.r.t. input {bad[0]} ({what})")


from . import activation, attention, contrib, conv, elementwise, linear, norm, pooling, reduce, shape, slicing  # noqa: E402,F401
