"""Channel importance criteria, registered by name.

A criterion maps a pruning group to one score array per class (higher = more important).
Weight criteria read the group's members: producer rows, consumer columns, depthwise
filters (and BN scales for ``bn``), each reduced per channel, then combined across
members with a group reduction and normalized per group so scores compare across groups.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import BadArgumentError

CRITERIA: dict[str, Callable] = {}
REDUCTIONS = ("sum", "mean", "max")
NORMALIZATIONS = ("mean", "max", "sum", "none")


def register(name: str):
    def deco(fn):
        CRITERIA[name] = fn
        return fn

    return deco


def score_groups(analysis, criterion: str = "l2", reduction: str = "sum", normalize: str = "mean") -> dict:
    """{group id: [scores per class]} for every prunable group."""
    if criterion not in CRITERIA:
        raise BadArgumentError(f"unknown criterion '{criterion}' (choose from {', '.join(sorted(CRITERIA))})")
    if reduction not in REDUCTIONS:
        raise BadArgumentError(f"unknown reduction '{reduction}' (choose from {', '.join(REDUCTIONS)})")
    if normalize not in NORMALIZATIONS:
        raise BadArgumentError(f"unknown normalization '{normalize}' (choose from {', '.join(NORMALIZATIONS)})")
    fn = CRITERIA[criterion]
    out = {}
    for group in analysis.prunable:
        scores = [np.asarray(s, dtype=np.float64) for s in fn(analysis, group, reduction)]
        out[group.id] = normalize_scores(scores, normalize)
    return out


def normalize_scores(scores: list, how: str) -> list:
    if how == "none":
        return scores
    allv = np.concatenate(scores)
    denom = {"mean": allv.mean(), "max": allv.max(), "sum": allv.sum()}[how]
    if not np.isfinite(denom) or denom <= 0:
        return [np.ones_like(s) for s in scores]
    return [s / denom for s in scores]


from . import weights  # noqa: E402,F401  (registration)
