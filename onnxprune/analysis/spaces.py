"""Channel spaces: union-find over channel index sets, and axis maps onto them.

A *space* is a set of channels that are kept or removed together. A tensor axis that
carries channels has an *axis map*: a sequence of segments, each saying how a run of the
axis's positions maps onto one space (or onto fixed, never-pruned positions)::

    Seg(space, size, inner, outer): positions off + o*size*inner + c*inner + i
                                    (o < outer, c < size, i < inner) belong to channel c

so a plain channel axis is ``(Seg(s, C),)``, a Concat output is several segments, a
Flatten of (C, H, W) is ``(Seg(s, C, inner=H*W),)`` and a channels-last flatten has
``outer > 1``. Spaces unified by an op (a residual Add) are one union-find class.

Spaces are created per *origin* (an op output axis). When a Split or Slice cuts a space
in the middle, the cut is recorded on every origin of its class and the analysis is run
again with those origins created already cut; the loop ends when no new cut appears.

An origin may also have a *grain* (attention heads): its channels are then blocks of
``grain`` consecutive positions, created as ``Seg(space, size // grain, inner=grain)``.
A Reshape that splits the hidden axis into (heads, head_dim) asks for grain = head_dim
(:meth:`SpaceTable.request_grain`), and the next pass creates the origin with whole heads
as channels. Cuts are kept in positions, so they survive a change of grain.

A space may instead have a *period* (the same head-dim indices inside every head): its
channels are the positions modulo ``period`` of its run, created as
``Seg(space, period, outer=run // period)``. A Reshape into (heads, head_dim) asks for it
in ``head_mode="dims"`` (:meth:`SpaceTable.request_period`). Such a space is not cut into
runs: a Split/Slice of one head's dims at ``c`` (rotary embeddings' ``rotate_half``)
refines the period to ``gcd(head_dim, c)``, so that the channels become the pairs
(i, i + head_dim/2) of every head, written ``Seg(space, head_dim/2, outer=2)`` on the
head_dim axis; any other cut blocks it. A repeated segment ``Seg(s, n, outer=k)`` unifies
with ``k`` written-out runs ``Seg(s, n)`` (the rotate_half Concat).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class Seg:
    space: int | None  # None: fixed positions that are never pruned
    size: int
    inner: int = 1
    outer: int = 1

    @property
    def length(self) -> int:
        return self.outer * self.size * self.inner


AxisMap = tuple  # tuple[Seg, ...]


def make_map(segs: Iterable[Seg]) -> AxisMap:
    """Normalize: drop empty segments and merge neighbouring fixed ones."""
    out: list[Seg] = []
    for s in segs:
        if s.length == 0:
            continue
        if s.space is None:
            s = Seg(None, s.length)
            if out and out[-1].space is None:
                out[-1] = Seg(None, out[-1].length + s.length)
                continue
        out.append(s)
    return tuple(out)


def fixed_map(length: int) -> AxisMap:
    return make_map([Seg(None, length)])


def map_length(amap: AxisMap) -> int:
    return sum(s.length for s in amap)


def map_spaces(amap: AxisMap) -> list[int]:
    return [s.space for s in amap if s.space is not None]


def has_spaces(amap: AxisMap | None) -> bool:
    return bool(amap) and any(s.space is not None for s in amap)


def scale_map(amap: AxisMap, inner: int = 1, outer: int = 1) -> AxisMap:
    """The map of this axis after it is merged with untracked axes.

    ``inner``: product of the axes merged after it; ``outer``: of those merged before it.
    """
    segs = [Seg(s.space, s.size, s.inner * inner, s.outer) for s in amap]
    if outer == 1:
        return make_map(segs)
    if len(segs) == 1:
        s = segs[0]
        return make_map([Seg(s.space, s.size, s.inner, s.outer * outer)])
    return make_map(segs * outer)


def seg_channel_positions(seg: Seg, offset: int) -> np.ndarray:
    """Array (size, outer*inner): the axis positions holding each channel of ``seg``."""
    o = np.arange(seg.outer)[:, None, None] * (seg.size * seg.inner)
    c = np.arange(seg.size)[None, :, None] * seg.inner
    i = np.arange(seg.inner)[None, None, :]
    pos = offset + o + c + i  # (outer, size, inner)
    return pos.transpose(1, 0, 2).reshape(seg.size, -1)


def kept_positions(amap: AxisMap, kept_of) -> np.ndarray:
    """Positions of an axis that survive, in order; ``kept_of(space)`` gives kept channels."""
    parts = []
    offset = 0
    for s in amap:
        if s.space is None:
            parts.append(np.arange(offset, offset + s.length))
        else:
            kept = np.asarray(kept_of(s.space), dtype=np.int64)
            o = np.arange(s.outer)[:, None, None] * (s.size * s.inner)
            c = kept[None, :, None] * s.inner
            i = np.arange(s.inner)[None, None, :]
            parts.append((offset + o + c + i).reshape(-1))
        offset += s.length
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def new_length(amap: AxisMap, count_of) -> int:
    """Length of an axis after pruning; ``count_of(space)`` gives the kept count."""
    return sum(s.length if s.space is None else s.outer * count_of(s.space) * s.inner for s in amap)


@dataclass
class SpaceInfo:
    size: int
    origin: str  # which op output axis created it
    offset: int  # its first position within that origin's axis
    grain: int = 1  # positions per channel (head_dim for attention heads)
    period: int = 1  # channels repeat every ``period`` positions (head dims in every head)


@dataclass
class SpaceTable:
    """Union-find of spaces, with blocking reasons, cuts and equal-count ties."""

    cuts: dict[str, set[int]] = field(default_factory=dict)
    grains: dict[str, int] = field(default_factory=dict)
    periods: dict[tuple, int] = field(default_factory=dict)  # (origin, offset) -> period
    spaces: list[SpaceInfo] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    blocked: dict[int, list[str]] = field(default_factory=dict)
    inexact: dict[int, list[str]] = field(default_factory=dict)
    ties: list[list[int]] = field(default_factory=list)
    contracted: set = field(default_factory=set)  # spaces read by a contraction of two activations
    new_cut: bool = False

    # -- creation ------------------------------------------------------------
    def create(self, origin: str, size: int) -> AxisMap:
        """Spaces for a fresh channel axis of ``size``, pre-cut where earlier passes asked."""
        bounds = sorted({0, size} | {c for c in self.cuts.get(origin, ()) if 0 < c < size})
        g = self.grains.get(origin, 1)
        conflict = g > 1 and any(b % g for b in bounds)
        if conflict:
            g = 1
        segs = []
        for a, b in zip(bounds, bounds[1:]):
            sid = len(self.spaces)
            p = self.periods.get((origin, a), 1)
            if p > 1 and g == 1 and (b - a) % p == 0:
                self.spaces.append(SpaceInfo(p, origin, a, 1, p))
                segs.append(Seg(sid, p, outer=(b - a) // p))
            else:
                self.spaces.append(SpaceInfo((b - a) // g, origin, a, g))
                segs.append(Seg(sid, (b - a) // g, inner=g))
            self.parent.append(sid)
        amap = make_map(segs)
        if conflict:
            self.block(amap, "a Split/Slice cuts inside an attention head")
        return amap

    # -- union-find -----------------------------------------------------------
    def find(self, s: int) -> int:
        root = s
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[s] != root:
            self.parent[s], s = root, self.parent[s]
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if ra > rb:
            ra, rb = rb, ra
        self.parent[rb] = ra
        for table in (self.blocked, self.inexact):
            if rb in table:
                table.setdefault(ra, []).extend(table.pop(rb))
        return ra

    def size(self, s: int) -> int:
        return self.spaces[s].size

    def members_of_class(self, root: int) -> list[int]:
        return [s for s in range(len(self.spaces)) if self.find(s) == root]

    def same(self, a: AxisMap | None, b: AxisMap | None) -> bool:
        """Whether two axis maps prune identically already (equal layouts, unified spaces)."""
        if a is None or b is None or len(a) != len(b):
            return False
        return all((x.size, x.inner, x.outer) == (y.size, y.inner, y.outer) and
                   (x.space is None) == (y.space is None) and
                   (x.space is None or self.find(x.space) == self.find(y.space)) for x, y in zip(a, b))

    # -- marks ----------------------------------------------------------------
    def block(self, amap: AxisMap | None, reason: str) -> None:
        for s in map_spaces(amap or ()):
            lst = self.blocked.setdefault(self.find(s), [])
            if reason not in lst:
                lst.append(reason)

    def mark_inexact(self, amap: AxisMap, reason: str) -> None:
        for s in map_spaces(amap):
            lst = self.inexact.setdefault(self.find(s), [])
            if reason not in lst:
                lst.append(reason)

    def tie(self, spaces: list[int]) -> None:
        if len(spaces) > 1:
            self.ties.append(list(spaces))

    # -- cuts -----------------------------------------------------------------
    def request_cut(self, space: int, at: int) -> None:
        """Ask that ``space``'s whole class be cut before channel ``at`` (next pass)."""
        root = self.find(space)
        for s in self.members_of_class(root):
            info = self.spaces[s]
            pos = info.offset + at * info.grain
            cuts = self.cuts.setdefault(info.origin, set())
            if pos not in cuts:
                cuts.add(pos)
                self.new_cut = True

    def request_grain(self, space: int, factor: int) -> None:
        """Ask that every origin of ``space``'s class be created next pass with channels
        ``factor`` times coarser (whole attention heads, or whole K/V head groups)."""
        if factor <= 1:
            return
        root = self.find(space)
        for s in self.members_of_class(root):
            info = self.spaces[s]
            want = info.grain * factor
            if self.grains.get(info.origin, 1) < want:
                self.grains[info.origin] = want
                self.new_cut = True

    def request_period(self, space: int, period: int) -> bool:
        """Ask that every origin run of ``space``'s class be created next pass with channels
        repeating every ``period`` positions (the same head dims in every head). False when
        a member is not a plain run that divides into ``period``."""
        root = self.find(space)
        infos = [self.spaces[s] for s in self.members_of_class(root)]
        if any(i.grain != 1 or i.size % period for i in infos):
            return False
        for info in infos:
            if info.period != period:  # plain runs, or head dims refined into rotary pairs
                self.periods[(info.origin, info.offset)] = period
                self.new_cut = True
        return True

    def periodic(self, space: int) -> bool:
        """Whether ``space``'s class holds head dims (channels repeating in every head)."""
        root = self.find(space)
        return any(self.spaces[s].period > 1 for s in self.members_of_class(root))

    def _cut_inside(self, seg: Seg, rel: int) -> bool:
        """Try to cut ``seg`` at relative position ``rel``; False when not expressible."""
        if seg.space is None:
            return True
        if self.periodic(seg.space):
            # one head's dims cut in two (rotary embeddings' rotate_half): channels become
            # the pairs (i, i + cut) of every head, a period of gcd(head_dim, cut)
            if seg.outer != 1 or seg.inner != 1 or any(
                    self.spaces[s].period != seg.size for s in self.members_of_class(self.find(seg.space))):
                return False
            return self.request_period(seg.space, math.gcd(seg.size, rel))
        if seg.outer != 1 or rel % seg.inner:
            return False
        self.request_cut(seg.space, rel // seg.inner)
        return True

    def slice_map(self, amap: AxisMap, start: int, stop: int, who: str = "") -> AxisMap | None:
        """The map of positions [start, stop). None when cuts were requested (next pass
        resolves it) or the range cannot be expressed (the spaces are then blocked, the
        reason naming ``who``)."""
        out: list[Seg] = []
        offset = 0
        pending = False
        for s in amap:
            a, b = max(start, offset), min(stop, offset + s.length)
            if a < b:
                if a == offset and b == offset + s.length:
                    out.append(s)
                elif s.space is None:
                    out.append(Seg(None, b - a))
                else:
                    block_len = s.size * s.inner
                    if s.outer > 1 and (a - offset) % block_len == 0 and (b - offset) % block_len == 0:
                        out.append(Seg(s.space, s.size, s.inner, (b - a) // block_len))
                    else:
                        ok = True
                        for rel in (a - offset, b - offset):
                            if 0 < rel < s.length:
                                ok = ok and self._cut_inside(s, rel)
                        if not ok:
                            why = (f"takes positions {start}..{stop} of the head dims, which does not cut every "
                                   "head alike (only rotary pairs i, i+d/2 are kept together)"
                                   if self.periodic(s.space) else
                                   f"takes positions {start}..{stop} that split channels of a merged axis")
                            self.block((s,), (who + ": " if who else "") + why)
                            return None
                        pending = True
            offset += s.length
        return None if pending else make_map(out)

    # -- unification ----------------------------------------------------------
    def unify(self, a: AxisMap, b: AxisMap, why: str) -> bool:
        """Make two axis maps prune identically. False if impossible (both get blocked)."""
        if map_length(a) != map_length(b):
            self.block(a, why + ": lengths differ")
            self.block(b, why + ": lengths differ")
            return False
        if a == b:
            return True
        ea, eb = _expanded(a), _expanded(b)
        if ea is not None and eb is not None and _bounds(ea) == _bounds(eb):
            a, b = ea, eb  # Seg(s, n, outer=k) is k runs Seg(s, n): compare run by run
        bounds_a = _bounds(a)
        bounds_b = _bounds(b)
        if bounds_a != bounds_b:
            pending = False
            for amap, other in ((a, bounds_b), (b, bounds_a)):
                offset = 0
                for s in amap:
                    for p in other:
                        if offset < p < offset + s.length:
                            if not self._cut_inside(s, p - offset):
                                self.block(a, why + ": channel layouts do not align")
                                self.block(b, why + ": channel layouts do not align")
                                return False
                            pending = True
                    offset += s.length
            return not pending  # resolved by the next pass
        ok = True
        for sa, sb in zip(a, b):
            if sa.space is None and sb.space is None:
                continue
            if sa.space is None or sb.space is None:
                self.block((sa, sb), why + ": meets fixed channels")
                ok = False
            elif (sa.size, sa.inner, sa.outer) != (sb.size, sb.inner, sb.outer):
                self.block((sa, sb), why + ": channel layouts do not align")
                ok = False
            else:
                self.union(sa.space, sb.space)
        return ok


def _expanded(amap: AxisMap, limit: int = 256) -> AxisMap | None:
    """The map with every repeated segment written out as runs (None when too long)."""
    out = []
    for s in amap:
        if s.space is not None and s.outer > 1:
            out.extend([Seg(s.space, s.size, s.inner)] * s.outer)
        else:
            out.append(s)
        if len(out) > limit:
            return None
    return tuple(out)


def _bounds(amap: AxisMap) -> list[int]:
    out, offset = [], 0
    for s in amap:
        offset += s.length
        out.append(offset)
    return out
