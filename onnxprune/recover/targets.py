"""Which nodes need repair after a plan: the contracting consumers (Conv, Gemm, MatMul
``in`` members) whose input channels were cut, with the positions of their input axis
that survive and, when their own outputs are cut too, the output positions that survive."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.context import IN, OUT
from ..analysis.spaces import kept_positions, map_length


@dataclass
class RepairTarget:
    node: str  # node name (the same in the dense reference and the pruned model)
    op: str
    weight: str  # the weight constant the member was bound on
    in_length: int  # dense length of the input channel axis
    kept_in: np.ndarray  # surviving positions of the input channel axis (sorted)
    kept_out: np.ndarray | None  # surviving output channels, None when all survive


def kept_of_factory(analysis, plan):
    table = analysis.table
    kept = {}
    for gid, entry in plan.groups.items():
        for root, keep in zip(analysis.group(gid).roots, entry["keep"]):
            kept[root] = np.asarray(sorted(keep), dtype=np.int64)

    def kept_of(space):
        got = kept.get(table.find(space))
        return np.arange(table.size(space)) if got is None else got

    return kept_of


def repair_targets(analysis, plan) -> dict[str, RepairTarget]:
    """{node name: RepairTarget} for every non-grouped contracting consumer that lost
    input channels. Call before surgery consumes the analysis."""
    kept_of = kept_of_factory(analysis, plan)
    outs = {}
    for m in analysis.ctx.members.values():
        if m.role == OUT and m.groups is None:
            pos = kept_positions(m.amap, kept_of)
            if len(pos) < map_length(m.amap):
                outs[m.node] = pos
    targets = {}
    for m in analysis.ctx.members.values():
        if m.role != IN or m.groups is not None:
            continue
        pos = kept_positions(m.amap, kept_of)
        length = map_length(m.amap)
        if len(pos) < length:
            targets[m.node] = RepairTarget(m.node, m.op, m.tensor, length, pos, outs.get(m.node))
    return targets
