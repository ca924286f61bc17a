"""Feature-distillation points: residual sums (an Add of two activations of one shape),
the tensors that carry a network's state from block to block. A point whose channels
were pruned is compared on the dense channels the student kept (``kept`` from the plan)."""

from __future__ import annotations

import onnx

from .graph import Term


def residual_sums(model: onnx.ModelProto, shapes: dict) -> list[str]:
    consts = {t.name for t in model.graph.initializer}
    producers = {o for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type != "Add" or n.domain not in ("", "ai.onnx") or len(n.input) != 2:
            continue
        a, b = n.input
        if a in consts or b in consts or a not in producers or b not in producers:
            continue
        sa, sb = shapes.get(a), shapes.get(b)
        if sa is None or sa != sb or len(sa) < 2:
            continue
        out.append(n.output[0])
    return out


def feature_terms(student: onnx.ModelProto, shapes: dict, dense_shapes: dict, kept: dict):
    """([Term], [skipped reasons])."""
    terms, skipped = [], []
    for name in residual_sums(student, shapes):
        s, d = shapes.get(name), dense_shapes.get(name)
        if d is None:
            skipped.append(f"'{name}': not in the dense model")
            continue
        if s == d:
            terms.append(Term(name, "mse", name))
            continue
        k = kept.get(name)
        if k is None or len(s) != len(d):
            skipped.append(f"'{name}': pruned and no plan says which channels it kept")
            continue
        axis, pos = k
        if s[axis] != len(pos) or any(x != y for i, (x, y) in enumerate(zip(s, d)) if i != axis):
            skipped.append(f"'{name}': the plan's kept channels do not match its shape")
            continue
        terms.append(Term(name, "mse", name, kept=(axis, pos)))
    return terms, skipped


def kept_tensors(analysis, plan) -> dict:
    """{tensor: (axis, kept positions)} for every tensor whose channel axis the plan cuts
    (one axis only; call before surgery consumes the analysis)."""
    from ..analysis.spaces import kept_positions, map_length
    from ..recover.targets import kept_of_factory

    kept_of = kept_of_factory(analysis, plan)
    out = {}
    for tensor, axes in analysis.ctx.axes.items():
        cut = []
        for axis, amap in axes.items():
            pos = kept_positions(amap, kept_of)
            if len(pos) < map_length(amap):
                cut.append((axis, pos))
        if len(cut) == 1:
            out[tensor] = cut[0]
    return out
