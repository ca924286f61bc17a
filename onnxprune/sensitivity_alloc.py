"""Per-group kept counts from sensitivity curves under a MACs target.

Principle: every group's curve (metric drop against kept channels, measured with that
group pruned alone) is treated as the price of removing its channels, and the MACs a
removal saves as what it buys. Starting from the dense model, a greedy marginal-cost
search repeatedly takes the cheapest purchase — the step (group, a further point on its
ladder) with the smallest increase in predicted drop per MAC saved — until the model's
MACs meet the target. The last step stops at the first admissible count that meets the
target, so the result lands just under it. A step may jump over several ladder points
at once, which lets a group whose curve is flat after an expensive first step still be
chosen (the greedy then follows the lower convex hull of each curve).

Between measured points the drop is interpolated linearly in the kept count; nothing is
extrapolated beyond the largest swept ratio. MACs come from :class:`~onnxprune.cost.
CostModel` on the combined state (pruning two adjacent groups saves less than the sum of
their single savings), so the target is met as the cost model measures it. Counts honour
``round_to``, ``min_keep`` and ``max_ratio`` through :func:`~onnxprune.allocate.allowed_count`.

The predicted drop of the result is the sum of single-group drops. Groups interact, so
the sum can be far off either way (on trained models it has underestimated the combined
damage several-fold; a saturating metric on noise overestimates it): measure the combined
model (``sensitivity(target_macs=...)`` does) rather than trusting it. No constant is
fitted to correct it.
"""

from __future__ import annotations

import bisect

import numpy as np

from .allocate import allowed_count, effective_round_to, group_round_to
from .cost import CostModel, counter
from .errors import BadArgumentError, PlanError


def allocate_from_sensitivity(sens: dict, target_macs: float, *, model=None, analysis=None,
                              input_shapes: dict | None = None, round_to: int = 1, min_keep: int = 1,
                              max_ratio: float = 0.9, details: dict | None = None) -> dict:
    """{group id: kept count per class} keeping at most ``target_macs`` of the dense MACs
    while minimizing the summed single-group metric drop of ``sens`` (from
    :func:`~onnxprune.sensitivity.sensitivity`).

    Greedy marginal cost (see the module docstring): from the dense model, repeatedly take
    the step (group, a further point on its ladder of swept ratios mapped to admissible
    counts) with the least predicted drop per MAC saved, drops interpolated linearly
    between measured points and MACs counted on the combined state, until the target
    holds; the last step stops at the first admissible count meeting it, and channels are
    then given back where the target still holds. Pass the ``analysis`` the sweep used or
    the ``model`` it was made for. ``details``, when given, receives the predicted drop
    (a sum of single-group drops, not the combined drop: measure that), the MACs ratio
    reached and the number of greedy steps. Groups not in ``sens`` stay whole."""
    if not 0.0 < target_macs <= 1.0:
        raise BadArgumentError(f"target_macs must be in (0, 1], got {target_macs:g}")
    if round_to < 1 or min_keep < 1:
        raise BadArgumentError("round_to and min_keep must be at least 1")
    if not 0.0 <= max_ratio < 1.0:
        raise BadArgumentError(f"max_ratio must be in [0, 1), got {max_ratio:g}")
    analysis = analysis if analysis is not None else _analysis_for(sens, model, input_shapes)
    cost = CostModel(analysis)
    if not cost.macs_known:
        raise BadArgumentError("a MACs target needs every MAC count to be known: pass --input-shape for dynamic dims")
    groups = {}
    for entry in sens["groups"]:
        try:
            g = analysis.group(entry["id"])
        except KeyError:
            raise PlanError(f"sensitivity names group {entry['id']}, which this model does not have") from None
        if g.size != entry["size"] or len(g.roots) != entry["classes"]:
            raise PlanError(f"group {g.id}: the sweep saw {entry['classes']}x{entry['size']} channels, "
                            f"the model has {len(g.roots)}x{g.size}")
        groups[g.id] = (g, _Curve(entry["points"], g.size, group_round_to(g, round_to), min_keep, max_ratio))
    roots = {gid: g.roots for gid, (g, _) in groups.items()}

    def macs(counts):
        return cost.macs(counter(analysis, {r: k for gid, k in counts.items() for r in roots[gid]}))

    dense = macs({})
    goal = target_macs * dense
    cur = {gid: g.size for gid, (g, _) in groups.items()}
    touching = {gid: _touching(cost, analysis, g) for gid, (g, _) in groups.items()}
    neighbours = {a: [b for b in groups if touching[a] & touching[b]] for a in groups}
    cache: dict = {}
    total, steps = dense, 0
    while total > goal:
        for gid in groups:
            if gid not in cache:
                cache[gid] = _best_move(gid, groups[gid][1], cur, macs, total)
        moves = [m for m in cache.values() if m is not None]
        if not moves:
            raise BadArgumentError(_out_of_reach(target_macs, total / dense if dense else 1.0))
        slope, _, gid, k, saving = min(moves)
        steps += 1
        if total - saving <= goal:  # the last step: stop at the first count that meets the target
            curve = groups[gid][1]
            for option in curve.between(k, cur[gid]):
                trial = macs({**cur, gid: option})
                if trial <= goal:
                    cur[gid], total = option, trial
                    break
            break
        cur[gid], total = k, total - saving
        for other in [gid, *neighbours[gid]]:
            cache.pop(other, None)
    if total <= goal:
        total = _give_back(groups, cur, macs, goal)
    counts = {gid: k for gid, k in cur.items() if k < groups[gid][0].size}
    if details is not None:
        details.update(target_macs=target_macs, macs_ratio=macs(cur) / dense if dense else 1.0, steps=steps,
                       groups_pruned=len(counts),
                       predicted_drop=float(sum(groups[gid][1].loss(k) for gid, k in cur.items())))
    return counts


class _Curve:
    """One group's measured drop against kept count, and its admissible ladder."""

    def __init__(self, points, size, round_to, min_keep, max_ratio):
        by_kept = {size: 0.0}  # the dense model (a measured ratio-0 point replaces it)
        for p in points:
            if p["drop"] is not None:
                by_kept[int(p["kept"])] = float(p["drop"])
        self.xs = np.array(sorted(by_kept), dtype=np.float64)
        self.ys = np.array([by_kept[k] for k in sorted(by_kept)])
        floor = allowed_count(0, size, round_to, min_keep, max_ratio)  # the smallest admissible count
        step = effective_round_to(size, round_to)
        lowest = int(self.xs[0])  # nothing is extrapolated below the largest swept ratio
        self.options = sorted({k for k in range(step, size, step) if k >= max(floor, lowest)} | {size})
        ladder = set()
        for m in by_kept:
            i = bisect.bisect_left(self.options, m)  # the admissible counts around m
            near = [self.options[j] for j in (i - 1, i) if 0 <= j < len(self.options)]
            ladder.add(min(near, key=lambda k: (abs(k - m), -k)))
        self.ladder = sorted((k for k in ladder if k < size), reverse=True)

    def loss(self, kept: int) -> float:
        return float(np.interp(kept, self.xs, self.ys))

    def above(self, kept: int) -> int | None:
        i = bisect.bisect_right(self.options, kept)
        return self.options[i] if i < len(self.options) else None

    def between(self, low: int, high: int) -> list:
        """Admissible counts in [low, high), largest first."""
        return [k for k in reversed(self.options) if low <= k < high]


def _give_back(groups: dict, cur: dict, macs, goal: float) -> float:
    """Coarse steps (``round_to``) overshoot the target: give channels back, one admissible
    step at a time, where it lowers the predicted drop most (or leaves it unchanged) while
    the target still holds. Returns the final MACs."""
    while True:
        best = None
        for gid, k in cur.items():
            curve = groups[gid][1]
            up = curve.above(k)
            if up is None:
                continue
            gain = curve.loss(k) - curve.loss(up)
            if gain < 0:
                continue
            trial = macs({**cur, gid: up})
            if trial <= goal and (best is None or (gain, -trial) > (best[0], -best[1])):
                best = (gain, trial, gid, up)
        if best is None:
            return macs(cur)
        cur[best[2]] = best[3]


def _best_move(gid, curve: _Curve, cur: dict, macs, total: float):
    """(loss per MAC saved, -saving, gid, count, saving) of the cheapest jump of ``gid``
    to a further ladder point, or None. Its saving depends only on ``gid`` and the groups
    sharing a costly node with it (costs are linear in each group's count)."""
    here = cur[gid]
    best = None
    for k in curve.ladder:
        if k >= here:
            continue
        saving = total - macs({**cur, gid: k})
        if saving <= 0:
            continue
        move = ((curve.loss(k) - curve.loss(here)) / saving, -saving, gid, k, saving)
        best = move if best is None or move < best else best
    return best


def _touching(cost: CostModel, analysis, group) -> set:
    """Indices of the costly nodes whose weight shrinks with ``group``."""
    full, zero = counter(analysis, {}), counter(analysis, {r: 0 for r in group.roots})
    return {i for i, c in enumerate(cost.costs) if cost.node_macs(c, zero) != cost.node_macs(c, full)}


def _out_of_reach(target: float, best: float) -> str:
    return (f"target_macs {target:g} is out of reach from the sweep: pruning every swept group to its largest "
            f"swept ratio (within max_ratio) leaves {best:.3f} of the MACs; sweep larger ratios")


def _analysis_for(sens: dict, model, input_shapes):
    from .api import _analysis
    from .model import load_model
    from .plan import model_fingerprint

    if model is None:
        raise BadArgumentError("allocate_from_sensitivity needs the model (or its analysis) to count MACs")
    settings = sens.get("settings", {})
    proto = load_model(model)
    if model_fingerprint(proto) != sens.get("model_fingerprint"):
        raise PlanError("the sensitivity sweep was made for another model")
    shapes = input_shapes if input_shapes is not None else settings.get("input_shapes")
    return _analysis(proto, shapes, bool(settings.get("prune_norm_spaces", False)), in_place=True,
                     head_mode=settings.get("head_mode", "heads"))


__all__ = ["allocate_from_sensitivity"]
