"""How many channels each group keeps: uniform ratio, global ranking, MACs target.

Counts are per class (tied classes of a group keep equal counts). Every count respects
``min_keep`` and ``round_to`` (kept counts are multiples of it, or the full size), and a
per-group cap ``max_ratio`` on the fraction removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import BadArgumentError


LATENCY_STEPS = 8  # each step times a candidate model: 1/256 of the ratio range is ample


@dataclass
class AllocationOptions:
    ratio: float | None = None
    global_ranking: bool = False
    target_macs: float | None = None
    round_to: int = 1
    min_keep: int = 1
    max_ratio: float = 0.9
    target_params: float | None = None
    target_latency: float | None = None


def effective_round_to(size: int, round_to: int) -> int:
    """``round_to``, halved while a class is narrower than twice it: a 16-channel layer
    under ``round_to=16`` could otherwise never be pruned, and layers that narrow gain
    nothing from channel-blocked kernels anyway."""
    n = max(1, round_to)
    while n > 1 and size < 2 * n:
        n //= 2
    return n


def group_round_to(group, round_to: int) -> int:
    """``round_to`` in channels of ``group``: a channel of several axis positions (an
    attention head of head_dim) needs a coarser step only as far as the kept *positions*
    must be a multiple of ``round_to`` (heads of 32 under ``round_to=16``: any count)."""
    grain = max(1, int(getattr(group, "grain", 1)))
    n = max(1, round_to)
    return max(1, n // math.gcd(n, grain))


def admissible_counts(size: int, round_to: int, min_keep: int, max_ratio: float) -> list[int]:
    """Every kept count a class of ``size`` channels may have, ascending (``size`` last)."""
    lo = max(min_keep, int(np.ceil(size * (1 - max_ratio) - 1e-9)), 1)
    if lo >= size:
        return [size]
    step = effective_round_to(size, round_to)
    return [k for k in range(step, size, step) if k >= lo] + [size]


def allowed_count(keep: float, size: int, round_to: int, min_keep: int, max_ratio: float) -> int:
    """The admissible kept count nearest to ``keep`` for a class of ``size`` channels."""
    return min(admissible_counts(size, round_to, min_keep, max_ratio), key=lambda k: (abs(k - keep), -k))


def uniform_counts(groups, ratio: float, opts: AllocationOptions) -> dict:
    return {g.id: allowed_count(g.size * (1 - ratio), g.size, group_round_to(g, opts.round_to), opts.min_keep,
                                opts.max_ratio) for g in groups}


def global_counts(groups, scores: dict, ratio: float, opts: AllocationOptions) -> dict:
    """Remove the globally lowest-scoring ``ratio`` of all channels (scores are already
    normalized per group), within each group's floor and cap."""
    ranked = {}
    entries = []
    for g in groups:
        # a unit of a tied group is the j-th weakest channel of every class together
        s = np.mean(np.stack([np.sort(c) for c in scores[g.id]]), axis=0)
        ranked[g.id] = s
        entries.extend((v, g.id, len(g.roots)) for v in s)
    if not entries:
        return {}
    entries.sort(key=lambda e: e[0])
    total = sum(n for _, _, n in entries)
    budget = ratio * total
    removed = {g.id: 0 for g in groups}
    caps = {g.id: g.size - allowed_count(0, g.size, 1, opts.min_keep, opts.max_ratio) for g in groups}
    spent = 0.0
    for value, gid, weight in entries:
        if spent + weight / 2 > budget:
            break
        if removed[gid] < caps[gid]:
            removed[gid] += 1
            spent += weight
    by_id = {g.id: g for g in groups}
    return {gid: allowed_count(by_id[gid].size - r, by_id[gid].size, group_round_to(by_id[gid], opts.round_to),
                               opts.min_keep, opts.max_ratio) for gid, r in removed.items()}


def allocate(groups, scores: dict, opts: AllocationOptions, cost_model=None, count_of_factory=None,
             latency_ratio=None) -> tuple[dict, dict]:
    """Kept count per group id, and a dict describing what was done. A target (MACs,
    parameters, or latency through ``latency_ratio(counts)``: the measured latency of those
    counts relative to the dense model) is met by bisecting the ratio of the strategy."""
    def counts_for(ratio):
        if opts.global_ranking:
            return global_counts(groups, scores, ratio, opts)
        return uniform_counts(groups, ratio, opts)

    strategy = "global" if opts.global_ranking else "uniform"
    if opts.target_macs is None and opts.target_params is None and opts.target_latency is None:
        ratio = 0.0 if opts.ratio is None else opts.ratio
        return counts_for(ratio), {"strategy": strategy, "ratio": ratio}
    if opts.target_latency is not None:
        what, key, target, steps = "latency", "target_latency", opts.target_latency, LATENCY_STEPS
        fraction_at = lambda ratio: latency_ratio(counts_for(ratio))  # noqa: E731
    else:
        if opts.target_macs is not None:
            what, key, target, measure = "MACs", "target_macs", opts.target_macs, cost_model.macs
            if not cost_model.macs_known:
                raise BadArgumentError("--target-macs needs every MAC count to be known: pass --input-shape for "
                                       "dynamic dims")
        else:
            what, key, target, measure = "parameters", "target_params", opts.target_params, cost_model.params
        dense = measure(count_of_factory({}))
        steps = 40

        def fraction_at_counts(counts):
            return measure(count_of_factory(counts)) / dense if dense else 1.0

        def fraction_at(ratio):
            return fraction_at_counts(counts_for(ratio))

    hi = opts.max_ratio
    best = fraction_at(hi)
    if best > target:
        raise BadArgumentError(f"--{key.replace('_', '-')} {target:g} is out of reach: the most this model can be "
                               f"pruned within the per-group cap is {best:.3f} of its {what}")
    lo = 0.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if fraction_at(mid) <= target:
            hi = mid
        else:
            lo = mid
    counts = counts_for(hi)
    if opts.target_latency is None:  # a counted budget: spend what rounding left over
        counts = give_back(groups, scores, counts, opts, fraction_at_counts, target)
    return counts, {"strategy": f"{strategy}+{key.replace('_', '-')}", "ratio": hi, key: target}


EXHAUSTIVE = 4096  # combinations of admissible counts tried one by one before local search takes over


def give_back(groups, scores: dict, counts: dict, opts: AllocationOptions, fraction, target: float) -> dict:
    """Counts rounded to ``round_to`` (and one ratio for every group) land below a budget by
    up to a granule per group; spend what is left over, staying within the budget.

    Where the groups' admissible counts make at most :data:`EXHAUSTIVE` combinations, the
    combination closest below the target is found by trying them all (ties: the most
    important channels kept). Otherwise granules are given back greedily — most important
    first, and separately best-fit first — each followed by swaps (take one granule from a
    group, give back best-fit elsewhere) while a swap brings the result closer; the closer
    of the two results is kept."""
    ranked, options = {}, {}
    for g in groups:
        if g.id in counts:
            ranked[g.id] = np.mean(np.stack([np.sort(np.asarray(c, dtype=np.float64))[::-1] for c in scores[g.id]]),
                                   axis=0) if g.id in scores else np.zeros(g.size)
            options[g.id] = admissible_counts(g.size, group_round_to(g, opts.round_to), opts.min_keep,
                                              opts.max_ratio)
    if math.prod(len(o) for o in options.values()) <= EXHAUSTIVE:
        return _exhaustive(counts, ranked, options, fraction, target)
    results = []
    for best_fit in (False, True):
        c = _fill(dict(counts), ranked, options, fraction, target, None, best_fit)
        results.append((fraction(c), _swaps(c, ranked, options, fraction, target)))
    results = [(fraction(c), c) for _, c in results]
    return max(results, key=lambda r: r[0])[1]


def _exhaustive(counts, ranked, options, fraction, target):
    import itertools

    ids = list(options)
    best, best_key = counts, (fraction(counts), _importance(counts, ranked))
    for combo in itertools.product(*(options[gid] for gid in ids)):
        trial = {**counts, **dict(zip(ids, combo))}
        got = fraction(trial)
        if got <= target:
            key = (got, _importance(trial, ranked))
            if key > best_key:
                best, best_key = trial, key
    return best


def _importance(counts, ranked) -> float:
    return float(sum(ranked[gid][:k].sum() for gid, k in counts.items() if gid in ranked))


def _swaps(counts, ranked, options, fraction, target):
    best = fraction(counts)
    improved = True
    while improved and best < target:
        improved = False
        for gid in options:
            down = [o for o in options[gid] if o < counts[gid]]
            if not down:
                continue
            trial = _fill({**counts, gid: down[-1]}, ranked, options, fraction, target, gid, True)
            got = fraction(trial)
            if best < got <= target:
                counts, best, improved = trial, got, True
    return counts


def _fill(counts: dict, ranked: dict, options: dict, fraction, target: float, frozen, best_fit: bool) -> dict:
    """Greedy give-back (see :func:`give_back`): repeatedly the single granule that still
    fits whose channels are most important (the mean normalized score of those restored),
    or with ``best_fit`` whose return lands closest below the target; ``frozen`` is not
    widened. A group whose next granule does not fit is not tried again: costs only
    grow as other groups widen."""
    open_ = {gid for gid in options if gid != frozen}
    while open_:
        best = None
        for gid in sorted(open_):
            k = counts[gid]
            up = next((o for o in options[gid] if o > k), None)
            got = None if up is None else fraction({**counts, gid: up})
            if got is None or got > target:
                open_.discard(gid)
                continue
            value = float(ranked[gid][k:up].mean())
            key = (got, value) if best_fit else (value, got)
            if best is None or key > best[0]:
                best = (key, gid, up)
        if best is None:
            break
        counts = {**counts, best[1]: best[2]}
    return counts


def select_channels(group, scores: list, count: int) -> list[list[int]]:
    """Keep the ``count`` highest-scoring channels of every class (original order)."""
    kept = []
    for s in scores:
        order = np.argsort(-np.asarray(s), kind="stable")[:count]
        kept.append(sorted(int(i) for i in order))
    return kept
