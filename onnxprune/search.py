"""Searched allocation: per-group ratios that keep the calibration metric best under a
MACs budget, found by a seeded (1+λ) evolution strategy over candidate models.

A candidate is a *pressure* per group, p_g in {0} ∪ [0.02, 1]; its ratios are r_g =
min(m·p_g, max_ratio) with the multiplier m bisected so the candidate just meets the budget,
so every candidate spends the same MACs and only where it spends them differs. The first
generation is the uniform allocation (all pressures 1) and the ``starts`` given (``prune``
gives the global ranking's allocation and one cut of each group kind alone); each later
generation draws
:data:`GENERATION` log-normal perturbations of the best pressures (σ halves when a
generation brings no improvement), measures them together — a batch that
:class:`~onnxprune.candidates.Candidates` may spread over worker processes — and keeps
the candidate whose metric drop is smallest (ties: the smaller output error, then the
first). A group at pressure 0 (kept whole by the start it descends from) stays whole: a
multiplicative perturbation cannot move it, so the search refines around "leave this kind
alone" instead of cutting a channel or two of every residual stream. Each candidate is a real pruned model (repaired when ``prune`` repairs) run in ONNX
Runtime; the same seed gives the same result, serial or parallel.
"""

from __future__ import annotations

import numpy as np

from .allocate import allowed_count, group_round_to
from .errors import BadArgumentError


def _pressures(counts: dict, sizes, ids) -> np.ndarray:
    """The pressures whose ratios are those of ``counts`` (before the budget is re-met)."""
    ratios = np.array([1.0 - counts.get(gid, size) / size for gid, size in zip(ids, sizes)])
    if ratios.max() <= 0:
        return np.ones(len(ids))
    q = ratios / ratios.max()
    return np.where(q > 0, np.clip(q, MIN_PRESSURE, 1.0), 0.0)  # a group kept whole stays whole


def _key(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, None)


def _better(a: tuple, b: tuple) -> bool:
    """Lower drop wins; equal drops go to the lower tie-break (when both have one)."""
    if b[0] is None:
        return a[0] is not None
    if a[0] != b[0]:
        return a[0] < b[0]
    return a[1] is not None and b[1] is not None and a[1] < b[1]


SIGMA = 0.5  # initial log-normal step of the pressures
MIN_PRESSURE = 0.02
GENERATION = 4  # candidates per generation


def search_allocation(groups, cost_model, count_of_factory, target_macs: float, evaluate, *, candidates: int = 24,
                      seed: int = 0, round_to: int = 1, min_keep: int = 1, max_ratio: float = 0.9,
                      progress=None, finish=None, starts=()) -> tuple[dict, dict]:
    """{group id: kept count} and a description; ``evaluate([counts, ...]) -> [drop, ...]``
    (lower is better; or (drop, tie-break) pairs, compared in that order) measures a batch of
    candidates. ``starts``: allocations ({group id: count}, e.g. the global ranking's at
    the same budget) measured beside the uniform start in the first generation as given
    (when they meet the budget; else as the pressures that reproduce them), and perturbed
    later through those pressures.
    ``finish(counts) -> counts``, when given, spends what rounding left of the budget
    (:func:`~onnxprune.allocate.give_back`) so every candidate uses all of it."""
    if candidates < 1:
        raise BadArgumentError(f"the search needs at least one candidate, got {candidates}")
    if not cost_model.macs_known:
        raise BadArgumentError("--allocation search needs every MAC count to be known: pass --input-shape")
    dense = cost_model.macs(count_of_factory({}))
    ids = [g.id for g in groups]
    sizes = np.array([g.size for g in groups])
    steps = [group_round_to(g, round_to) for g in groups]

    def counts_at(pressure, m):
        ratios = np.minimum(m * pressure, max_ratio)
        return {gid: allowed_count(size * (1 - r), size, step, min_keep, max_ratio)
                for gid, size, step, r in zip(ids, sizes, steps, ratios)}

    def fraction(counts):
        return cost_model.macs(count_of_factory(counts)) / dense

    def meet_budget(pressure):
        hi = max_ratio / max(pressure.min(), MIN_PRESSURE)
        if fraction(counts_at(pressure, hi)) > target_macs:
            return None
        lo = 0.0
        for _ in range(30):
            mid = (lo + hi) / 2
            if fraction(counts_at(pressure, mid)) <= target_macs:
                hi = mid
            else:
                lo = mid
        counts = counts_at(pressure, hi)
        return counts if finish is None else finish(counts)

    rng = np.random.default_rng(seed)
    uniform = meet_budget(np.ones(len(groups)))
    if uniform is None:
        raise BadArgumentError(f"--target-macs {target_macs:g} is out of reach within the per-group cap")
    best_p, best_counts, best = None, None, None
    history: list = []
    sigma, done = SIGMA, 0
    while done < candidates:
        drawn = []  # every candidate of a generation perturbs the same best pressures
        if best_p is None:  # the first generation: the uniform start and the given ones
            drawn.append((done, np.ones(len(groups)), uniform))
            done += 1
            for start in list(starts)[:candidates - 1]:
                p = _pressures(start, sizes, ids)
                counts = {gid: int(start.get(gid, size)) for gid, size in zip(ids, sizes)}
                drawn.append((done, p, counts if fraction(counts) <= target_macs else meet_budget(p)))
                done += 1
        else:
            for _ in range(min(GENERATION, candidates - done)):
                p = best_p * np.exp(sigma * rng.standard_normal(len(groups)))
                p = np.where(best_p > 0, np.clip(p, MIN_PRESSURE, 1.0), 0.0)  # whole groups of a start stay whole
                drawn.append((done, p / p.max(), meet_budget(p / p.max())))
                done += 1
        feasible = [d for d in drawn if d[2] is not None]
        values = [_key(v) for v in evaluate([c for _, _, c in feasible])] if feasible else []
        winner = None
        for (index, p, counts), value in zip(feasible, values):
            if value[0] is not None and (best is None or _better(value, best)) and \
                    (winner is None or _better(value, winner[3])):
                winner = (index, p, counts, value)
            history.append({"candidate": index, "drop": value[0], "macs_fraction": fraction(counts),
                            "accepted": False})
            if progress is not None:
                progress.step()
        if winner is None:
            if best_p is None:  # no start could be measured: keep the uniform one
                best_p, best_counts, best = np.ones(len(groups)), uniform, (None, None)
                history[0]["accepted"] = True
            sigma /= 2
            continue
        best_p, best_counts, best = winner[1], winner[2], winner[3]
        next(h for h in history if h["candidate"] == winner[0])["accepted"] = True
    best_drop = best[0]
    return best_counts, {"strategy": "search+target-macs", "target_macs": target_macs, "candidates": candidates,
                         "seed": seed, "best_drop": best_drop, "uniform_drop": history[0]["drop"],
                         "history": history}
