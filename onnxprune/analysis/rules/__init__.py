"""Op rules, one module per op family, registered by op type.

A rule is ``fn(node, ctx)``: it reads its inputs' axis maps from ``ctx``, sets its
outputs' maps, binds constant tensors as members, unifies or blocks spaces, and may add
fixups (attribute/shape-constant edits) and costs. An op with no rule blocks every
channel space it touches.
"""

from __future__ import annotations

from typing import Callable

RULES: dict[str, Callable] = {}


def register(*op_types: str):
    def deco(fn):
        for op in op_types:
            if op in RULES:
                raise ValueError(f"duplicate rule for {op}")
            RULES[op] = fn
        return fn

    return deco


def rule_for(op_type: str, domain: str):
    if domain not in ("", "ai.onnx"):
        return None
    return RULES.get(op_type)


from . import concat, conv, elementwise, linear, norm, pooling, shape  # noqa: E402,F401  (registration)
