"""Backward (vector-Jacobian product) graphs in plain ONNX, run by ONNX Runtime.

:func:`build_backward` appends to a copy of the forward graph the nodes that compute
dL/dt for chosen tensors ``t``, given seeds dL/ds at some tensors ``s`` (the caller builds
its loss head in the graph and names the seed tensors). One ORT run then gives outputs,
activations and gradients together.

- Only nodes on a path from a wrt tensor to a seed are differentiated; integer tensors,
  and constants and initializers not in ``wrt``, carry no gradient. A float initializer in
  ``wrt`` (a weight) is a variable: never folded into a backward constant.
- A tensor read by several nodes gets the sum of their contributions.
- A node without a rule (or whose rule cannot apply: unknown shape, unsupported
  attribute) makes every wrt tensor behind it unavailable, with the reason; so does a
  gradient only partly blocked. Nothing passes silently through an unknown op. An input a
  rule has no gradient for (a BatchNormalization running mean, a Clip bound) is
  unavailable by itself; the node's other inputs still get theirs.
- Rules live in :mod:`.rules`, one module per op family; each is told which inputs need
  a gradient (activations and parameters alike).
- The backward nodes hold shape constants for the given ``shapes``: the returned model's
  graph inputs get those concrete dims (ORT then also keeps more of it in its blocked
  layout), and it runs for that input shape only.
- A gradient output is the backward tensor itself where it can be (no copying Identity).
- Every rule has a formulation at the model's opset (11+) except scatters whose indices
  are only known at run time (Gather/GatherElements with computed indices, embedding
  lookups): they need ScatterND/ScatterElements with ``reduction='add'`` (opset 16). The default-domain opset is then
  raised when every node in the model keeps its definition at the new opset; otherwise
  those gradients are unavailable, with the reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import onnx

from ...errors import BadArgumentError
from .graph import elem_types
from .walk import Walk, finish

__all__ = ["GradModel", "build_backward"]


@dataclass
class GradModel:
    model: onnx.ModelProto  # the forward graph (original outputs kept) plus the backward nodes
    grads: dict[str, str]  # wrt tensor -> graph output holding dL/d(tensor), same shape and type
    unavailable: dict[str, str] = field(default_factory=dict)  # wrt tensor -> one-line reason
    opset: int = 0  # default-domain opset of the returned model


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def build_backward(model: onnx.ModelProto, wrt, seeds: dict[str, str], shapes: dict) -> GradModel:
    """The model (a new ModelProto; ``model`` is not changed) with the gradients of the
    ``wrt`` tensors as extra outputs.

    ``seeds`` maps a tensor to the name of a tensor already in the graph holding dL/d(it);
    ``shapes`` gives the concrete dims of the tensors for the batch shape being run.
    """
    wrt = list(dict.fromkeys(wrt))
    _check_names(model, wrt, seeds)
    opset = default_opset(model)
    types = elem_types(model)
    result, needed = _attempt(model, wrt, seeds, shapes, opset, types)
    if needed > opset and can_raise_opset(model, opset, needed):
        result, _ = _attempt(model, wrt, seeds, shapes, needed, types)
        set_opset(result.model, needed)
    return result


def _attempt(model, wrt, seeds, shapes, opset, types):
    m = copy.deepcopy(model)
    walk = Walk(m, wrt, seeds, shapes, opset, types)
    grads, unavailable = walk.run()
    finish(m, walk, grads)
    return GradModel(m, grads, unavailable, opset), walk.needed_opset


def _check_names(model: onnx.ModelProto, wrt, seeds) -> None:
    g = model.graph
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    for name in list(wrt) + list(seeds) + list(seeds.values()):
        if name not in known:
            raise BadArgumentError(f"autodiff: '{name}' is not a tensor of the graph")


# ---- opset ------------------------------------------------------------------------------


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _all_nodes(sub)


def can_raise_opset(model: onnx.ModelProto, old: int, new: int) -> bool:
    """Every default-domain node has the same definition at ``new`` as at ``old``."""
    if any(o.domain in ("", "ai.onnx") for f in model.functions for o in f.opset_import):
        return False
    for node in _all_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            before = onnx.defs.get_schema(node.op_type, old, "").since_version
            after = onnx.defs.get_schema(node.op_type, new, "").since_version
        except onnx.defs.SchemaError:
            return False
        if before != after:
            return False
    return True


def set_opset(model: onnx.ModelProto, version: int) -> None:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = version
    ir = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", version)])
    model.ir_version = max(model.ir_version, ir)
