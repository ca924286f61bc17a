"""Private shape targets: one Concat-built shape vector per reader.

The torch.export-based exporter shares one ``Concat(Shape.., Shape.., [64])`` among every
Reshape with the same target (the FFN views of all layers). A rule rewrites the constant
entry of its own target (``SetConstElement``); when the target is shared, pruning one
layer would resize another's. Like ``weights.untie_shared_constants`` does for constants,
the Concat is cloned for each extra reader so that every rewrite stays local. Clones sit
right after the original (same inputs, so topological order holds); their constant inputs
are untied afterwards like any other constant.
"""

from __future__ import annotations

import onnx

from ..weights import UNTIED_SUFFIX

# (op type, input index) reading a shape vector that a rule may rewrite
SHAPE_INPUTS = {("Reshape", 1), ("Expand", 1)}


def untie_shape_targets(model: onnx.ModelProto) -> int:
    """Clone every Concat whose output is the shape input of several readers; returns
    how many clones were made."""
    graph = model.graph
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name:
                readers.setdefault(name, []).append((node, slot))
    pinned = {o.name for o in graph.output}
    taken = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer} | \
        {i.name for i in graph.input}
    names = {n.name for n in graph.node}
    inserts: list[tuple[int, onnx.NodeProto]] = []
    for pos, node in enumerate(graph.node):
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            continue
        out = node.output[0]
        uses = readers.get(out, [])
        if out in pinned or len(uses) < 2:
            continue
        if not all((r.op_type, slot) in SHAPE_INPUTS and r.domain in ("", "ai.onnx") for r, slot in uses):
            continue
        for k, (reader, slot) in enumerate(uses[1:], start=1):
            new = f"{out}{UNTIED_SUFFIX}{k}"
            while new in taken:
                new += "_"
            taken.add(new)
            clone = onnx.NodeProto()
            clone.CopyFrom(node)
            name = f"{node.name}{UNTIED_SUFFIX}{k}"
            while name in names:
                name += "_"
            names.add(name)
            clone.name = name
            del clone.output[:]
            clone.output.append(new)
            reader.input[slot] = new
            inserts.append((pos + 1, clone))
    for pos, clone in sorted(inserts, key=lambda t: t[0], reverse=True):
        graph.node.insert(pos, clone)
    return len(inserts)
