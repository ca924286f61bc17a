"""A table of handlers by ONNX op type, filled by decorators in the op-family modules
that define them: the channel rules and the backward rules. Ops of the default domain are
registered by their type; ops of another domain as ``"domain:Type"`` (ONNX Runtime's
``"com.microsoft:Attention"``)."""

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
            return self.get(f"{domain}:{op_type}")
        return self.get(op_type)
