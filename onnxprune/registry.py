"""A table of handlers by ONNX op type (default domain only), filled by decorators in
the op-family modules that define them: the channel rules and the backward rules."""

from __future__ import annotations

from typing import Callable


class OpRegistry(dict):
    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, *op_types: str):
        def deco(fn: Callable):
            for op in op_types:
                if op in self:
                    raise ValueError(f"duplicate {self.what} for {op}")
                self[op] = fn
            return fn

        return deco

    def rule_for(self, op_type: str, domain: str):
        if domain not in ("", "ai.onnx"):
            return None
        return self.get(op_type)
