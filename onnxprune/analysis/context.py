"""What an op rule sees: shapes, constants, the axis maps of tensors, and the records
(members, fixups, costs) it leaves for scoring, surgery and the cost model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ..weights import WeightStore, subgraph_references
from .spaces import AxisMap, SpaceTable, fixed_map, has_spaces, make_map, map_length

# Member roles. Scoring criteria pick the roles they read.
OUT = "out"  # producer weight: one slice per output channel (Conv/Gemm/MatMul rows)
IN = "in"  # consumer weight: the slice that contracts with an input channel
DW = "dw"  # per-channel weight of a depthwise conv
BIAS = "bias"
NORM_SCALE = "norm_scale"
NORM_BIAS = "norm_bias"
NORM_STAT = "norm_stat"
CONST = "const"  # a constant operand of an elementwise op


@dataclass
class Member:
    """One constant tensor axis that shrinks with the channels of its axis map."""

    tensor: str
    axis: int
    amap: AxisMap
    role: str
    node: str  # name of the node that reads it
    op: str
    groups: list | None = None  # grouped conv input axis: one axis map per conv group

    def describe(self) -> dict:
        return {"tensor": self.tensor, "axis": self.axis, "role": self.role, "node": self.node, "op": self.op}


class Fixup:
    """A non-weight edit surgery must make (attributes, shape constants). Subclasses live
    beside the rule that creates them."""

    amaps: tuple = ()

    def apply(self, surgery) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Cost:
    """MACs of one node: ``factor * numel(weight)`` after pruning; without a weight,
    ``fixed``, or ``factor * Π new_length(a)`` over ``amaps`` (the channel axes of an
    activation product that shrink with pruning: attention heads in Q·Kᵀ and P·V)."""

    node: str
    op: str
    weight: str | None
    factor: float | None  # None when a dim could not be resolved
    fixed: float = 0.0
    amaps: tuple = ()


@dataclass
class RuleContext:
    model: onnx.ModelProto
    shapes: dict
    cost_shapes: dict
    store: WeightStore
    table: SpaceTable
    opset: int
    options: Any
    axes: dict = field(default_factory=dict)  # tensor -> {axis: AxisMap}
    members: dict = field(default_factory=dict)  # (tensor, axis) -> Member
    fixups: list = field(default_factory=list)
    costs: list = field(default_factory=list)
    producers: dict = field(default_factory=dict)  # tensor -> node
    node_index: dict = field(default_factory=dict)  # node name -> index in graph.node
    claimed: set = field(default_factory=set)  # (node, input index) whose channel-dependent value a rule handles
    contractions: list = field(default_factory=list)  # (node, [(tensor, axis)]): head dims contracted by Q·Kᵀ

    def __post_init__(self):
        for i, node in enumerate(self.model.graph.node):
            for o in node.output:
                if o:
                    self.producers[o] = node

    # ---- shapes and constants ----------------------------------------------------
    def shape(self, name: str) -> list | None:
        if not name:
            return None
        return self.shapes.get(name)

    def rank(self, name: str) -> int | None:
        s = self.shape(name)
        return None if s is None else len(s)

    def dim(self, name: str, axis: int):
        s = self.shape(name)
        if s is None or not -len(s) <= axis < len(s):
            return None
        return s[axis]

    def cost_dims(self, name: str) -> list | None:
        s = self.cost_shapes.get(name)
        if s is None or any(not isinstance(d, int) for d in s):
            return None
        return s

    def is_const(self, name: str) -> bool:
        return bool(name) and name in self.store

    def const(self, name: str) -> np.ndarray | None:
        """Value of a constant (initializer, Constant node, Identity/Cast/Transpose of one),
        or of foldable shape arithmetic that does not read a channel axis's size."""
        return self.value(name)

    def value(self, name: str, allow_channel_dependent: bool = False) -> np.ndarray | None:
        """Like :meth:`const`; with ``allow_channel_dependent`` also values computed from
        a channel axis's current size (only for a rule that rewrites them)."""
        src = self.const_source(name)
        if src is not None:
            root, perm = src
            value = self.store.get(root)
            return value if perm is None else np.transpose(value, perm)
        from .fold import fold

        got = fold(self, name)
        if got is None or (got[1] and not allow_channel_dependent):
            return None
        return got[0]

    def dependent_elements(self, name: str):
        """Mask of the elements of a shape value that read a channel axis size (None when
        it is not shape arithmetic)."""
        from .fold import fold_partial

        got = fold_partial(self, name)
        return None if got is None else got[1].reshape(-1)

    def claim(self, node, index: int) -> None:
        """This rule rewrites or proves input ``index``: channel-dependent values may reach it."""
        self.claimed.add((node.name, index))

    def const_source(self, name: str):
        """(root constant, permutation or None) when ``name`` is a constant reached through
        Identity/Cast/Transpose only; None otherwise."""
        perm = None
        seen = 0
        while name and seen < 16:
            if name in self.store:
                return name, perm
            node = self.producers.get(name)
            if node is None or node.domain not in ("", "ai.onnx"):
                return None
            if node.op_type in ("Identity", "Cast") and node.input:
                name = node.input[0]
            elif node.op_type == "Transpose" and node.input:
                rank = self.rank(node.input[0])
                p = attr(node, "perm", None)
                if p is None:
                    if rank is None:
                        return None
                    p = list(range(rank))[::-1]
                perm = list(p) if perm is None else [p[i] for i in perm]
                name = node.input[0]
            else:
                return None
            seen += 1
        return None

    # ---- axis maps --------------------------------------------------------------
    def amap(self, name: str, axis: int) -> AxisMap | None:
        r = self.rank(name)
        if r is not None and axis < 0:
            axis += r
        return self.axes.get(name, {}).get(axis)

    def tracked(self, name: str) -> dict:
        return self.axes.get(name, {})

    def set_amap(self, name: str, axis: int, amap: AxisMap | None) -> None:
        if not name or amap is None or not has_spaces(amap):
            return
        r = self.rank(name)
        if axis < 0:
            if r is None:
                self.table.block(amap, f"rank of '{name}' unknown")
                return
            axis += r
        have = self.axes.setdefault(name, {}).get(axis)
        if have is not None and have != amap:
            self.table.unify(have, amap, f"tensor '{name}'")
            return
        self.axes[name][axis] = amap

    def new_space(self, node: onnx.NodeProto, out: str, axis: int, size) -> AxisMap | None:
        if not isinstance(size, int) or size <= 0:
            return None
        return self.table.create(f"{node_key(node)}:{out}:{axis}", size)

    # ---- members ----------------------------------------------------------------
    def bind(self, node: onnx.NodeProto, tensor: str, axis: int, amap: AxisMap | None, role: str,
             groups: list | None = None) -> bool:
        """Declare that ``tensor``'s ``axis`` shrinks with ``amap``.

        A constant becomes a member (unified with any earlier binding of the same axis);
        an activation's axis is unified with its map, or blocks ``amap`` if untracked.
        """
        if amap is None or not has_spaces(amap):
            return True
        src = self.const_source(tensor)
        if src is not None:
            root, perm = src
            shape = self.store.shape(root)
            r = len(shape)
            ax = axis + r if axis < 0 else axis
            if not 0 <= ax < r:
                self.table.block(amap, f"{node.op_type} '{node.name}': weight '{tensor}' has no axis {axis}")
                return False
            root_axis = perm[ax] if perm is not None else ax
            if shape[root_axis] != map_length(amap) and groups is None:
                self.table.block(amap, f"{node.op_type} '{node.name}': weight '{tensor}' axis {axis} has "
                                       f"{shape[root_axis]} entries, channels need {map_length(amap)}")
                return False
            key = (root, root_axis)
            have = self.members.get(key)
            if have is not None:
                if groups is not None or have.groups is not None:
                    self.table.block(amap, f"weight '{root}' is read as a grouped weight and otherwise")
                    self.table.block(have.amap, f"weight '{root}' is read as a grouped weight and otherwise")
                    return False
                return self.table.unify(have.amap, amap, f"weight '{root}' used twice")
            self.members[key] = Member(root, root_axis, amap, role, node.name, node.op_type, groups)
            return True
        have = self.amap(tensor, axis)
        if have is not None:
            return self.table.unify(have, amap, f"{node.op_type} '{node.name}'")
        self.table.block(amap, f"{node.op_type} '{node.name}': operand '{tensor}' is neither a constant nor a "
                               f"tracked channel axis")
        return False

    def block_inputs(self, node: onnx.NodeProto, reason: str) -> None:
        names = list(node.input) + sorted(subgraph_references(node))
        for name in names:
            for amap in self.tracked(name).values():
                self.table.block(amap, reason)

    def block(self, amap: AxisMap | None, node: onnx.NodeProto, why: str) -> None:
        self.table.block(amap, f"{node.op_type} '{node.name}': {why}")

    def add_fixup(self, fixup: Fixup) -> None:
        self.fixups.append(fixup)


def node_key(node: onnx.NodeProto) -> str:
    return node.name or (node.op_type + ":" + ",".join(node.output))


def attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


__all__ = [
    "RuleContext", "Member", "Fixup", "Cost", "attr", "norm_axis", "node_key", "make_map", "fixed_map",
    "OUT", "IN", "DW", "BIAS", "NORM_SCALE", "NORM_BIAS", "NORM_STAT", "CONST",
]
