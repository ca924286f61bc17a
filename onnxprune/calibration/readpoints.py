"""Read points: where a group's channels are measured.

A channel's information leaves the network only through the nodes that contract its axis
away — the consumers whose weights read it (Conv, Gemm, MatMul: the ``in`` members).
Zeroing the channel at every such input is exactly pruning it, so those inputs are where
activation statistics, Wanda/FLAP products and first-order Taylor terms are taken. Head
dims of queries and keys (``head_mode="dims"``) are contracted by Q·Kᵀ, two activations:
both of its inputs are read points without consumer weights (criteria that weigh by
consumer weights, Wanda and FLAP, then leave those groups to a fallback).

A read point is one (tensor, axis) read by contracting consumers; its axis map says which
positions belong to which channel of which class (several groups may share one tensor, a
Concat output for instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..analysis.context import IN, Member
from ..analysis.spaces import AxisMap, seg_channel_positions


@dataclass
class ReadPoint:
    tensor: str
    axis: int
    amap: AxisMap
    consumers: list[Member] = field(default_factory=list)  # contracting members reading it
    nodes: list[str] = field(default_factory=list)  # their node names (gradient edges)

    @property
    def length(self) -> int:
        return sum(s.length for s in self.amap)

    def channel_positions(self, table, root: int):
        """[(positions (size, k))] of every segment of class ``root`` on this axis."""
        out, offset = [], 0
        for seg in self.amap:
            if seg.space is not None and table.find(seg.space) == root:
                out.append(seg_channel_positions(seg, offset))
            offset += seg.length
        return out

    def roots(self, table) -> set:
        return {table.find(s.space) for s in self.amap if s.space is not None}


def find_read_points(analysis, groups) -> dict[str, ReadPoint]:
    """{key: ReadPoint} for every contracting input of the given groups' channels."""
    ctx, table = analysis.ctx, analysis.table
    wanted = {table.find(r) for g in groups for r in g.roots}
    nodes = {n.name: n for n in analysis.model.graph.node}
    points: dict[str, ReadPoint] = {}
    for g in groups:
        for m in g.members:
            if m.role != IN:
                continue
            node = nodes.get(m.node)
            if node is None:
                continue
            for name in node.input:
                if not name or ctx.is_const(name):
                    continue
                for axis, amap in ctx.tracked(name).items():
                    if not any(s.space is not None and table.find(s.space) in wanted for s in amap):
                        continue
                    key = f"{name}@{axis}"
                    rp = points.setdefault(key, ReadPoint(name, axis, amap))
                    if m.node not in rp.nodes:
                        rp.nodes.append(m.node)
                    if all(c is not m for c in rp.consumers):
                        rp.consumers.append(m)
    for node, operands in ctx.contractions:  # Q·Kᵀ over head dims: no weight reads them
        for name, axis in operands:
            amap = ctx.tracked(name).get(axis)
            if amap is None or not any(s.space is not None and table.find(s.space) in wanted for s in amap):
                continue
            rp = points.setdefault(f"{name}@{axis}", ReadPoint(name, axis, amap))
            if node not in rp.nodes:
                rp.nodes.append(node)
    return points


def group_read_points(points: dict, table, group) -> list[ReadPoint]:
    roots = {table.find(r) for r in group.roots}
    return [rp for rp in points.values() if rp.roots(table) & roots]


def consumer_column_sums(store, member: Member, kind: str, length: int) -> np.ndarray | None:
    """Per position of the consumer's data axis: Σ|W| (``abs``) or ΣW² (``sq``) over the
    weight entries that read it (rows of conv group j read part j of a grouped input)."""
    from ..importance.weights import position_sums

    w = store.get(member.tensor)
    if member.groups is not None:
        rows = w.shape[0] // len(member.groups)
        parts = [position_sums(w[j * rows:(j + 1) * rows], member.axis, kind) for j in range(len(member.groups))]
        sums = np.concatenate(parts)
    else:
        sums = position_sums(w, member.axis, kind)
    return sums if sums.shape[0] == length else None
