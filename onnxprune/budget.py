"""``--max-drop`` as a budget: the smallest model whose metric drop stays within it.

Given no ratio and no target, ``prune`` bisects the MACs target: each probe allocates the
target with the chosen strategy (uniform, global, sensitivity or search), builds the pruned
model, repairs it when ``prune`` repairs, and measures its drop against the dense model on
the validation data (the calibration data when there is none). A probe within the budget
moves the search down, one outside it moves it up; the result is the smallest probed target
that passed. The dense model (target 1) needs no probe: it drops nothing. ``probes``
bisection steps give a resolution of 2^-probes of the dense MACs; the drop is assumed to
grow as the target shrinks (it need not, exactly: the report lists every probe).
Fine-tuning (``--finetune``) runs once, on the model written, not on the probes.
"""

from __future__ import annotations

from .errors import BadArgumentError, ValidationFailed

DEFAULT_PROBES = 6  # 1/64 of the dense MACs


def smallest_within(max_drop: float, counts_at, drop_of, fraction, *, probes: int = DEFAULT_PROBES,
                    metric: str = "agreement", progress=None) -> tuple[dict, dict, dict]:
    """(counts, how, report) of the smallest probed MACs target whose model stays within
    ``max_drop``. ``counts_at(target) -> (counts, how)`` allocates a target (raising
    :class:`BadArgumentError` when it is out of reach), ``drop_of(counts)`` measures a
    candidate, ``fraction(counts)`` counts its MACs."""
    if not max_drop >= 0:
        raise BadArgumentError(f"--max-drop must be >= 0, got {max_drop}")
    if probes < 1:
        raise BadArgumentError(f"the budget search needs at least one probe, got {probes}")
    lo, hi = 0.0, 1.0
    best = None
    history = []
    for _ in range(probes):
        target = (lo + hi) / 2
        try:
            counts, how = counts_at(target)
        except BadArgumentError as exc:  # beyond what the strategy can prune
            history.append({"target_macs": target, "macs_fraction": None, "drop": None, "passed": False,
                            "note": str(exc)})
            lo = target
            continue
        drop = drop_of(counts)
        passed = drop is not None and drop <= max_drop
        history.append({"target_macs": target, "macs_fraction": fraction(counts), "drop": drop, "passed": passed})
        if progress is not None:
            progress.step()
        if passed:
            hi, best = target, (counts, how)
        else:
            lo = target
    if best is None:
        last = history[-1]
        measured = "" if last["drop"] is None else f" drops {metric} by {last['drop']:.4f}"
        raise ValidationFailed(f"no pruned model stays within --max-drop {max_drop:g}: the largest probed "
                               f"({last['target_macs']:.3f} of the MACs){measured or ' is out of reach'}")
    counts, how = best
    report = {"max_drop": max_drop, "metric": metric, "probes": history, "target_macs": hi,
              "macs_fraction": fraction(counts)}
    return counts, how, report


__all__ = ["smallest_within", "DEFAULT_PROBES"]
