"""Op rules, one module per op family, registered by op type.

A rule is ``fn(node, ctx)``: it reads its inputs' axis maps from ``ctx``, sets its
outputs' maps, binds constant tensors as members, unifies or blocks spaces, and may add
fixups (attribute/shape-constant edits) and costs. An op with no rule blocks every
channel space it touches.
"""

from __future__ import annotations

from ...registry import OpRegistry

RULES = OpRegistry("rule")
register = RULES.register
rule_for = RULES.rule_for


from . import concat, contrib, conv, elementwise, linear, norm, pooling, shape  # noqa: E402,F401  (registration)
