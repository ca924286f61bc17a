"""Apply a Plan: slice every member, run the rules' fixups, tidy the graph.

Pure: works on a copy of the analysis's working model and returns a new ModelProto
(unless told to consume the analysis). Weights the loader left on disk (models past the
protobuf limit) are read one at a time and only their sliced values written into the
model; the ones kept whole are written in at the end, so the result stands alone.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import numpy_helper

from .analysis.spaces import kept_positions, new_length
from .weights import WeightStore, load_from_disk, remove_unused, retie_constants


class Surgery:
    """What a fixup may use while editing the new model."""

    def __init__(self, analysis, plan, consume: bool = False):
        self.analysis = analysis
        self.model = analysis.model if consume else copy.deepcopy(analysis.model)
        # consuming: the analysis's store reads this very graph and has the weights cached
        self.store = analysis.ctx.store if consume else WeightStore(self.model.graph)
        self.opset = analysis.ctx.opset
        table = analysis.table
        self._find = table.find
        self._size = table.size
        self.kept_by_root: dict[int, np.ndarray] = {}
        for gid, g in plan.groups.items():
            group = analysis.group(gid)
            for root, keep in zip(group.roots, g["keep"]):
                self.kept_by_root[root] = np.asarray(sorted(keep), dtype=np.int64)
        self._names = {t.name for t in self.model.graph.initializer} | {
            o for n in self.model.graph.node for o in n.output} | {i.name for i in self.model.graph.input}

    # ---- channel arithmetic -----------------------------------------------------
    def kept_of(self, space: int) -> np.ndarray:
        root = self._find(space)
        kept = self.kept_by_root.get(root)
        return np.arange(self._size(space)) if kept is None else kept

    def count_of(self, space: int) -> int:
        return len(self.kept_of(space))

    def new_length(self, amap) -> int:
        return new_length(amap, self.count_of)

    def kept_positions(self, amap) -> np.ndarray:
        return kept_positions(amap, self.kept_of)

    # ---- graph editing ----------------------------------------------------------
    def node(self, index: int) -> onnx.NodeProto:
        return self.model.graph.node[index]

    def get_attr(self, node, name):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return None

    def set_attr(self, node, name, value) -> None:
        self.remove_attr(node, name)
        node.attribute.append(onnx.helper.make_attribute(name, value))

    def remove_attr(self, node, name) -> None:
        keep = [a for a in node.attribute if a.name != name]
        if len(keep) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(keep)

    def add_initializer(self, base: str, value: np.ndarray) -> str:
        name = base
        while name in self._names:
            name += "_"
        self._names.add(name)
        self.model.graph.initializer.append(numpy_helper.from_array(value, name))
        self.store = WeightStore(self.model.graph)
        return name

    def input_value(self, node, index: int):
        """Current value of a node input when it is a constant here, else None."""
        if len(node.input) > index and node.input[index] in self.store:
            return self.store.get(node.input[index])
        return None

    def set_input_value(self, node, index: int, value: np.ndarray, label: str) -> None:
        """Make input ``index`` of ``node`` the constant ``value``: rewritten in place when it
        is a constant only this node reads, else a new initializer (the old producer chain
        is dropped when nothing else reads it)."""
        name = node.input[index] if len(node.input) > index else ""
        if name and name in self.store and self._readers(name) == 1:
            self.store.set(name, value)
            return
        new = self.add_initializer(f"{node.name}_{label}", value)
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = new

    def _readers(self, name: str) -> int:
        return sum(name == i for n in self.model.graph.node for i in n.input)

    # ---- the work -------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        by_tensor: dict[str, list] = {}
        for m in self.analysis.ctx.members.values():
            by_tensor.setdefault(m.tensor, []).append(m)
        for tensor, members in by_tensor.items():
            value = self.store.get(tensor)
            new = value
            for m in sorted(members, key=lambda m: m.groups is None):
                if m.groups is not None:
                    new = self._slice_grouped(new, m)
                else:
                    pos = self.kept_positions(m.amap)
                    if len(pos) != new.shape[m.axis]:
                        new = np.take(new, pos, axis=m.axis)
            if new is not value:
                value = None  # the old weight goes before its replacement is written
                self.store.set(tensor, new)
            value = new = None
        for fixup in self.analysis.ctx.fixups:
            fixup.apply(self)
        finish(self.model, self.analysis.copies)
        load_from_disk(self.model)  # weights kept whole, when the loader left them on disk
        return self.model

    def _slice_grouped(self, w: np.ndarray, m) -> np.ndarray:
        g = len(m.groups)
        rows = w.shape[0] // g
        parts = [np.take(w[j * rows : (j + 1) * rows], self.kept_positions(part), axis=1)
                 for j, part in enumerate(m.groups)]
        return np.concatenate(parts, axis=0)


def finish(model: onnx.ModelProto, copies: dict) -> None:
    """Tidy a model after edits: graph inputs that are initializers follow their new
    shapes, stale value_info goes, dead nodes go, identical untied copies merge back."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    for inp in graph.input:
        t = inits.get(inp.name)
        if t is not None and inp.type.HasField("tensor_type"):
            shape = inp.type.tensor_type.shape
            del shape.dim[:]
            for d in t.dims:
                shape.dim.add().dim_value = d
    del graph.value_info[:]
    remove_unused(model)
    retie_constants(model, copies)


def apply_plan(analysis, plan, consume: bool = False) -> onnx.ModelProto:
    """The pruned model. ``consume=True`` edits the analysis's working model in place
    (saves a copy; the analysis must not be used for surgery again)."""
    return Surgery(analysis, plan, consume).run()
