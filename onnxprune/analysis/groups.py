"""Pruning groups: union-find classes of spaces (tied classes keep equal counts), with
every member that shrinks with them and every reason that blocks them."""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import DW, IN, OUT, Member
from .spaces import SpaceTable, map_spaces


@dataclass
class PruneGroup:
    id: int
    roots: list[int]  # union-find classes; several when tied (equal keep counts)
    size: int  # channels per class
    members: list[Member] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    inexact: list[str] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    kind: str = ""
    grain: int = 1  # axis positions per channel (head_dim for attention heads)

    @property
    def channels(self) -> int:
        return self.size * len(self.roots)

    @property
    def prunable(self) -> bool:
        return not self.blocked

    @property
    def name(self) -> str:
        return self.producers[0] if self.producers else f"group{self.id}"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "channels": self.channels,
            "classes": len(self.roots),
            "prunable": self.prunable,
            "exact": not self.inexact,
            "blocked_by": list(self.blocked),
            "inexact_because": list(self.inexact),
            "producers": list(self.producers),
            "members": [m.describe() for m in self.members],
        }


def _kind(members: list[Member], n_classes: int, grains: set[int] = frozenset(), periodic: bool = False,
          contracted: bool = False) -> str:
    """What the group is, for people: ``attention-head-dims`` when its channels are the
    same head-dim positions of every head (``(qk)``: of queries and keys, read only by
    Q·Kᵀ; ``(vo)``: of values, read by the output projection); ``attention-heads`` when they are whole heads
    (``+gqa`` when K/V heads are shared by several query heads: the channels are then K/V
    heads with their query heads), else by the ops that produce it; ``+residual`` when
    several producers' outputs are added together, ``+grouped(n)`` for tied classes."""
    ops = {m.op for m in members if m.role == OUT}
    if periodic:
        base = "attention-head-dims" + ("(qk)" if contracted else "(vo)")
        return base + (f"+grouped({n_classes})" if n_classes > 1 else "")
    if max(grains, default=1) > 1:
        # Q, K and V are several producers, but of one head axis, not a residual sum
        base = "attention-heads" + ("+gqa" if len(grains) > 1 else "")
        return base + (f"+grouped({n_classes})" if n_classes > 1 else "")
    if any(m.role == DW for m in members):
        base = "depthwise-coupled"
    elif ops <= {"Conv"}:
        base = "conv"
    elif ops <= {"Gemm", "MatMul"}:
        base = "linear"
    elif ops <= {"ConvTranspose"}:
        base = "conv-transpose"
    else:
        base = "mixed"
    n_out = sum(m.role == OUT for m in members)
    if n_out > 1:
        base += "+residual"
    if n_classes > 1:
        base += f"+grouped({n_classes})"
    return base


def build_groups(table: SpaceTable, members: dict) -> list[PruneGroup]:
    roots = sorted({table.find(s) for s in range(len(table.spaces))})
    # ties join classes into one group
    parent = {r: r for r in roots}

    def find(r):
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    for tie in table.ties:
        rs = [table.find(s) for s in tie]
        for r in rs[1:]:
            a, b = find(rs[0]), find(r)
            if a != b:
                parent[max(a, b)] = min(a, b)
    by_group: dict[int, list[int]] = {}
    for r in roots:
        by_group.setdefault(find(r), []).append(r)

    member_classes: dict[int, list[Member]] = {}
    for m in members.values():
        amaps = m.groups if m.groups is not None else [m.amap]
        classes = {table.find(s) for a in amaps for s in map_spaces(a)}
        for c in classes:
            member_classes.setdefault(c, []).append(m)

    groups = []
    for gid, (_, classes) in enumerate(sorted(by_group.items())):
        classes = sorted(set(classes))
        sizes = {table.size(c) for c in classes}
        ms: list[Member] = []
        seen = set()
        for c in classes:
            for m in member_classes.get(c, []):
                if id(m) not in seen:
                    seen.add(id(m))
                    ms.append(m)
        blocked, inexact = [], []
        for c in classes:
            for reason in table.blocked.get(c, []):
                if reason not in blocked:
                    blocked.append(reason)
            for reason in table.inexact.get(c, []):
                if reason not in inexact:
                    inexact.append(reason)
        if len(sizes) != 1:
            blocked.append("tied channel groups have different sizes")
        size = min(sizes)
        if size * len(classes) <= 1:
            blocked.append("a single channel cannot be pruned")
        contracted = any(table.find(s) in classes for s in table.contracted)
        if not any(m.role == IN for m in ms) and not blocked and not contracted:
            blocked.append("no consumer reads these channels")
        producers = []
        for m in ms:
            if m.role in (OUT, DW) and m.node not in producers:
                producers.append(m.node)
        grains = {table.spaces[s].grain for c in classes for s in table.members_of_class(c)}
        groups.append(PruneGroup(gid, classes, size, ms, blocked, inexact, producers,
                                 _kind(ms, len(classes), grains, any(table.periodic(c) for c in classes), contracted),
                                 min(grains, default=1)))
    return [g for g in groups if g.members]
