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
NEEDS: dict[str, tuple] = {}  # criterion -> calibration statistics it reads (empty: weights only)
REDUCTIONS = ("sum", "mean", "max")
NORMALIZATIONS = ("mean", "max", "sum", "none")


def register(name: str, needs: tuple = ()):
    def deco(fn):
        CRITERIA[name] = fn
        NEEDS[name] = tuple(needs)
        return fn

    return deco


def check_criterion(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise BadArgumentError(f"unknown criterion '{criterion}' (choose from {', '.join(sorted(CRITERIA))})")


def score_groups(analysis, criterion: str = "l2", reduction: str = "sum", normalize: str = "mean",
                 groups=None, skipped: dict | None = None) -> dict:
    """{group id: [scores per class]} for every prunable group (or ``groups``). A data
    criterion returns None for a group it cannot score; its reason goes to ``skipped``."""
    check_criterion(criterion)
    if reduction not in REDUCTIONS:
        raise BadArgumentError(f"unknown reduction '{reduction}' (choose from {', '.join(REDUCTIONS)})")
    if normalize not in NORMALIZATIONS:
        raise BadArgumentError(f"unknown normalization '{normalize}' (choose from {', '.join(NORMALIZATIONS)})")
    fn = CRITERIA[criterion]
    out = {}
    if NEEDS[criterion] and getattr(analysis, "calibration", None) is None:
        raise BadArgumentError(f"criterion '{criterion}' needs calibration data (--calib)")
    for group in analysis.prunable if groups is None else groups:
        got = fn(analysis, group, reduction)
        if isinstance(got, str):
            if skipped is not None:
                skipped[group.id] = got
            continue
        scores = [np.asarray(s, dtype=np.float64) for s in got]
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


from . import activations, weights  # noqa: E402,F401  (registration)
