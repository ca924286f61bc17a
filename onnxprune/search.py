"""Searched allocation: per-group ratios that keep the calibration metric best under a
MACs budget, found by a seeded (1+λ) evolution strategy over candidate models.

A candidate is a *pressure* per group, p_g in (0, 1]; its ratios are r_g = min(m·p_g,
max_ratio) with the multiplier m bisected so the candidate just meets the budget, so every
candidate spends the same MACs and only where it spends them differs. The first candidate
is uniform (all pressures 1, i.e. the uniform allocation); each generation perturbs the
best pressures log-normally (σ halves when a generation brings no improvement) and keeps
the candidate whose metric drop on the calibration data is smallest. Each candidate is a
real pruned model run in ONNX Runtime; the same seed gives the same result.
"""

from __future__ import annotations

import numpy as np

from .allocate import allowed_count, group_round_to
from .errors import BadArgumentError

SIGMA = 0.5  # initial log-normal step of the pressures
MIN_PRESSURE = 0.02
GENERATION = 4  # candidates per generation


def search_allocation(groups, cost_model, count_of_factory, target_macs: float, evaluate, *, candidates: int = 24,
                      seed: int = 0, round_to: int = 1, min_keep: int = 1, max_ratio: float = 0.9,
                      progress=None) -> tuple[dict, dict]:
    """{group id: kept count} and a description; ``evaluate(counts) -> drop`` (lower is
    better) measures a candidate on the calibration data."""
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
        return counts_at(pressure, hi)

    rng = np.random.default_rng(seed)
    best_p = np.ones(len(groups))
    best_counts = meet_budget(best_p)
    if best_counts is None:
        raise BadArgumentError(f"--target-macs {target_macs:g} is out of reach within the per-group cap")
    best_drop = evaluate(best_counts)
    history = [{"candidate": 0, "drop": best_drop, "macs_fraction": fraction(best_counts), "accepted": True}]
    sigma, done = SIGMA, 1
    while done < candidates:
        improved = False
        for _ in range(min(GENERATION, candidates - done)):
            p = np.clip(best_p * np.exp(sigma * rng.standard_normal(len(groups))), MIN_PRESSURE, 1.0)
            counts = meet_budget(p / p.max())
            done += 1
            if counts is None:
                continue
            drop = evaluate(counts)
            accepted = drop is not None and (best_drop is None or drop < best_drop)
            history.append({"candidate": done - 1, "drop": drop, "macs_fraction": fraction(counts),
                            "accepted": bool(accepted)})
            if accepted:
                best_p, best_counts, best_drop, improved = p / p.max(), counts, drop, True
            if progress is not None:
                progress.step()
        if not improved:
            sigma /= 2
    return best_counts, {"strategy": "search+target-macs", "target_macs": target_macs, "candidates": candidates,
                         "seed": seed, "best_drop": best_drop, "uniform_drop": history[0]["drop"],
                         "history": history}
