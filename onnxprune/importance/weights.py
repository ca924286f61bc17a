"""Weight-only criteria: L1, L2, BN scale, FPGM, connectivity."""

from __future__ import annotations

import numpy as np

from ..analysis.context import DW, IN, NORM_SCALE, OUT
from ..analysis.spaces import seg_channel_positions
from . import register

MAGNITUDE_ROLES = (OUT, IN, DW)


def member_slices(analysis, member):
    """Yield (class root, channel-major array (channels, values)) for each segment of a
    member: all weight values that belong to each channel of that class."""
    table = analysis.table
    w = analysis.ctx.store.get(member.tensor)
    if w.dtype.kind != "f" or w.dtype.itemsize < 4:
        w = w.astype(np.float32)
    if member.groups is not None:  # grouped conv input axis: rows of group j read part j
        g = len(member.groups)
        rows = w.shape[0] // g
        for j, part in enumerate(member.groups):
            yield from _slices(table, np.moveaxis(w[j * rows : (j + 1) * rows], 1, 0), part)
        return
    yield from _slices(table, np.moveaxis(w, member.axis, 0), member.amap)


def _slices(table, w_axis_first, amap):
    offset = 0
    flat = w_axis_first.reshape(w_axis_first.shape[0], -1)
    for seg in amap:
        if seg.space is not None:
            if seg.inner == 1 and seg.outer == 1:
                block = flat[offset : offset + seg.size]  # a view: no copy
            else:
                block = flat[seg_channel_positions(seg, offset)].reshape(seg.size, -1)
            yield table.find(seg.space), block
        offset += seg.length


def position_sums(w: np.ndarray, axis: int, kind: str) -> np.ndarray:
    """Σ|w| (``abs``) or Σw² (``sq``) over every axis but ``axis`` (no weight-sized
    temporaries for ``sq``; float32 accumulation is ample for ranking)."""
    if w.ndim == 1:
        return (np.abs(w) if kind == "abs" else np.square(w)).astype(np.float64)
    if w.dtype.kind != "f" or w.dtype.itemsize < 4:
        w = w.astype(np.float32)
    if kind == "sq":
        letters = "abcdefghijklmnopqrstuvwxyz"[: w.ndim]
        return np.einsum(f"{letters},{letters}->{letters[axis]}", w, w).astype(np.float64)
    others = tuple(a for a in range(w.ndim) if a != axis)
    return np.abs(w).sum(axis=others, dtype=np.float64)


def _channel_sums(table, sums: np.ndarray, amap, acc: dict, roots: set) -> None:
    offset = 0
    for seg in amap:
        if seg.space is not None:
            root = table.find(seg.space)
            if root in roots:
                vals = sums[seg_channel_positions(seg, offset)].sum(1)
                acc[root] = acc.get(root, 0) + vals
        offset += seg.length


def _per_member(analysis, group, roles, kind: str):
    """list over members (with these roles) of {root: per-channel Σ|w| or Σw²}."""
    roots = set(group.roots)
    table = analysis.table
    out = []
    for m in group.members:
        if m.role not in roles:
            continue
        w = analysis.ctx.store.get(m.tensor)
        acc: dict[int, np.ndarray] = {}
        if m.groups is not None:  # grouped conv: rows of group j read part j of the axis
            rows = w.shape[0] // len(m.groups)
            for j, part in enumerate(m.groups):
                _channel_sums(table, position_sums(w[j * rows:(j + 1) * rows], m.axis, kind), part, acc, roots)
        else:
            _channel_sums(table, position_sums(w, m.axis, kind), m.amap, acc, roots)
        if acc:
            out.append(acc)
    return out


def _combine(group, per_member, reduction: str, post=None):
    scores = []
    for root in group.roots:
        vals = [pm[root] for pm in per_member if root in pm]
        if not vals:
            scores.append(np.zeros(group.size))
            continue
        if post is not None:
            vals = [post(v) for v in vals]
        stack = np.stack(vals)
        scores.append({"sum": stack.sum(0), "mean": stack.mean(0), "max": stack.max(0)}[reduction])
    return scores


@register("l1")
def l1(analysis, group, reduction):
    return _combine(group, _per_member(analysis, group, MAGNITUDE_ROLES, "abs"), reduction)


@register("l2")
def l2(analysis, group, reduction):
    per = _per_member(analysis, group, MAGNITUDE_ROLES, "sq")
    return _combine(group, per, reduction, post=np.sqrt)


@register("connectivity")
def connectivity(analysis, group, reduction):
    """½ Σ w² over every in- and out-connection of the channel (summed over members)."""
    per = _per_member(analysis, group, MAGNITUDE_ROLES, "sq")
    return _combine(group, per, "sum", post=lambda v: 0.5 * v)


@register("bn")
def bn_scale(analysis, group, reduction):
    """|γ| of the normalization layers in the group; L2 where a group has none."""
    per = _per_member(analysis, group, (NORM_SCALE,), "abs")
    if not per:
        return l2(analysis, group, reduction)
    return _combine(group, per, reduction)


@register("fpgm")
def fpgm(analysis, group, reduction):
    """Filter pruning via geometric median: a channel whose weights lie close to all the
    others (near the geometric median) is redundant and scores low."""
    roots = set(group.roots)
    feats: dict[int, list] = {r: [] for r in group.roots}
    for m in group.members:
        if m.role not in MAGNITUDE_ROLES:
            continue
        for root, block in member_slices(analysis, m):
            if root in roots:
                feats[root].append(block)
    scores = []
    for root in group.roots:
        if not feats[root]:
            scores.append(np.zeros(group.size))
            continue
        x = np.concatenate(feats[root], axis=1).astype(np.float64)
        sq = (x * x).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
        scores.append(np.sqrt(d2).sum(1))
    return scores
