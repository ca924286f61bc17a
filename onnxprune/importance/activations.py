"""Data-aware criteria: scores from statistics streamed through ONNX Runtime at the
group's read points (the inputs of the consumers that contract its channels; see
:mod:`onnxprune.calibration.readpoints`).

- ``activation``: mean |a| of the channel
- ``apoz``: 1 − the average fraction of non-positive activations (after ReLU: zeros)
- ``entropy``: entropy of the channel's per-sample pooled activation distribution
- ``variance`` (FLAP): Var(a) · Σ W² of the consumer weights reading the channel
- ``wanda``: ‖a‖₂ · Σ |W| of the consumer weights reading the channel
- ``taylor`` (Molchanov et al. 2017): per sample |Σ a · ∂L/∂a| over the channel's
  positions, averaged over samples
- ``fisher``: the mean over samples of (Σ a · ∂L/∂a)²

Per read point the positions of a channel (one, or several after a Flatten) are combined;
across read points the group's reduction combines them. The gradient criteria sum the
first-order terms of every read point first: zeroing a channel at all of them is
pruning it, so their sum is the first-order loss change of removing it.
"""

from __future__ import annotations

import numpy as np

from ..calibration.readpoints import consumer_column_sums, group_read_points
from . import register

ENTROPY_BINS = 32


def _stats(analysis):
    return analysis.calibration


def _per_point(analysis, group, position_values, combine="sum"):
    """[{root: per-channel values}] over the group's read points; ``position_values(rp,
    stats)`` gives one value per position of the read axis (None: skip the point)."""
    calib, table = _stats(analysis), analysis.table
    out = []
    for rp in group_read_points(calib.points, table, group):
        key = f"{rp.tensor}@{rp.axis}"
        vals = position_values(rp, calib.stats[key])
        if vals is None:
            continue
        acc = {}
        for root in group.roots:
            for pos in rp.channel_positions(table, root):
                v = vals[pos]
                v = v.sum(1) if combine == "sum" else v.mean(1)
                acc[root] = acc.get(root, 0) + v
        if acc:
            out.append(acc)
    return out


def _reduce(group, per_point, reduction):
    from .weights import _combine

    if not per_point:
        return "no calibration statistics reached this group's channels"
    return _combine(group, per_point, reduction)


def _column_sums(analysis, rp, kind):
    total = None
    for m in rp.consumers:
        sums = consumer_column_sums(analysis.ctx.store, m, kind, rp.length)
        if sums is not None:
            total = sums if total is None else total + sums
    return total


@register("activation", needs=("abs",))
def activation(analysis, group, reduction):
    per = _per_point(analysis, group, lambda rp, st: st.sums["abs"] / max(st.count, 1.0), combine="mean")
    return _reduce(group, per, reduction)


@register("apoz", needs=("nonpos",))
def apoz(analysis, group, reduction):
    per = _per_point(analysis, group, lambda rp, st: 1.0 - st.sums["nonpos"] / max(st.count, 1.0), combine="mean")
    return _reduce(group, per, reduction)


@register("variance", needs=("sum", "sumsq"))
def variance(analysis, group, reduction):
    def values(rp, st):
        cols = _column_sums(analysis, rp, "sq")
        return None if cols is None else st.variance() * cols

    return _reduce(group, _per_point(analysis, group, values), reduction)


@register("wanda", needs=("sumsq",))
def wanda(analysis, group, reduction):
    def values(rp, st):
        cols = _column_sums(analysis, rp, "abs")
        return None if cols is None else np.sqrt(st.sums["sumsq"]) * cols

    return _reduce(group, _per_point(analysis, group, values), reduction)


@register("entropy", needs=("pooled",))
def entropy(analysis, group, reduction):
    calib, table = _stats(analysis), analysis.table
    per = []
    for rp in group_read_points(calib.points, table, group):
        pooled = calib.stats[f"{rp.tensor}@{rp.axis}"].samples_of("pooled")
        if not len(pooled):
            continue
        acc = {}
        for root in group.roots:
            for pos in rp.channel_positions(table, root):
                h = channel_entropy(pooled[:, pos].mean(2))
                acc[root] = acc.get(root, 0) + h
        per.append(acc)
    return _reduce(group, per, reduction)


def channel_entropy(samples: np.ndarray, bins: int = ENTROPY_BINS) -> np.ndarray:
    """Entropy (nats) of each column's values, from a histogram over its own range with
    ``min(bins, samples)`` bins; a constant column has entropy 0."""
    n, c = samples.shape
    bins = max(2, min(bins, n))
    lo, hi = samples.min(0), samples.max(0)
    width = np.where(hi > lo, hi - lo, 1.0)
    idx = np.clip(((samples - lo) / width * bins).astype(np.int64), 0, bins - 1)
    counts = np.zeros((c, bins))
    np.add.at(counts, (np.broadcast_to(np.arange(c), idx.shape), idx), 1)
    p = counts / max(n, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    return np.where(hi > lo, h, 0.0)


def first_order_terms(analysis, group):
    """Per class: (samples, size) per-sample Σ a·∂L/∂a summed over the group's read
    points, or a string saying why there is none."""
    calib, table = _stats(analysis), analysis.table
    points = group_read_points(calib.points, table, group)
    missing = [calib.unavailable[k] for k in (f"{rp.tensor}@{rp.axis}" for rp in points) if k in calib.unavailable]
    if missing:
        return f"no gradient: {missing[0]}"
    terms = {}
    for rp in points:
        ag = calib.stats[f"{rp.tensor}@{rp.axis}"].samples_of("ag")
        if not len(ag):
            return "no gradient statistics reached this group's channels"
        for root in group.roots:
            for pos in rp.channel_positions(table, root):
                terms[root] = terms.get(root, 0) + ag[:, pos].sum(2)
    if not terms:
        return "no gradient statistics reached this group's channels"
    return [terms.get(root, np.zeros((1, group.size))) for root in group.roots]


@register("taylor", needs=("ag",))
def taylor(analysis, group, reduction):
    terms = first_order_terms(analysis, group)
    if isinstance(terms, str):
        return terms
    return [np.abs(t).mean(0) for t in terms]


@register("fisher", needs=("ag",))
def fisher(analysis, group, reduction):
    terms = first_order_terms(analysis, group)
    if isinstance(terms, str):
        return terms
    return [np.square(t).mean(0) for t in terms]


@register("obs", needs=("gram",))
def obs(analysis, group, reduction):
    """Optimal-brain-surgeon selection: channels chosen greedily by the output error left
    after the least-squares repair of their consumers, from each consumer's input Gram
    matrix (:func:`onnxprune.recover.select.obs_scores`); pairs with ``recover``."""
    calib = _stats(analysis)
    if "obs" not in calib.cache:
        from ..recover.select import obs_scores

        calib.cache["obs"] = obs_scores(analysis, calib.dataset, device=calib.device, progress=False)
    scores = calib.cache["obs"].get(group.id)
    return scores if scores is not None else "no consumer of this group could be measured for OBS"
