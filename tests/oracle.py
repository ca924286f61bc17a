"""The dead-channel oracle: zero chosen channels' contribution in the original model,
prune exactly those channels, and the outputs must match."""

from __future__ import annotations

import copy

import numpy as np

from onnxprune.analysis.context import BIAS, CONST, IN, OUT
from onnxprune.analysis.spaces import seg_channel_positions
from onnxprune.weights import WeightStore
from onnxprune.plan import Plan
from onnxprune.runtime import random_inputs, session
from onnxprune.surgery import apply_plan


def choose_removed(group, seed: int) -> list[list[int]]:
    """Remove about a third of every class (equal counts across tied classes), keep >= 1."""
    rng = np.random.default_rng(seed)
    n_remove = max(1, group.size // 3) if group.size > 1 else 0
    return [sorted(rng.choice(group.size, n_remove, replace=False).tolist()) for _ in group.roots]


def dead_positions(amap, dead_of) -> np.ndarray:
    """Axis positions of the removed channels (fixed, never-pruned segments excluded)."""
    out, offset = [], 0
    for seg in amap:
        if seg.space is not None:
            dead = list(dead_of(seg.space))
            if dead:
                out.append(seg_channel_positions(seg, offset)[dead].reshape(-1))
        offset += seg.length
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def zero_contributions(analysis, group, removed: list[list[int]]):
    """Copy of the working model with every consumer weight slice of the removed channels
    set to zero: those channels then contribute nothing anywhere. A group without consumer
    weights (Q/K head dims, read only by Q·Kᵀ) has its producer slices zeroed instead."""
    model = copy.deepcopy(analysis.model)
    store = WeightStore(model.graph)
    table = analysis.table
    removed_by_root = dict(zip(group.roots, removed))

    def dead_of(space):
        return removed_by_root.get(table.find(space), [])

    # a group no weight reads (head dims contracted in Q·Kᵀ) is killed where it is made
    roles = {IN} if any(m.role == IN for m in group.members) else {OUT, BIAS, CONST}
    for m in group.members:
        if m.role not in roles:
            continue
        w = store.get(m.tensor).copy()
        if m.groups is not None:
            rows = w.shape[0] // len(m.groups)
            for j, part in enumerate(m.groups):
                pos = dead_positions(part, dead_of)
                w[j * rows:(j + 1) * rows][:, pos] = 0
        else:
            pos = dead_positions(m.amap, dead_of)
            idx = [slice(None)] * w.ndim
            idx[m.axis] = pos
            w[tuple(idx)] = 0
        store.set(m.tensor, w)
    return model


def check_group(analysis, group, feeds, seed=0, rtol=1e-5):
    removed = choose_removed(group, seed)
    zeroed = zero_contributions(analysis, group, removed)
    keep = [[i for i in range(group.size) if i not in set(r)] for r in removed]
    plan = Plan("test", {group.id: {"size": group.size, "keep": keep}}, {})
    pruned = apply_plan(analysis, plan)
    ref = session(zeroed).run(None, feeds)
    out = session(pruned).run(None, feeds)
    for a, b in zip(ref, out):
        assert a.shape == b.shape
        scale = max(float(np.abs(a).max()), 1e-6)
        err = float(np.abs(a - b).max()) / scale
        assert err <= rtol, f"group {group.id} ({group.name}): relative error {err:.3g}"
    return pruned


def feeds_for(model, batch=2):
    return random_inputs(model, None, seed=1, batch=batch)
