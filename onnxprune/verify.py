"""Prove a pruned model before it is written: onnx.checker full check, same graph
inputs/outputs (names, dtypes, rank, dynamic dims), and one ONNX Runtime run whose output
shapes match the original's."""

from __future__ import annotations

import onnx

from .errors import VerificationError
from .model import approx_size
from .runtime import random_inputs, session

TWO_GB = 2**31


def _io(vi):
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return vi.name, tt.elem_type, dims


def verify_model(original: onnx.ModelProto, pruned: onnx.ModelProto, input_shapes=None, run: bool = True) -> None:
    init = {t.name for t in original.graph.initializer}
    orig_in = [_io(i) for i in original.graph.input if i.name not in init]
    new_in = [_io(i) for i in pruned.graph.input if i.name not in init]
    if orig_in != new_in or [_io(o) for o in original.graph.output] != [_io(o) for o in pruned.graph.output]:
        raise VerificationError("pruned model's graph inputs/outputs differ from the original's (a bug)")
    try:
        if approx_size(pruned) < TWO_GB:
            onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:  # checker and shape inference raise several types
        first = (str(exc).strip().splitlines() or ["invalid"])[0]
        raise VerificationError(f"pruned model fails onnx.checker (a bug): {first}") from None
    if not run or not _runnable(pruned):
        return
    try:
        feeds = random_inputs(pruned, input_shapes)
        outs_new = session(pruned).run(None, feeds)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["error"])[0]
        raise VerificationError(f"pruned model does not run in ONNX Runtime (a bug): {first[:300]}") from None
    try:
        outs_old = session(original).run(None, feeds)
    except Exception:
        return  # the original does not run either (custom ops...): nothing to compare
    for o, a, b in zip(pruned.graph.output, outs_old, outs_new):
        if a.shape != b.shape:
            raise VerificationError(f"output '{o.name}' has shape {b.shape}, original {a.shape} (a bug)")


def _runnable(model: onnx.ModelProto) -> bool:
    """Only default-domain (and ORT's com.microsoft) models can be run here."""
    domains = {n.domain for n in model.graph.node}
    return domains <= {"", "ai.onnx", "com.microsoft"}
